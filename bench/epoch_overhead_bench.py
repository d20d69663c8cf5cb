"""What the train stage's callbacks add to each epoch, in milliseconds (issue 5, GPU target).

On an H200 a ResNet-20 epoch of CIFAR-10 at batch 512 takes about 0.42 s, so a
per-epoch cost that vanishes on this CPU (5 s epochs) decides the GPU target of
0.9x bare Keras throughput. This bench fits the real training model (augmentation
layer + ResNet-20) for EPOCHS short epochs, side by side in one process, with:

    bare        no callbacks
    checkpoint  the stage's EpochCheckpoint (weights, optimizer, RNG, history)
    mlflow      the stage's MlflowEpochLogger into a real SQLite store (synchronous: MLflow's
                asynchronous mode measured slower here, up to 1 s to flush at the end)
    stage       both, as `resnet-mlops train` runs them

and prints each side's extra milliseconds per epoch over bare (medians of
--repeats interleaved runs), and what that extra would make of a 0.42 s epoch.

    KERAS_BACKEND=jax .venv/bin/python bench/epoch_overhead_bench.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

H200_EPOCH_SECONDS = 0.42  # the bare Keras-on-JAX ResNet-20 epoch, batch 512, one H200
EPOCHS, STEPS, BATCH = 20, 2, 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import keras
    import mlflow
    import numpy as np

    from resnet_mlops.models import build_model
    from resnet_mlops.training.augment import Augment
    from resnet_mlops.training.callbacks import MlflowEpochLogger
    from resnet_mlops.training.checkpoints import Checkpoints, EpochCheckpoint

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (STEPS * BATCH, 32, 32, 3), dtype=np.uint8)
    labels = np.eye(10, dtype="float32")[rng.integers(0, 10, STEPS * BATCH)]
    model = keras.Sequential([Augment(4, True, seed=0), build_model("resnet20", (32, 32, 3), 10)])
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), keras.losses.CategoricalCrossentropy(),
                  metrics=["accuracy"])

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")

        def callbacks(side: str) -> list:
            chosen = []
            if side in ("checkpoint", "stage"):
                checkpoints = Checkpoints(folder / f"checkpoints-{side}", "bench")
                checkpoints.clear()
                chosen.append(EpochCheckpoint(checkpoints, {}, {"run_id": None, "attempt": 1}))
            if side in ("mlflow", "stage"):
                chosen.append(MlflowEpochLogger(len(images)))
            return chosen

        def seconds(side: str) -> float:
            started = time.perf_counter()
            model.fit(images, labels, batch_size=BATCH, epochs=EPOCHS, callbacks=callbacks(side),
                      shuffle=False, verbose=0)
            return time.perf_counter() - started

        sides = ("bare", "checkpoint", "mlflow", "stage")
        with mlflow.start_run():
            for side in sides:
                seconds(side)  # compile and warm every path once
            times = {side: [] for side in sides}
            for _ in range(args.repeats):
                for side in sides:
                    times[side].append(seconds(side))

    median = {side: statistics.median(values) for side, values in times.items()}
    print(f"keras {keras.__version__} on {keras.backend.backend()}; ResNet-20, {EPOCHS} epochs of {STEPS} "
          f"steps x {BATCH}; medians of {args.repeats}")
    print(f"{'side':<12}{'s/run':>8}{'extra ms/epoch':>16}{'ratio at 0.42 s/epoch':>23}")
    for side in sides:
        extra = (median[side] - median["bare"]) / EPOCHS
        ratio = H200_EPOCH_SECONDS / (H200_EPOCH_SECONDS + extra)
        print(f"{side:<12}{median[side]:>8.2f}{extra * 1000:>16.1f}{ratio:>23.3f}")
    print("all runs:", {side: [round(v, 2) for v in values] for side, values in times.items()})


if __name__ == "__main__":
    main()
