"""The `train` stage: fit the ResNet on data/prepared with the recipe of `train.*`, save and log it.

Read top to bottom: devices, data, starting weights, model, checkpoint to resume from
(and its phase), MLflow run, fit phase by phase, outputs. Backend-neutral except where
the data are TFRecord shards. The run gets the Keras model; the served pyfunc is logged
by `register`, which registers it, so a change in the serving code re-registers without
retraining.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import sys
from dataclasses import asdict

import keras
import mlflow

from resnet_mlops import atomic, tracking
from resnet_mlops.config import Params, flatten
from resnet_mlops.dataset.prepared import read_split, read_summary
from resnet_mlops.errors import UserError
from resnet_mlops.models.saving import load_model, save_model
from resnet_mlops.models.summary import trainable_params
from resnet_mlops.project import Layout
from resnet_mlops.training import devices, inputs, multiworker, pretrained, report
from resnet_mlops.training.callbacks import MlflowEpochLogger, ResumableEarlyStopping
from resnet_mlops.training.checkpoints import Checkpoints, EpochCheckpoint, fingerprint
from resnet_mlops.training.model import compile_phase, phases, set_trainable, training_model


def run(params: Params, layout: Layout) -> dict:
    """Fit (or resume fitting) the model, write its outputs; return `summary(layout)`."""
    settings = params.train
    device = devices.plan(settings, params.seed)
    print(f"train: {device.description}", flush=True)

    data = read_summary(layout.prepared)
    class_names = data["class_names"]
    val = read_split(layout.prepared, "val")
    val_data = (val.images, inputs.one_hot(val.labels, len(class_names)))

    steps_per_epoch = -(-data["splits"]["train"]["count"] // settings.batch_size)
    image_shape = tuple(data["image_shape"])
    start = pretrained.starting_weights(params.model, image_shape)
    if start is not None:
        print(f"train: starting from {start.source} (sha256 {start.sha256[:12]})", flush=True)
    with device.scope():
        model, classifier = training_model(params, image_shape, len(class_names), steps_per_epoch,
                                           device.jit_compile, start)
    if device.multi_worker:
        multiworker.apply_shims(model, device.strategy)

    resolved = {**params.raw, "train": asdict(settings)}
    checkpoints = Checkpoints(layout.checkpoints, fingerprint(
        params.seed, params.model, resolved["train"], data["content_hash"], keras.backend.backend(),
        start and start.sha256))
    resume = checkpoints.latest()
    plan = phases(settings)
    first = [phase.name for phase in plan].index(resume["phase"]) if resume else 0
    history: dict[str, list[float]] = {}
    if resume:
        if first:  # the checkpoint's variables are those of its own phase's compiled model
            with device.scope():
                compile_phase(model, classifier, settings, plan[first], steps_per_epoch, device.jit_compile)
        Checkpoints.restore(model, resume)
        history = resume["history"]
        print(f"train: resuming after epoch {resume['epoch']} ({resume['phase']} phase) from {resume['path']}",
              flush=True)
    initial_epoch = resume["epoch"] if resume else 0

    with _run(device, params, layout, resume) as run:
        if resume is None and run is not None:
            _log_start(params, layout, data, resolved, device, start)
        for phase in plan[first:]:
            if phase is not plan[first]:
                with device.scope():
                    compile_phase(model, classifier, settings, phase, steps_per_epoch, device.jit_compile)
            callbacks = [MlflowEpochLogger(data["splits"]["train"]["count"])] if run is not None else []
            callbacks.append(EpochCheckpoint(checkpoints, history, {"run_id": run and run.info.run_id,
                                                                    "attempt": _attempt(resume),
                                                                    "phase": phase.name}))
            if settings.early_stopping:
                callbacks.append(ResumableEarlyStopping(settings.early_stopping, history))
            begin = max(initial_epoch, phase.first_epoch)
            if begin < phase.end_epoch and not _stopped_early(settings, history):
                if len(plan) > 1:
                    print(f"train: {phase.name} phase, epochs {begin + 1}-{phase.end_epoch}", flush=True)
                # A stream per phase, from its first epoch: a fit may read ahead of its last step.
                model.fit(_training_data(layout, data, params, begin), validation_data=val_data,
                          epochs=phase.end_epoch, initial_epoch=begin, steps_per_epoch=steps_per_epoch,
                          shuffle=False, callbacks=callbacks, verbose=1 if sys.stdout.isatty() else 2)
        set_trainable(classifier, head_only=False)  # the saved model is an ordinary one, whatever the last phase
        if run is not None:
            mlflow.set_tag("model.trainable_params", str(trainable_params(classifier)))

        if device.multi_worker:
            multiworker.synchronize_batch_norm(classifier, False)
        # The outputs replace the last good ones only once all of them, and their logging, succeeded.
        with atomic.replace_together(layout.model_file, layout.history, layout.curves) as staged:
            save_model(classifier, staged[layout.model_file])  # built-in layers only: loads without this package
            report.write_history(staged[layout.history], history)
            report.write_curves(staged[layout.curves], history)
            if run is not None:
                _log_outputs(staged, layout, val.images[:2])
    checkpoints.clear()
    return summary(layout)


def summary(layout: Layout) -> dict:
    """The run id, the epochs trained and the last epoch's metrics, from the stage's outputs."""
    with layout.history.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    last = {key: float(value) for key, value in rows[-1].items() if key != "epoch"} if rows else {}
    run_id = tracking.read_run_file(layout.run_file)["run_id"] if layout.run_file.exists() else None  # no run:
    return {"run_id": run_id, "epochs": len(rows), **last}  # a worker other than the chief


def _training_data(layout: Layout, data: dict, params: Params, first_epoch: int):
    """What fit takes: endless batches from `first_epoch` (arrays) or the tf.data pipeline (shards)."""
    settings, num_classes = params.train, len(data["class_names"])
    if data["format"] == "tfrecord":
        if keras.backend.backend() != "tensorflow":
            raise UserError(f"data.stream: true (TFRecord shards) needs the TensorFlow backend, not "
                            f"KERAS_BACKEND={keras.backend.backend()}; set data.stream: false")
        stream = inputs.streaming_dataset(layout.prepared, "train", settings.batch_size, params.seed).repeat()
        return inputs.streamed(stream, num_classes, settings.augment.mixup, params.seed)
    return inputs.endless_batches(read_split(layout.prepared, "train"), num_classes, settings.batch_size,
                                   params.seed, first_epoch, settings.augment.mixup)


def _attempt(resume: dict | None) -> int:
    return resume["attempt"] + 1 if resume else 1


def _stopped_early(settings, history: dict) -> bool:
    """Whether the history a resume starts from already met the early-stopping rule."""
    losses = history.get("val_loss", [])
    if not settings.early_stopping or not losses:
        return False
    best = losses.index(min(losses))
    return len(losses) - 1 - best >= settings.early_stopping


@contextlib.contextmanager
def _run(device: devices.DevicePlan, params: Params, layout: Layout, resume: dict | None):
    """The MLflow run on the chief (continuing a killed attempt's run); no run on other workers."""
    if not device.is_chief:
        yield None
        return
    name = tracking.run_name(params.model.name, params.model.options, params.data.source)
    with tracking.new_run(params.experiment, layout.run_file, run_name=name,
                          resume_run_id=resume and resume.get("run_id"), log_system_metrics=True) as run:
        if resume:
            mlflow.set_tags({"train.attempt": str(_attempt(resume)),
                             "train.resumed_from_epoch": str(resume["epoch"])})
        yield run


def _log_start(params, layout, data, resolved, device, start) -> None:
    """What a run records once, at its start: params, lineage (the starting weights' too), device."""
    mlflow.log_params(flatten(resolved))
    tracking.log_lineage(str(layout.prepared), data)
    canonical = json.dumps(resolved, sort_keys=True, default=str).encode()
    mlflow.set_tags({"params.hash": hashlib.sha256(canonical).hexdigest()[:16],
                     "device": device.description, "keras.backend": keras.backend.backend(),
                     "train.attempt": "1", **(start.tags() if start else {})})


def _log_outputs(staged, layout, sample) -> None:
    """The trained model (Keras flavor), the history and its curves.

    `staged` maps each output to the file written for it, not yet in place. The model
    is read back from that file: what is logged is exactly what was saved, and it runs
    outside any distribution strategy (a multi-worker model's predict would wait for
    the other workers).
    """
    classifier = load_model(staged[layout.model_file])
    mlflow.log_artifact(str(staged[layout.history]), artifact_path="reports")
    mlflow.log_artifact(str(staged[layout.curves]), artifact_path="reports")
    signature = mlflow.models.infer_signature(sample, classifier.predict(sample, verbose=0))
    mlflow.keras.log_model(classifier, name="keras_model", signature=signature,
                           pip_requirements=tracking.requirements())
