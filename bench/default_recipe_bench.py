"""Does the default recipe end well on a user's own folder of images? (issue 11, item 11)

The report (its figures: bench/RESULTS.md): a folder of digit PNGs trained for 3 epochs, every
other key as shipped, ended on a spike with Adam at a constant rate, and did much better with
`train.schedule: cosine`. This bench repeats that set-up on a second real
folder dataset, a class-balanced subset of the shared CIFAR-10 JPEG archive written out as a
class-per-subfolder tree (`data.source: folder`; its own train/ and test/ folders), and
trains, side by side on the same prepared data, seed by seed:

    old  the shipped params.yaml with `train.schedule: constant` (the default before)
    new  the shipped params.yaml as it is (the default now)

for `--epochs` epochs (3, as in the report) through the project's real stages (`resnet-mlops
prepare`, `train`, `evaluate`, one process each, MLflow on, in a scratch project). Per run it prints the
final-epoch and best validation accuracy, the drop from best to final, the test accuracy, the
learning rate MLflow recorded for the last epoch and the training time; then the medians over
the seeds and the ratio new / old. The order of the two recipes alternates from seed to seed.

    .venv/bin/python bench/default_recipe_bench.py [--seeds 5] [--train-per-class 500] [--epochs 3]

Skips (exit status 0, with a message) when ../shared/datasets/cifar10-jpeg.tar.gz is absent.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from support.scratch import CIFAR_ARCHIVE as ARCHIVE
from support.scratch import scratch_project, shipped_params, stage, write_params

RECIPES = {"old": {"schedule": "constant"}, "new": {}}  # keys written over the shipped train section
_MEMBER = re.compile(r"^cifar10-jpeg/(train|test)/([a-z]+)/(\d+)\.jpg$")


def write_subset(archive: Path, folder: Path, per_class: dict[str, int]) -> dict[str, int]:
    """The first per_class[split] files of every class (by number), copied byte for byte."""
    counts = {"train": 0, "test": 0}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = _MEMBER.match(member.name)
            if not match or int(match.group(3)) >= per_class[match.group(1)]:
                continue
            split, label, _ = match.groups()
            target = folder / split / label / Path(member.name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            counts[split] += 1
    return counts


def recipe_params(subset: Path, seed: int, epochs: int, recipe: dict) -> dict:
    params = shipped_params()
    params["seed"] = seed
    params["data"].update({"source": "folder", "path": str(subset), "test_path": None})
    params["train"] = {**params["train"], "epochs": epochs, **recipe}
    params["register"]["model_name"] = "cifar10-subset"
    return params


def train_and_score(project: Path, client) -> dict:
    shutil.rmtree(project / "models", ignore_errors=True)
    seconds = stage("train", project, quiet=True)
    stage("evaluate", project, quiet=True)
    with (project / "reports/history.csv").open() as handle:
        val = [float(row["val_accuracy"]) for row in csv.DictReader(handle)]
    run_id = json.loads((project / "models/run.json").read_text())["run_id"]
    rates = client.get_metric_history(run_id, "learning_rate")
    return {"val": val, "final": val[-1], "best": max(val), "drop": max(val) - val[-1],
            "test": json.loads((project / "reports/metrics.json").read_text())["test_accuracy"],
            "last_lr": max(rates, key=lambda m: m.step).value,
            "schedule": client.get_run(run_id).data.params["train.schedule"], "train_s": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3, help="3: as in the report")
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards (default: a temp dir)")
    args = parser.parse_args()
    if not ARCHIVE.exists():
        print(f"skipped: {ARCHIVE} is absent; this benchmark needs the shared CIFAR-10 JPEG archive "
              f"(../shared/datasets/README.md)")
        return 0

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        shutil.rmtree(work / "project", ignore_errors=True)
        subset, project = work / "cifar10-subset", work / "project"
        shutil.rmtree(subset, ignore_errors=True)
        counts = write_subset(ARCHIVE, subset, {"train": args.train_per_class, "test": args.test_per_class})
        scratch_project(project, recipe_params(subset, 42, args.epochs, {}))
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work.resolve()}/mlflow.db"
        from mlflow.tracking import MlflowClient

        client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
        print(f"subset: {counts['train']} train + {counts['test']} test JPEGs of 10 classes in {subset}; "
              f"{args.epochs} epochs, {args.seeds} seeds", flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in RECIPES}
        started = time.perf_counter()
        for index in range(args.seeds):
            seed = 42 + index
            write_params(project, recipe_params(subset, seed, args.epochs, {}))
            stage("prepare", project, quiet=True)
            if index == 0:
                splits = json.loads((project / "data/prepared/summary.json").read_text())["splits"]
                print("splits: " + ", ".join(f"{name} {split['count']}" for name, split in splits.items()))
            order = list(RECIPES) if index % 2 == 0 else list(reversed(RECIPES))
            for name in order:
                write_params(project, recipe_params(subset, seed, args.epochs, RECIPES[name]))
                result = train_and_score(project, client)
                runs[name].append(result)
                curve = " -> ".join(f"{v:.3f}" for v in result["val"])
                print(f"seed {seed} {name} ({result['schedule']}): val {curve}; best {result['best']:.3f}, "
                      f"drop {result['drop']:+.3f}; test {result['test']:.3f}; last-epoch lr {result['last_lr']:.2g}; "
                      f"train {result['train_s']:.0f} s", flush=True)
        total = time.perf_counter() - started

    medians = {name: {key: statistics.median(r[key] for r in results)
                      for key in ("final", "best", "drop", "test", "train_s")} for name, results in runs.items()}
    old, new = medians["old"], medians["new"]
    print(f"\nmedians over {args.seeds} seeds ({total / 60:.1f} min in all):")
    print(f"{'':<22}{'old (constant)':>15}{'new (default)':>15}{'new / old':>11}")
    for key, label in (("final", "final-epoch val acc"), ("best", "best val acc"), ("test", "test acc")):
        print(f"{label:<22}{old[key]:>15.4f}{new[key]:>15.4f}{new[key] / old[key]:>10.3f}x")
    print(f"{'drop best -> final':<22}{old['drop']:>15.4f}{new['drop']:>15.4f}")
    print(f"{'train stage s':<22}{old['train_s']:>15.1f}{new['train_s']:>15.1f}"
          f"{new['train_s'] / old['train_s']:>10.3f}x")
    below = {name: sum(r["drop"] > 0 for r in results) for name, results in runs.items()}
    print(f"seeds ending below their best epoch: old {below['old']}, new {below['new']} of {args.seeds}")
    pairs = [(round(o["test"], 3), round(n["test"], 3)) for o, n in zip(runs["old"], runs["new"])]
    wins = sum(n > o for o, n in pairs)
    print(f"new beats old on test in {wins} of {args.seeds} seeds; per seed (old, new) test: {pairs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
