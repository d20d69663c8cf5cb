"""The `train` stage: build the ResNet, fit it on data/prepared, save and log it."""

from __future__ import annotations

import csv
import sys

import keras
import mlflow

from resnet_mlops import atomic, serving, tracking
from resnet_mlops.config import ModelSettings, Params, TrainSettings, flatten
from resnet_mlops.data.pipeline import training_data
from resnet_mlops.data.prepared import Split, read_split, read_summary
from resnet_mlops.models import build_model
from resnet_mlops.models.summary import trainable_params
from resnet_mlops.project import Layout
from resnet_mlops.training.callbacks import MlflowEpochLogger


def make_optimizer(settings: TrainSettings) -> keras.optimizers.Optimizer:
    if settings.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=settings.learning_rate, momentum=0.9)
    return keras.optimizers.Adam(learning_rate=settings.learning_rate)


def train(params: Params, layout: Layout) -> dict:
    """Fit the model of `params.model` with `params.train`; return the last epoch's metrics and the run id."""
    model_settings: ModelSettings = params.model
    settings: TrainSettings = params.train
    summary = read_summary(layout.prepared)
    train_data = training_data(layout.prepared, "train", settings.batch_size, params.seed)
    val_split = read_split(layout.prepared, "val")
    train_count = summary["splits"]["train"]["count"]

    keras.utils.set_random_seed(params.seed)
    model = build_model(model_settings.name, tuple(summary["image_shape"]), len(summary["class_names"]),
                        **model_settings.options)
    model.compile(optimizer=make_optimizer(settings), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    with tracking.new_run(params.experiment, layout.run_file, run_name=model_settings.name) as (run, run_record):
        mlflow.log_params(flatten(params.raw))
        tracking.log_lineage(str(layout.prepared), summary)
        mlflow.set_tag("model.trainable_params", str(trainable_params(model)))
        history = model.fit(
            **_fit_inputs(train_data, settings.batch_size),
            validation_data=(val_split.images, val_split.labels), epochs=settings.epochs,
            callbacks=[MlflowEpochLogger(train_count)], verbose=1 if sys.stdout.isatty() else 2,
        )
        with atomic.atomic_path(layout.model_file) as tmp:
            model.save(tmp)
        _write_history(layout, history.history)
        mlflow.log_artifact(str(layout.history), artifact_path="reports")
        sample = val_split.images[:2]
        signature = mlflow.models.infer_signature(sample, model.predict(sample, verbose=0))
        mlflow.keras.log_model(model, name="keras_model", signature=signature,
                               pip_requirements=serving.requirements())
        served = serving.log_classifier(model, layout.model_file, summary["class_names"], sample)
        run_record["model_uri"] = served.model_uri
        last = {key: float(values[-1]) for key, values in history.history.items()}
    return {"run_id": run.info.run_id, "epochs": settings.epochs, **last}


def _fit_inputs(train_data, batch_size: int) -> dict:
    """Arrays are batched and shuffled by `fit`; a tf.data pipeline comes batched and shuffled."""
    if isinstance(train_data, Split):
        return {"x": train_data.images, "y": train_data.labels, "batch_size": batch_size, "shuffle": True}
    return {"x": train_data}


def _write_history(layout: Layout, history: dict[str, list[float]]) -> None:
    """Per-epoch metrics as DVC plot data (one row per epoch)."""
    keys = sorted(history)
    with atomic.atomic_path(layout.history) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch in range(len(history[keys[0]])):
            writer.writerow([epoch + 1, *(f"{history[k][epoch]:.6f}" for k in keys)])
