"""Keras callbacks that report each epoch to MLflow."""

from __future__ import annotations

import time

import keras
import mlflow


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics, learning rate and wall time to the active MLflow run."""

    def __init__(self, examples_per_epoch: int):
        super().__init__()
        self.examples_per_epoch = examples_per_epoch
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        # Read the metrics first: under JAX the device may still be working through the
        # epoch's dispatched steps, and reading a value waits for it.
        metrics = {key: float(value) for key, value in (logs or {}).items()}
        seconds = time.perf_counter() - self._started
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        metrics["epoch_seconds"] = seconds
        metrics["images_per_second"] = self.examples_per_epoch / seconds if seconds > 0 else 0.0
        mlflow.log_metrics(metrics, step=epoch + 1)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping on val_loss that, after a resume, remembers the epochs before it."""

    def __init__(self, patience: int, history: dict[str, list[float]]):
        super().__init__(monitor="val_loss", patience=patience, mode="min", verbose=1)
        self.previous = list(history.get("val_loss", []))

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for epoch, value in enumerate(self.previous):
            self.on_epoch_end(epoch, {"val_loss": value})
