"""The sides that run our code, each in its own process: prepare, the train stage, probe, stretch.

  prepare     the project's `prepare` stage on the archive (train/ and test/ folders read in
              place; val drawn from train) into the scratch project work/stage; images/s.
  stage       `resnet_mlops.training.trainer.run` on the plan's recipe in work/stage, MLflow into
              a SQLite store, checkpoints on: exactly what `resnet-mlops train` does. Epoch times,
              as the bare side's, from the timestamps of the per-epoch metrics in the MLflow run
              (so they include validation, logging and the checkpoint); then the test accuracy
              of the saved models/model.keras.
  stage_warm  the stage again, on the compiled programs the stage left on disk.
  probe       steady seconds per step of the stretch model: the trainer's training model
              (`training_model`) on the trainer's device plan, fitted on a few batches.
  stretch     the trainer on the stretch model for as many epochs as the probe says fit.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from gpu.measure import Tee, device_info, load_split, steady
from gpu.plan import STRETCH_MODELS, model_name, project_params
from support.scratch import prepare_here, scratch_project


def side_prepare(work: Path, plan: dict) -> dict:
    from resnet_mlops.config import load_params

    project = scratch_project(work / "stage", project_params(plan, {"name": "resnet20"}, plan["epochs"]))
    workers = load_params(project / "params.yaml").data.workers or os.cpu_count()
    started = time.perf_counter()
    counts = prepare_here(project)["splits"]
    seconds = time.perf_counter() - started
    total = sum(counts.values())
    print(f"prepare: {total} images in {seconds:.2f} s = {total / seconds:,.0f} images/s; splits {counts}; "
          f"{workers} decode workers", flush=True)
    return {"prepare_seconds": round(seconds, 3), "images": total, "images_per_second": round(total / seconds, 1),
            "splits": counts, "workers": workers, "archive": plan["archive"]}


def side_stage(work: Path, plan: dict) -> dict:
    return train_side(work, work / "stage", "stage_history.csv")


def side_stage_warm(work: Path, plan: dict) -> dict:
    return train_side(work, work / "stage", "stage_warm_history.csv")


def side_stretch(work: Path, plan: dict) -> dict:
    chosen = json.loads((work / "stretch.plan.json").read_text())
    model_spec = chosen.get("model") or stretch_model()
    project = stretch_project(work, plan, model_spec, chosen["epochs"])
    return {**train_side(work, project, "stretch_history.csv"), "epochs_planned": chosen["epochs"],
            "epochs_why": chosen["why"]}


def train_side(work: Path, project: Path, history_name: str) -> dict:
    """Our trainer exactly as `resnet-mlops train` runs it, in `project`; then the test accuracy."""
    started = time.perf_counter()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project}/mlflow.db"
    os.chdir(project)   # as under DVC: artifacts (./mlruns) land in the project
    import keras

    from resnet_mlops.config import load_params
    from resnet_mlops.project import Layout
    from resnet_mlops.training import trainer

    imported = time.perf_counter() - started
    info = device_info()
    cache = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR", "/nonexistent"))
    cached_before = _entries(cache)
    params = load_params(project / "params.yaml")
    layout = Layout(project)
    run = _run_trainer(trainer, params, layout)
    outcome, epochs = run["outcome"], _epoch_times(run["outcome"]["run_id"])
    summary = json.loads((layout.prepared / "summary.json").read_text())
    train_count = summary["splits"]["train"]["count"]
    test = _test_scores(layout, params.train.batch_size)
    if layout.history.exists():
        shutil.copy(layout.history, work / history_name)
    result = {**info, "model": model_name({"name": params.model.name, **params.model.options}),
              "precision": keras.mixed_precision.dtype_policy().name, "epochs": outcome["epochs"],
              "train_count": train_count, "val_count": summary["splits"]["val"]["count"],
              "test_count": test["count"], "batch_size": params.train.batch_size,
              "peak_learning_rate": params.train.peak_learning_rate, "device_line": run["device_line"],
              "jax_cache_entries_before": cached_before, "jax_cache_entries_after": _entries(cache),
              "import_seconds": round(imported, 2), "train_call_seconds": round(run["seconds"], 3),
              "fit_wall_seconds": round(epochs["fit_end"] - run["wall_started"], 3),
              "epochs_wall_seconds": round(epochs["fit_end"] - epochs["fit_start"], 3),
              "fixed_seconds": round(imported + run["seconds"] - sum(epochs["epoch_seconds"]), 2),
              **steady(epochs["epoch_seconds"], train_count),
              "logger_epoch_seconds": [round(v, 4) for v in epochs["logger_seconds"]],
              "mlflow_images_per_second": epochs["images_per_second"],
              "final_train_accuracy": round(outcome.get("accuracy", 0.0), 4),
              "final_val_accuracy": round(outcome.get("val_accuracy", 0.0), 4),
              "test_accuracy": round(test["accuracy"], 4), "nonfinite_test_predictions": test["nonfinite"],
              "eval_seconds": round(test["seconds"], 2), "run_id": outcome["run_id"],
              "side_seconds": round(time.perf_counter() - started, 2)}
    print(f"{project.name}: {json.dumps(result)}", flush=True)
    return result


def _entries(cache: Path) -> int:
    return sum(1 for _ in cache.iterdir()) if cache.is_dir() else 0


def _run_trainer(trainer, params, layout) -> dict:
    """`trainer.run`, timed, its stdout kept for the device line it prints."""
    tee = Tee(sys.stdout)
    sys.stdout = tee
    wall_started, train_started = time.time(), time.perf_counter()
    try:
        outcome = trainer.run(params, layout)
    finally:
        sys.stdout = tee.stream
    seconds = time.perf_counter() - train_started
    device_line = next((line.strip() for line in "".join(tee.lines).splitlines() if line.startswith("train: ")), None)
    return {"outcome": outcome, "seconds": seconds, "wall_started": wall_started, "device_line": device_line}


def _epoch_times(run_id: str) -> dict:
    """Per-epoch seconds from the run's MLflow metrics.

    MlflowEpochLogger reads the clock before the epoch's logs are read back (JAX dispatches
    ahead), then logs: its metrics' timestamps mark when each epoch's work was done, so the
    epoch times here are end-to-end intervals of those, as the bare side's are (ms resolution).
    """
    import mlflow

    client = mlflow.tracking.MlflowClient()
    metrics = {key: sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
               for key in ("epoch_seconds", "images_per_second")}
    logger_seconds = [m.value for m in metrics["epoch_seconds"]]
    ends = [m.timestamp / 1000.0 for m in metrics["epoch_seconds"]]
    fit_start = ends[0] - logger_seconds[0]  # epoch 1's begin, to the read-back's few ms
    return {"logger_seconds": logger_seconds, "fit_start": fit_start, "fit_end": ends[-1],
            "epoch_seconds": [ends[0] - fit_start] + [b - a for a, b in zip(ends, ends[1:])],
            "images_per_second": [round(m.value, 1) for m in metrics["images_per_second"]]}


def _test_scores(layout, batch_size: int) -> dict:
    """Accuracy of the saved model on the test split, and how many of its predictions are not finite."""
    import numpy as np

    from resnet_mlops.dataset.prepared import read_split
    from resnet_mlops.models import load_model

    started = time.perf_counter()
    test = read_split(layout.prepared, "test")
    predictions = load_model(layout.model_file).predict(test.images, batch_size=batch_size, verbose=0)
    return {"count": len(test.labels), "accuracy": float(np.mean(np.argmax(predictions, axis=1) == test.labels)),
            "nonfinite": int(np.sum(~np.isfinite(predictions).all(axis=1))),  # rows with a NaN or inf
            "seconds": time.perf_counter() - started}


def stretch_project(work: Path, plan: dict, model: dict, epochs: int) -> Path:
    """work/stretch: the stretch model's params on the stage side's prepared data (linked)."""
    project = scratch_project(work / "stretch", project_params(plan, model, epochs))
    (project / "data").mkdir(parents=True, exist_ok=True)
    link = project / "data" / "prepared"
    if not link.exists():
        link.symlink_to(work / "stage" / "data" / "prepared")
    return project


def stretch_model() -> dict:
    """The CIFAR ResNet-18 where the catalogue has `stem: cifar`, else ResNet-56."""
    from resnet_mlops.models import validate

    for name, options in STRETCH_MODELS:
        try:
            validate(name, options, input_shape=(32, 32, 3), num_classes=10)
        except ValueError as exc:
            print(f"probe: {name} {options} refused ({exc}); trying the next", flush=True)
            continue
        return {"name": name, **options}
    raise SystemExit("no stretch model is available")


def side_probe(work: Path, plan: dict) -> dict:
    """Steady seconds per training step of the stretch model, built and compiled as the trainer does."""
    started = time.perf_counter()
    import numpy as np

    from support.models import trainer_model

    model_spec = stretch_model()
    project = stretch_project(work, plan, model_spec, 1)
    x, labels = load_split(project / "data" / "prepared", "train")
    _, val_labels = load_split(project / "data" / "prepared", "val")
    batch = plan["batch_size"]
    steps_per_epoch = math.ceil(len(labels) / batch)
    model, classifier, device = trainer_model(project, x.shape[1:], 10, steps_per_epoch)
    steps = max(2, min(20, len(labels) // batch))
    rows = np.resize(np.arange(len(labels)), steps * batch)
    xs, ys = x[rows], np.eye(10, dtype="float32")[labels[rows]]
    first = time.perf_counter()
    model.fit(xs[:batch], ys[:batch], batch_size=batch, epochs=1, verbose=0)
    compile_seconds = time.perf_counter() - first
    timed = time.perf_counter()
    model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0)
    step_seconds = (time.perf_counter() - timed) / steps
    # validation runs at about three times the training speed (forward only)
    estimate = steps_per_epoch * step_seconds + len(val_labels) / batch * step_seconds / 3
    result = {**device_info(), "model": model_name(model_spec), "model_spec": model_spec,
              "device_line": device.description,
              "compile_seconds": round(compile_seconds, 2), "step_seconds": round(step_seconds, 5),
              "steady_images_per_second": round(batch / step_seconds, 1),
              "epoch_seconds_estimate": round(estimate, 3), "params": classifier.count_params(),
              "side_seconds": round(time.perf_counter() - started, 2)}
    print(f"probe: {json.dumps(result)}", flush=True)
    return result
