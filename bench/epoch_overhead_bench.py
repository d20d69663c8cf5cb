"""What the train stage's callbacks add to each epoch, in milliseconds (issue 5, GPU target).

A GPU epoch of ResNet-20 on CIFAR-10 is short (the issue's reference: H200_EPOCH_SECONDS, bare
Keras on JAX, batch 512, one H200), so a per-epoch cost that vanishes in this CPU's long epochs
decides the GPU target of 0.9x bare Keras throughput. This bench fits the trainer's training
model (augmentation layer + ResNet-20, built by `training_model` on the trainer's device plan)
for EPOCHS short epochs, side by side in one process, with:

    bare        no callbacks (the reference)
    checkpoint  the stage's EpochCheckpoint (weights, optimizer, RNG, history)
    mlflow      the stage's MlflowEpochLogger into a real SQLite store (synchronous: MLflow's
                asynchronous mode was slower, bench/RESULTS.md)
    stage       both, as `resnet-mlops train` runs them

and prints each side's extra milliseconds per epoch over bare (medians of
--repeats interleaved runs), and what that extra would make of the reference GPU epoch.

    KERAS_BACKEND=jax .venv/bin/python bench/epoch_overhead_bench.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from support.scratch import scratch_project, shipped_params

H200_EPOCH_SECONDS = 0.42  # the bare Keras-on-JAX ResNet-20 epoch, batch 512, one H200
EPOCHS, STEPS, BATCH = 20, 2, 64
SIDES = ("bare", "checkpoint", "mlflow", "stage")


def bench_params() -> dict:
    """ResNet-20 at 32x32x3, plain SGD at a constant rate, pad-4 crop and flip."""
    params = shipped_params()
    params["model"] = {"name": "resnet20"}
    params["train"] = {"epochs": EPOCHS, "batch_size": BATCH, "optimizer": "sgd", "learning_rate": 0.01,
                       "schedule": "constant", "augment": {"crop": 4, "flip": True}}
    return params


def callbacks(side: str, folder: Path, images: int) -> list:
    from resnet_mlops.training.callbacks import MlflowEpochLogger
    from resnet_mlops.training.checkpoints import Checkpoints, EpochCheckpoint

    chosen = []
    if side in ("checkpoint", "stage"):
        checkpoints = Checkpoints(folder / f"checkpoints-{side}", "bench")
        checkpoints.clear()
        chosen.append(EpochCheckpoint(checkpoints, {}, {"run_id": None, "attempt": 1}))
    if side in ("mlflow", "stage"):
        chosen.append(MlflowEpochLogger(images))
    return chosen


def timed_sides(model, images, labels, folder: Path, repeats: int) -> dict[str, list[float]]:
    """Seconds per run of EPOCHS epochs, per side: every side once untimed, then `repeats` interleaved."""
    import mlflow

    def seconds(side: str) -> float:
        started = time.perf_counter()
        model.fit(images, labels, batch_size=BATCH, epochs=EPOCHS, callbacks=callbacks(side, folder, len(images)),
                  shuffle=False, verbose=0)
        return time.perf_counter() - started

    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    with mlflow.start_run():
        for side in SIDES:
            seconds(side)  # compile and warm every path once
        times = {side: [] for side in SIDES}
        for _ in range(repeats):
            for side in SIDES:
                times[side].append(seconds(side))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import keras
    import numpy as np

    from support.models import trainer_model

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (STEPS * BATCH, 32, 32, 3), dtype=np.uint8)
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, STEPS * BATCH)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = scratch_project(Path(tmp), bench_params())
        model, _, _ = trainer_model(folder, (32, 32, 3), 10, STEPS)
        times = timed_sides(model, images, labels, folder, args.repeats)

    median = {side: statistics.median(values) for side, values in times.items()}
    print(f"keras {keras.__version__} on {keras.backend.backend()}; ResNet-20, {EPOCHS} epochs of {STEPS} "
          f"steps x {BATCH}; medians of {args.repeats}")
    print(f"{'side':<12}{'s/run':>8}{'extra ms/epoch':>16}{f'ratio at {H200_EPOCH_SECONDS} s/epoch':>23}")
    for side in SIDES:
        extra = (median[side] - median["bare"]) / EPOCHS
        ratio = H200_EPOCH_SECONDS / (H200_EPOCH_SECONDS + extra)
        print(f"{side:<12}{median[side]:>8.2f}{extra * 1000:>16.1f}{ratio:>23.3f}")
    print("all runs:", {side: [round(v, 2) for v in values] for side, values in times.items()})


if __name__ == "__main__":
    main()
