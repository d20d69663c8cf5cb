"""The served model: an `mlflow.pyfunc` wrapper around the trained `.keras` file.

The Keras flavor alone would serve only float tensors of one shape. The wrapper
takes raw pixels or encoded image files
(`serving/inputs.py` says which forms), and answers per image with the class
name, its index, its probability and the `top_k` most probable classes. It
travels with its own copy of this package (`code_paths`), so a registered
version keeps working after the code changes.

Its class probabilities come from `serving/scorer.py`, the one prediction code the
evaluate and register stages use too. Concurrent requests are run one model call at
a time, those that arrive meanwhile stacked into the next call (`serving/microbatch.py`).

The request's `params` are the model's to judge (`check_params`): `resnet-mlops
serve` calls it before MLflow sees them (`serving/server.py`), since MLflow's own check,
against the signature's `top_k: long`, answers a wrong type in its own words and
drops a key it does not know without a word.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

import resnet_mlops
from resnet_mlops import tracking
from resnet_mlops.serving import inputs
from resnet_mlops.serving.scorer import Scorer

KERAS_ARTIFACT = "keras_model"
DEFAULT_TOP_K = 5


class ResNetClassifier(mlflow.pyfunc.PythonModel):
    """Pixels or encoded images in; label, class index, probability and top-k classes out."""

    # No type hints on `predict`, and MLflow's type-hint machinery (its "Add type hints" warning at
    # class definition, i.e. in every process that loads the model) skipped: the input is a
    # DataFrame, an array or a dict by the request's form, which no hint MLflow accepts describes.
    # A `list[...]` hint would make MLflow validate and convert the input by it, and make the
    # scoring server take only `{"inputs": ...}`; any other hint only earns another warning.
    _skip_type_hint_validation = True

    def __init__(self, class_names: list[str]):
        self.class_names = list(class_names)

    @property
    def default_top_k(self) -> int:
        return min(DEFAULT_TOP_K, len(self.class_names))

    def load_context(self, context):
        self.scorer = Scorer(context.artifacts[KERAS_ARTIFACT])
        self.image_shape = self.scorer.image_shape
        if self.image_shape[0] != self.image_shape[1]:
            raise ValueError(f"the image policy makes square images; the model takes {self.image_shape}")
        self.limits = inputs.Limits.from_environment()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, classes) of a pixel batch (uint8, or floats 0..255): `Scorer`'s."""
        return self.scorer.probabilities(images)

    def check_params(self, params) -> dict:
        """A request's `params` as `predict` takes them; an unknown key or a bad `top_k` is a 400."""
        return inputs.check_params(params, len(self.class_names), self.default_top_k)

    def predict(self, context, model_input, params=None):
        k = self.check_params(params)["top_k"]
        pixels = inputs.to_pixels(model_input, self.image_shape, self.limits)
        return to_frame(self.probabilities(pixels), self.class_names, k)


def to_frame(probabilities: np.ndarray, class_names: list[str], top_k: int) -> pd.DataFrame:
    """One row per image: `label`, `class_index`, `probability` and `top_k` (most probable first)."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    best = order[:, 0]
    return pd.DataFrame({
        "label": [class_names[i] for i in best],
        "class_index": best.astype(np.int64),
        "probability": probabilities[np.arange(len(best)), best].astype(np.float64),
        "top_k": [[{"label": class_names[i], "class_index": int(i), "probability": float(row[i])} for i in top]
                  for row, top in zip(probabilities, order)],
    })


def signature(class_names: list[str]) -> mlflow.models.ModelSignature:
    """Outputs and the `top_k` param; no input schema (see `serving/inputs.py`)."""
    k = min(DEFAULT_TOP_K, len(class_names))
    example = to_frame(np.full((1, len(class_names)), 1 / len(class_names)), class_names, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's hint about integer columns and missing values
        return mlflow.models.infer_signature(model_output=example, params={"top_k": k})


class _Drop(logging.Filter):
    """Drops the records of one logger whose message starts with `start`."""

    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.start)


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
# What `log_model` says of every PythonModel object: this one is pickled by design (`code_paths`
# carries its class), and the warning tells the user running `train` nothing they can act on.
_CLOUDPICKLE_NOTICE = ("mlflow.pyfunc", "Passing a Python object as `python_model` causes it to be serialized")


@contextmanager
def quiet_mlflow():
    """MLflow's console lines that tell our users nothing, silenced for the block, and only those:
    its artifact progress bars (a bar for every few-kB file logged or downloaded; unless the user
    set MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR) and the CloudPickle notice of `log_model`."""
    logger, start = _CLOUDPICKLE_NOTICE
    drop = _Drop(start)
    set_here = _PROGRESS_BAR not in os.environ
    if set_here:
        os.environ[_PROGRESS_BAR] = "false"
    logging.getLogger(logger).addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger(logger).removeFilter(drop)
        if set_here:
            os.environ.pop(_PROGRESS_BAR, None)


def log_classifier(keras_file: Path, class_names: list[str]):
    """Log the servable model of the active run under `model`; return its ModelInfo.

    The signature needs only the class names; the pixels' shape is read from the saved model.
    """
    with quiet_mlflow(), warnings.catch_warnings():
        # MLflow suggests an input example; it would bring back an input schema (see serving/inputs.py).
        warnings.filterwarnings("ignore", message=".*An input example was not provided", category=UserWarning)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=ResNetClassifier(class_names),
            artifacts={KERAS_ARTIFACT: str(keras_file)},
            code_paths=[str(Path(resnet_mlops.__file__).parent)],
            signature=signature(class_names),
            pip_requirements=tracking.requirements(),
        )

