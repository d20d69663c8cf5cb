"""The served model: an `mlflow.pyfunc` wrapper around the trained `.keras` file.

The Keras flavor alone cannot be served: loading the `.keras` file needs this
project's custom layers registered, which `mlflow models serve` would not do.
The wrapper imports them, and answers with class names rather than bare
probabilities. It travels with its own copy of this package (`code_paths`), so
a registered version keeps working after the code changes.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

import resnet_mlops

KERAS_ARTIFACT = "keras_model"


class ResNetClassifier(mlflow.pyfunc.PythonModel):
    """Raw pixel batches (N, H, W, C; uint8 or float 0..255) in; label, class index and probabilities out."""

    def __init__(self, class_names: list[str]):
        self.class_names = list(class_names)
        self.model = None

    def load_context(self, context):
        from resnet_mlops.models.saving import load_model

        self.model = load_model(context.artifacts[KERAS_ARTIFACT])

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(np.asarray(images), batch_size=256, verbose=0))

    def predict(self, context, model_input, params=None):
        return to_frame(self.probabilities(model_input), self.class_names)


def to_frame(probabilities: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    best = probabilities.argmax(axis=1)
    return pd.DataFrame({
        "label": [class_names[i] for i in best],
        "class_index": best.astype(np.int64),
        "probabilities": [row.tolist() for row in probabilities],
    })


def log_classifier(keras_model, keras_file: Path, class_names: list[str], sample: np.ndarray):
    """Log the servable model of the active run under `model`; return its ModelInfo."""
    predicted = to_frame(np.asarray(keras_model.predict(sample, verbose=0)), class_names)
    signature = mlflow.models.infer_signature(sample, predicted)
    return mlflow.pyfunc.log_model(
        name="model",
        python_model=ResNetClassifier(class_names),
        artifacts={KERAS_ARTIFACT: str(keras_file)},
        code_paths=[str(Path(resnet_mlops.__file__).parent)],
        signature=signature,
        pip_requirements=requirements(),
    )


def requirements() -> list[str]:
    """Pins of what the logged models need, read from this environment."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in ("keras", "tensorflow-cpu", "tensorflow", "mlflow", "numpy", "pandas"):
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pins
