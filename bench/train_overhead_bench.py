"""Overhead of the `train` stage against a bare `model.fit` (issue 5): target >= 0.95x.

Both sides train the same ResNet-20 (with the same augmentation layer, optimizer
and loss) on the same prepared data and batch size, in this one process,
interleaved, repeated. The stage side is the real `resnet_mlops.training.trainer.train`
with everything on: MLflow run, per-epoch metrics, system metrics, a checkpoint
every epoch, history and curves, model logging. The bare side is `model.fit` on
the arrays plus `model.save`.

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

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHORT, LONG = 2, 10
BATCH = 64


def make_project(folder: Path) -> Path:
    """Digits at 32x32x3 (the CIFAR input shape), prepared by the real prepare stage."""
    from resnet_mlops.config import load_params
    from resnet_mlops.data.prepare import prepare

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update({"source": "digits", "path": None, "image_size": 32, "channels": 3})
    params["model"] = {"name": "resnet20"}
    params["train"] = {"epochs": SHORT, "batch_size": BATCH, "optimizer": "sgd", "learning_rate": 0.05,
                       "schedule": "cosine", "augment": {"crop": 4, "flip": True}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    loaded = load_params(folder / "params.yaml")
    prepare(loaded.data, loaded.seed, folder / "data/prepared", folder / "reports/data_validation.json")
    return folder


def stage_seconds(folder: Path, epochs: int) -> float:
    from resnet_mlops.config import load_params
    from resnet_mlops.project import Layout
    from resnet_mlops.training.trainer import train

    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    started = time.perf_counter()
    train(load_params(folder / "params.yaml"), Layout(folder))
    return time.perf_counter() - started


def bare_seconds(folder: Path, epochs: int) -> float:
    import keras
    import numpy as np

    from resnet_mlops.data.prepared import read_split
    from resnet_mlops.models import build_model
    from resnet_mlops.training.augment import Augment

    train, val = read_split(folder / "data/prepared", "train"), read_split(folder / "data/prepared", "val")
    eye = np.eye(10, dtype="float32")
    started = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([Augment(4, True, seed=0), build_model("resnet20", train.images.shape[1:], 10)])
    steps = -(-len(train.labels) // BATCH)
    model.compile(keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(0.05, epochs * steps),
                                       momentum=0.9),
                  keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    model.fit(train.images, eye[train.labels], batch_size=BATCH, epochs=epochs,
              validation_data=(val.images, eye[val.labels]), verbose=0)
    model.layers[-1].save(folder / "bare.keras")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_project(Path(tmp))
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
