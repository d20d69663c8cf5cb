"""Reading the registry before the register stage decides anything (`registry.store`, `registry.rescore`),
against a real SQLite MLflow registry holding real registered versions of two tiny pyfuncs
(logged by `serving.pyfunc.log_classifier`, as the register stage logs them):
    reads_pixels  predicts the class whose marker pixel is lit: right on 6 of 8 images (0.75)
    always_2      predicts class 2 whatever the image: right on 4 of 8 (0.5)

Who holds @champion; the champion re-scored through its registered model on this test set; and a
champion that cannot be compared (another image shape or class set, one that no longer loads, a
registry that cannot be read) stopping the stage in one sentence before anything is registered.
The gate that judges (tests/test_promotion_gate.py) and the stage around it
(tests/test_register_stage.py) are tested apart.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from resnet_mlops.dataset.prepared import Split, write_split
from resnet_mlops.errors import UserError
from resnet_mlops.models.saving import save_model
from resnet_mlops.project import CHAMPION, Layout
from resnet_mlops.registry.rescore import load_comparable, rescore
from resnet_mlops.registry.store import current_champion
from resnet_mlops.serving.pyfunc import log_classifier
from support.served_model import free_port
from support.tracking_uri import tracking_store

CLASSES = ["zero", "one", "two"]
MARKERS = [0, 0, 1, 1, 2, 2, 0, 1]  # the class each image's lit pixel stands for
LABELS = [0, 0, 1, 1, 2, 2, 2, 2]   # the truth: the last two images' markers lie
ACCURACY = {"reads_pixels": 0.75, "always_2": 0.5}
OTHER_TEST_SET = "0" * 64  # the test_set_hash of a test set that is not this one


@dataclass(frozen=True)
class Store:
    uri: str
    layout: Layout
    test_hash: str
    model_uris: dict[str, str]  # model -> its logged model's URI
    run_ids: dict[str, str]     # model -> the run that logged it


def marked_images() -> Split:
    images = np.zeros((len(MARKERS), 8, 8, 1), np.uint8)
    for index, marker in enumerate(MARKERS):
        images[index, 0, marker, 0] = 255
    return Split(images, np.array(LABELS, np.int64))


def write_prepared(layout: Layout, split: Split) -> str:
    """data/prepared/ with only a test split, and its summary.json as `prepare` writes it."""
    layout.prepared.mkdir(parents=True)
    files = write_split(layout.prepared, "test", False, lambda start, stop: split.images[start:stop], split.labels,
                        split.images.shape[1:]).files
    digest = split.sha256()
    counts = np.bincount(split.labels, minlength=len(CLASSES))
    summary = {"source": "digits", "format": "arrays", "class_names": CLASSES,
               "image_shape": list(split.images.shape[1:]),
               "splits": {"test": {"count": len(split.labels), "files": files, "sha256": digest,
                                   "per_class": {name: int(n) for name, n in zip(CLASSES, counts)}}},
               "content_hash": digest}
    (layout.prepared / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return digest


def tiny_model(kernel: np.ndarray, bias: np.ndarray):
    """8x8x1 pixels (0..255) -> softmax over 3 classes by one dense layer with these weights."""
    import keras

    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(len(CLASSES), activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model


def models() -> dict:
    reads_pixels = np.zeros((64, 3))
    for marker in range(3):
        reads_pixels[marker, marker] = 1.0  # the lit pixel of row 0, column `marker`
    return {"reads_pixels": tiny_model(reads_pixels, np.zeros(3)),
            "always_2": tiny_model(np.zeros((64, 3)), np.array([0.0, 0.0, 5.0]))}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    folder = tmp_path_factory.mktemp("registry")
    layout = Layout(root=folder)
    split = marked_images()
    test_hash = write_prepared(layout, split)
    model_uris, run_ids = {}, {}
    with tracking_store(f"sqlite:///{folder / 'mlflow.db'}") as uri:
        experiment = mlflow.create_experiment("registry-tests", artifact_location=(folder / "mlartifacts").as_uri())
        for name, model in models().items():
            probabilities = model.predict(split.images.astype(np.float32), verbose=0)
            assert (probabilities.argmax(1) == split.labels).mean() == ACCURACY[name]  # the premise
            keras_file = folder / f"{name}.keras"
            save_model(model, keras_file)
            with mlflow.start_run(experiment_id=experiment) as run:
                model_uris[name] = log_classifier(keras_file, CLASSES).model_uri
            run_ids[name] = run.info.run_id
    return Store(uri, layout, test_hash, model_uris, run_ids)


@pytest.fixture
def client(store) -> MlflowClient:
    with tracking_store(store.uri):
        yield MlflowClient()


def register(client: MlflowClient, store: Store, versions: list[str], champion: int | None = None,
             tags: dict[str, str] | None = None):
    """Register `versions` (model names, as v1, v2, ...) under a new name; give version number
    `champion` the alias and `tags`. Returns what the registry now holds as champion."""
    name = f"tiny-{uuid.uuid4().hex[:12]}"
    for model in versions:
        mlflow.register_model(store.model_uris[model], name)
    if champion is not None:
        for key, value in (tags or {}).items():
            client.set_model_version_tag(name, str(champion), key, value)
        client.set_registered_model_alias(name, CHAMPION, str(champion))
    return current_champion(client, name)


def test_a_model_never_registered_has_no_champion(client):
    assert current_champion(client, "never-registered") is None


def test_versions_none_of_which_holds_the_alias_are_no_champion(client, store):
    assert register(client, store, ["reads_pixels", "always_2"]) is None


def test_the_champion_is_re_scored_through_its_registered_model(client, store):
    # v1 and v3 would score 0.5: the figure 0.75 is the champion's (v2) own model, run on this test set.
    champion = register(client, store, ["always_2", "reads_pixels", "always_2"], champion=2,
                        tags={"test_accuracy": "0.1"})  # a recorded figure is never what counts
    assert champion.run_id == store.run_ids["reads_pixels"]
    split = marked_images()
    served = load_comparable(champion, json.loads((store.layout.prepared / "summary.json").read_text()))
    comparison = rescore(served, split.images, split.labels, np.full(len(LABELS), 2), CLASSES)
    assert comparison.champion_accuracy == ACCURACY["reads_pixels"]
    assert comparison.challenger_accuracy == ACCURACY["always_2"]
    assert (comparison.b, comparison.c) == (4, 2)  # markers 0, 0, 1, 1 vs the two lying images


def other_data(tmp_path, class_names: list[str]) -> Layout:
    """A prepared test split of the same 8x8x1 images whose classes have other names."""
    layout = Layout(root=tmp_path)
    write_prepared(layout, marked_images())
    summary = json.loads((layout.prepared / "summary.json").read_text())
    (layout.prepared / "summary.json").write_text(json.dumps({**summary, "class_names": class_names}))
    return layout


def test_a_champion_of_another_class_set_is_refused_in_one_sentence(client, store, tmp_path):
    champion = register(client, store, ["reads_pixels"], champion=1, tags={"test_set_hash": OTHER_TEST_SET})
    with pytest.raises(UserError) as refused:
        load_comparable(champion, json.loads((other_data(tmp_path, ["a", "b", "c"]).prepared / "summary.json").read_text()))
    assert str(refused.value) == (
        f"champion v1 of '{champion.name}' takes 8x8x1 images of 3 classes (zero, one, two), this data has "
        f"8x8x1 images of 3 classes (a, b, c): they cannot be compared on one test set; nothing was registered "
        f"(set another register.model_name for this data)")


def test_a_champion_that_no_longer_loads_is_named_in_one_sentence(client, store, tmp_path):
    save_model(models()["always_2"], tmp_path / "broken.keras")
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("registry-tests").experiment_id):
        uri = log_classifier(tmp_path / "broken.keras", CLASSES).model_uri
    name = f"broken-{uuid.uuid4().hex[:12]}"
    version = mlflow.register_model(uri, name)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    logged = client.get_logged_model(uri.removeprefix("models:/"))
    (Path(logged.artifact_location.removeprefix("file://")) / "artifacts" / "broken.keras").unlink()  # its weights
    with pytest.raises(UserError) as refused:
        load_comparable(current_champion(client, name), {"image_shape": [8, 8, 1], "class_names": CLASSES})
    message = str(refused.value)
    assert message.startswith(f"champion v1 of '{name}' no longer loads (") and "\n" not in message
    assert message.endswith("nothing was registered (fix or move @champion, or set another register.model_name)")


def test_an_unreachable_registry_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with tracking_store(address), pytest.raises(UserError) as refused:
        current_champion(MlflowClient(), "any-model")
    message = str(refused.value)
    assert message.startswith(f"the model registry at {address} could not be read (") and "\n" not in message
    assert message.endswith("); nothing was registered")
