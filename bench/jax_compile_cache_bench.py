"""A retrain under JAX with XLA's compiled code kept on disk, against one that compiles afresh.

The trainer points JAX's persistent compilation cache at resnet-mlops' user cache
(training/devices.py). This bench runs the real train stage twice in fresh
processes on the same prepared data, first with an empty cache (cold), then with
the cache the first run filled (warm), and compares the first epoch's seconds,
where the compiling happens, and the whole stage. Repeated with a new empty cache
each round; medians.

    .venv/bin/python bench/jax_compile_cache_bench.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from support.scratch import digits32_params, prepare_here, scratch_project, stage


def train_seconds(folder: Path, cache: Path) -> tuple[float, float]:
    """(first epoch s, whole stage s) of `resnet-mlops train` under JAX with `cache` as XDG_CACHE_HOME."""
    env = {"KERAS_BACKEND": "jax", "XDG_CACHE_HOME": str(cache),
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db", "MLFLOW_DISABLE_TELEMETRY": "true"}
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # the trainer's own cache, under XDG_CACHE_HOME
    whole = stage("train", folder, env=env, quiet=True)
    run_id = json.loads((folder / "models/run.json").read_text())["run_id"]
    first = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_metric_history(run_id, "epoch_seconds")[0]
    return first.value, whole


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = scratch_project(Path(tmp) / "project", digits32_params())  # ResNet-20, digits 32x32x3, 2 epochs
        prepare_here(folder)
        for round_ in range(args.repeats):
            cache = Path(tmp) / f"cache-{round_}"
            rows["cold"].append(train_seconds(folder, cache))
            rows["warm"].append(train_seconds(folder, cache))
        entries = len(list((Path(tmp) / "cache-0/resnet-mlops/jax-compilation").iterdir()))
    print(f"ResNet-20, digits 32x32x3, batch 64, JAX on {os.cpu_count()} CPU cores; medians of {args.repeats}; "
          f"{entries} cached programs")
    medians = {}
    for side, values in rows.items():
        medians[side] = [statistics.median(column) for column in zip(*values)]
        print(f"{side:<6} first epoch {medians[side][0]:6.1f} s   whole stage {medians[side][1]:6.1f} s   "
              f"runs {[(round(a, 1), round(b, 1)) for a, b in values]}")
    print(f"warm/cold: first epoch {medians['warm'][0] / medians['cold'][0]:.2f}x, "
          f"whole stage {medians['warm'][1] / medians['cold'][1]:.2f}x")


if __name__ == "__main__":
    main()
