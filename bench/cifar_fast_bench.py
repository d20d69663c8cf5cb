"""CIFAR-10 accuracy of ResNet-20 with the `fast` preset within a CPU-time budget (issue 5).

Runs the real stages in a scratch project: `resnet-mlops prepare` on the JPEG copy
of CIFAR-10 in ../shared/datasets, a short throughput probe to size the schedule,
then `resnet-mlops train` with `train.preset: fast` and as many epochs as fit the
budget (the one-cycle schedule needs its length up front), then `resnet-mlops
evaluate` on the 10,000 test images. Writes the curve (CSV and PNG) and a JSON
summary under bench/results/.

    .venv/bin/python bench/cifar_fast_bench.py --budget-minutes 60

`--gpu-recipe` instead trains the recipe of the GPU bench (bench/gpu_train_bench.py: the
`fast` preset at batch 512 for 30 epochs, 2% of train held out) to its end, however long it
takes here: what accuracy that recipe reaches does not depend on the hardware, and a GPU is
lent for minutes only. Results are named cifar10_gpu_recipe*.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from support.scratch import CIFAR_ARCHIVE as ARCHIVE
from support.scratch import ROOT, scratch_project, shipped_params, stage, write_params

RESULTS = ROOT / "bench" / "results"
BATCH = 256  # the fast preset's
GPU_RECIPE = {"preset": "fast", "epochs": 30, "batch_size": 512, "warmup_fraction": 0.2}
GPU_RECIPE_VAL_FRACTION = 0.02


def probe_images_per_second(project: Path) -> float:
    """Steady-state training speed on this machine of the model the train stage will fit (`training_model`)."""
    import numpy as np

    from resnet_mlops.dataset.prepared import read_split
    from support.models import trainer_model

    split = read_split(project / "data" / "prepared", "train")
    x, y = split.images[:BATCH * 12], np.eye(10, dtype="float32")[split.labels[:BATCH * 12]]
    model, _, _ = trainer_model(project, x.shape[1:], 10, -(-len(split.labels) // BATCH))
    model.fit(x[:BATCH * 2], y[:BATCH * 2], batch_size=BATCH, verbose=0)  # trace and warm up
    started = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, verbose=0)
    return len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/resnet-mlops-cifar-fast"))
    parser.add_argument("--gpu-recipe", action="store_true", help="train the GPU bench's recipe to its end")
    parser.add_argument("--archive", type=Path, default=ARCHIVE,
                        help="the CIFAR-10 JPEG archive, or a smaller one of the same layout (a smoke run)")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where the results go (default {RESULTS})")
    args = parser.parse_args()
    name = "cifar10_gpu_recipe" if args.gpu_recipe else "cifar10_fast"
    if not args.archive.exists():
        sys.exit(f"{args.archive} is missing: this benchmark needs the shared CIFAR-10 JPEG archive")

    params = shipped_params()
    params["data"].update({"source": "folder", "path": str(args.archive.resolve()), "image_size": 32, "channels": 3})
    params["model"] = {"name": "resnet20"}
    params["train"] = dict(GPU_RECIPE) if args.gpu_recipe else {"preset": "fast"}
    if args.gpu_recipe:
        params["data"]["val_fraction"] = GPU_RECIPE_VAL_FRACTION
    params["register"]["model_name"] = "cifar10-fast"
    shutil.rmtree(args.workdir, ignore_errors=True)
    project = scratch_project(args.workdir, params)

    prepare_seconds = stage("prepare", project)
    summary = json.loads((project / "data/prepared/summary.json").read_text())
    counts = {name: split["count"] for name, split in summary["splits"].items()}
    speed = probe_images_per_second(project)
    # An epoch: training, plus validation at about three times the training speed.
    epoch_seconds = counts["train"] / speed + counts["val"] / (3 * speed)
    if args.gpu_recipe:
        epochs = GPU_RECIPE["epochs"]
    else:
        budget = args.budget_minutes * 60 - 60  # start-up, model logging
        epochs = max(1, int(budget // epoch_seconds))
        params["train"]["epochs"] = epochs
        write_params(project, params)
    print(f"probe: {speed:.0f} images/s -> {epochs} epochs of ~{epoch_seconds:.0f} s", flush=True)

    train_seconds = stage("train", project)
    stage("evaluate", project)
    metrics = json.loads((project / "reports/metrics.json").read_text())

    from resnet_mlops.training.report import curves_figure

    results = args.results
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy(project / "reports/history.csv", results / f"{name}_history.csv")
    rows = (project / "reports/history.csv").read_text().splitlines()
    header = rows[0].split(",")
    history = {key: [float(r.split(",")[i]) for r in rows[1:]] for i, key in enumerate(header) if key != "epoch"}
    curves_figure(history).savefig(results / f"{name}_curves.png", dpi=100)
    result = {"machine": f"{os.cpu_count()} CPU cores", "train": params["train"], "splits": counts, "prepare_seconds": round(prepare_seconds),
              "probe_images_per_second": round(speed, 1), "epochs": epochs,
              "train_seconds": round(train_seconds), "test_accuracy": metrics.get("test_accuracy", metrics),
              "best_val_accuracy": max(history["val_accuracy"])}
    (results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
