"""`model.pretrained`: where a training's starting weights come from, read and checked before it starts.

- `imagenet`: keras.applications' ImageNet weights for our resnet50/101/152(v2), the headless
  (`_notop.h5`) file Keras fetches once into its own cache (`~/.keras/models/`, or `$KERAS_HOME`);
- a `.keras` model of ours (an earlier `models/model.keras`, a network pretrained on other classes);
- a keras.applications weights file of the same network without its top (`.h5`, `.weights.h5`);
- `models:/<name>@<alias>` or `models:/<name>/<version>`: a registered version's Keras model.

The classifier is built with the input scaling the weights were trained with (an explicit
other choice in `model.*` is an error), then every layer but a classifier of another class
count takes the weights. What was used is recorded as the run's `pretrained.*` tags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from resnet_mlops.config import IMAGENET, ModelSettings
from resnet_mlops.errors import UserError
from resnet_mlops.models import build_model, copy_weights, transfer
from resnet_mlops.models.saving import load_model

REGISTRY = "models:/"
WEIGHTS_SUFFIXES = (".h5", ".keras")  # `.weights.h5` ends in .h5
_PREPROCESSING_KEYS = ("preprocessing", "mean", "std")


@dataclasses.dataclass(frozen=True)
class StartingWeights:
    source: str                # model.pretrained as written
    sha256: str                # of the file read
    network: Any               # the Keras model holding the weights
    preprocessing: dict        # the preprocessing/mean/std options the weights were trained with
    model_version: str | None = None  # models:/<name>/<version> of a registry source
    run_id: str | None = None  # ... and its training run

    def tags(self) -> dict[str, str]:
        """The run's record of its starting weights."""
        tags = {"pretrained.source": self.source, "pretrained.sha256": self.sha256}
        if self.model_version:
            tags.update({"pretrained.model_version": self.model_version, "pretrained.run_id": self.run_id})
        return tags


def starting_weights(settings: ModelSettings, image_shape: tuple[int, ...]) -> StartingWeights | None:
    """Read `model.pretrained` (None when it is null); a UserError naming it when it cannot be used."""
    source = settings.pretrained
    if source is None:
        return None
    if source == IMAGENET:
        return _imagenet(settings.name, image_shape)
    if source.startswith(REGISTRY):
        return _registered(source, settings.name, image_shape)
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"model.pretrained: {source} is not a file; give a .keras model, a weights file, "
                        f"{IMAGENET} or models:/<name>@<alias>")
    if not path.name.endswith(WEIGHTS_SUFFIXES):
        raise UserError(f"model.pretrained: {source} is neither a .keras model nor a .h5/.weights.h5 weights file")
    return _read(source, path, settings.name, image_shape)


def pretrained_classifier(settings: ModelSettings, start: StartingWeights, image_shape, num_classes: int):
    """The classifier of `model.*` built with the starting weights' preprocessing, holding their weights."""
    for key in _PREPROCESSING_KEYS:
        if key in settings.options and not _same(settings.options[key], start.preprocessing[key]):
            raise UserError(f"model.{key} is {settings.options[key]!r} but model.pretrained {start.source} was "
                            f"trained with {key} {start.preprocessing[key]!r}; remove model.{key} (it is set "
                            f"from the weights)")
    channels, theirs = image_shape[-1], start.network.input_shape[-1]
    if channels != theirs:
        raise UserError(f"model.pretrained {start.source} was trained on {theirs}-channel images but the data "
                        f"have {channels}; prepare them with data.channels: {theirs} or start from other weights")
    classifier = build_model(settings.name, image_shape, num_classes,
                             **{**settings.options, **_options(start.preprocessing)})
    try:
        copy_weights(classifier, start.network)
    except ValueError as error:
        raise UserError(f"model.pretrained {start.source} does not fit model.name {settings.name}: {error}") from None
    return classifier


def _options(preprocessing: dict) -> dict:
    """The preprocessing as builder options: mean and std only where they apply."""
    return {key: value for key, value in preprocessing.items() if key == "preprocessing" or value is not None}


def _same(given, trained) -> bool:
    if given is None or trained is None or isinstance(given, str) or isinstance(trained, str):
        return given == trained
    return bool(np.allclose(np.asarray(given, float), np.asarray(trained, float)))


def _imagenet(name: str, image_shape) -> StartingWeights:
    """keras.applications' headless ImageNet file, from Keras' cache or downloaded into it once."""
    import keras
    from keras.src.applications.resnet import BASE_WEIGHTS_PATH, WEIGHTS_HASHES  # where keras.applications
    from keras.src.backend.config import keras_home                              # fetches it, its hash

    file_name = f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    try:
        path = keras.utils.get_file(file_name, BASE_WEIGHTS_PATH + file_name, cache_subdir="models",
                                    file_hash=WEIGHTS_HASHES[name][1])
    except Exception:  # offline: keras raises a bare Exception naming the URL
        folder = os.path.join(keras_home(), "models")
        raise UserError(f"model.pretrained: imagenet needs {file_name} in Keras' cache {folder}, which does not "
                        f"have it, and it could not be downloaded; copy the file from "
                        f"{BASE_WEIGHTS_PATH + file_name} into that folder") from None
    return _read(IMAGENET, Path(path), name, image_shape)


def _registered(source: str, name: str, image_shape) -> StartingWeights:
    """The Keras model of the registry version `source` names, downloaded to a temporary folder and read."""
    import mlflow

    from resnet_mlops import tracking
    from resnet_mlops.registry.store import registered_version

    tracking.configure()
    version = registered_version(source)
    if version is None:
        raise UserError(f"model.pretrained: {source} names no registered version; give models:/<name>@<alias> "
                        f"or models:/<name>/<version>")
    uri = f"models:/{version.name}/{version.version}"
    with tempfile.TemporaryDirectory(prefix="pretrained-") as folder:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
        found = sorted(Path(folder).rglob("*.keras"))
        if len(found) != 1:
            raise UserError(f"model.pretrained: {uri} holds {len(found)} .keras files, not one: not a version "
                            f"resnet-mlops register made; give one it made")
        start = _read(source, found[0], name, image_shape)
    return dataclasses.replace(start, model_version=uri, run_id=version.run_id)


def _read(source: str, path: Path, name: str, image_shape) -> StartingWeights:
    """The file as a Keras model: a `.keras` model as saved, a weights file in keras.applications' network."""
    try:
        if path.suffix == ".keras":
            network = load_model(path)
            preprocessing = transfer.preprocessing_of(network)
        else:
            network = transfer.read_weights_file(name, image_shape, str(path))
            preprocessing = {"preprocessing": transfer.keras_applications_preprocessing(name), "mean": None,
                             "std": None}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"model.pretrained {source}: {first}") from None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return StartingWeights(source, digest.hexdigest(), network, preprocessing)
