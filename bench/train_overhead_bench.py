"""Overhead of the `train` stage against a bare `model.fit` (issue 5): target >= 0.95x.

Both sides train the same model: the trainer's training model (augmentation + ResNet-20,
compiled with the recipe), built by `training_model` on the trainer's device plan
(bench/support/models.py), on the same prepared data and batch size, in this one process,
interleaved, repeated. The stage side is the real `resnet_mlops.training.trainer.run` with
everything on: MLflow run, per-epoch metrics, system metrics, a checkpoint every epoch, history
and curves, model logging. The bare side, the reference, is that model's own `model.fit` on the
arrays plus `save`: nothing of the stage around it.

Each side runs at SHORT and LONG epochs; the time per extra epoch,
(T(LONG) - T(SHORT)) / (LONG - SHORT), is the steady-state cost of an epoch,
free of the one-off costs, which are reported apart (T(SHORT) minus SHORT epochs).

    .venv/bin/python bench/train_overhead_bench.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from support.models import trainer_model
from support.scratch import digits32_params, prepare_here, read_params, scratch_project, train_here, write_params

SHORT, LONG = 2, 10
BATCH = 64


def set_epochs(folder: Path, epochs: int) -> None:
    params = read_params(folder)
    params["train"]["epochs"] = epochs  # the schedule's length: both sides decay over all the epochs
    write_params(folder, params)


def stage_seconds(folder: Path, epochs: int) -> float:
    set_epochs(folder, epochs)
    started = time.perf_counter()
    train_here(folder)
    return time.perf_counter() - started


def bare_seconds(folder: Path, epochs: int) -> float:
    """The reference: the trainer's model fitted by a bare `model.fit` on the arrays, then saved."""
    import numpy as np

    from resnet_mlops.dataset.prepared import read_split

    set_epochs(folder, epochs)
    train, val = read_split(folder / "data/prepared", "train"), read_split(folder / "data/prepared", "val")
    eye = np.eye(10, dtype="float32")
    started = time.perf_counter()
    model, classifier, _ = trainer_model(folder, train.images.shape[1:], 10, -(-len(train.labels) // BATCH))
    model.fit(train.images, eye[train.labels], batch_size=BATCH, epochs=epochs,
              validation_data=(val.images, eye[val.labels]), verbose=0)
    classifier.save(folder / "bare.keras")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory() as tmp:
        folder = scratch_project(Path(tmp), digits32_params(SHORT, BATCH))
        prepare_here(folder)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        bare_seconds(folder, 1)  # import and warm everything once
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeats):
            for epochs in (SHORT, LONG):
                times.setdefault(("bare", epochs), []).append(bare_seconds(folder, epochs))
                times.setdefault(("stage", epochs), []).append(stage_seconds(folder, epochs))
                shutil.rmtree(folder / "models", ignore_errors=True)
    median = {key: statistics.median(values) for key, values in times.items()}
    per_epoch = {side: (median[(side, LONG)] - median[(side, SHORT)]) / (LONG - SHORT) for side in ("bare", "stage")}
    fixed = {side: median[(side, SHORT)] - SHORT * per_epoch[side] for side in ("bare", "stage")}
    print(f"{'side':<8}{'T(' + str(SHORT) + ') s':>10}{'T(' + str(LONG) + ') s':>10}{'s/epoch':>10}{'one-off s':>11}")
    for side in ("bare", "stage"):
        print(f"{side:<8}{median[(side, SHORT)]:>10.1f}{median[(side, LONG)]:>10.1f}{per_epoch[side]:>10.2f}"
              f"{fixed[side]:>11.1f}")
    print(f"steady-state ratio (bare s/epoch / stage s/epoch): {per_epoch['bare'] / per_epoch['stage']:.3f}x")
    print(f"whole-run ratio at {LONG} epochs: {median[('bare', LONG)] / median[('stage', LONG)]:.3f}x")
    print("all times:", {f"{k[0]}@{k[1]}": [round(v, 1) for v in vs] for k, vs in times.items()})


if __name__ == "__main__":
    main()
