"""What does `model.pretrained` buy on a small dataset? (issue 16)

CIFAR-10 from the shared JPEG archive, split by class into two tasks:

    animals   bird, cat, deer, dog, frog, horse: `--pretrain-per-class` training images each
    vehicles  airplane, automobile, ship, truck: 200 training images each (`--train-per-class`),
              50 more each for validation, and the full official test set (1,000 each)

Through the project's real stages (`resnet-mlops prepare`, `train`, `evaluate`, one process
each, MLflow on, in scratch projects outside this repository), it pretrains ResNet-20 on the
animals, then trains the same network on the 800 vehicle images two ways, seed by seed, with
the same epoch budget (`--epochs`):

    finetune  model.pretrained: the animals' models/model.keras, train.preset: finetune
              (the new head alone for train.head_epochs, then the whole network at half the rate)
    scratch   random initialisation, the default recipe (Adam, cosine) with the same augmentation

and prints each one's test accuracy on the 4,000 vehicle test images, the medians over the seeds
and the ratio finetune / scratch. Figures: bench/RESULTS.md.

    .venv/bin/python bench/finetune_bench.py [--seeds 3] [--epochs 15] [--pretrain-epochs 10]

Skips (exit status 0, with a message) when ../shared/datasets/cifar10-jpeg.tar.gz is absent.
"""

from __future__ import annotations

import argparse
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

ANIMALS = ("bird", "cat", "deer", "dog", "frog", "horse")
VEHICLES = ("airplane", "automobile", "ship", "truck")
AUGMENT = {"crop": 4, "flip": True}  # what the finetune preset uses; the scratch runs get the same
_MEMBER = re.compile(r"^cifar10-jpeg/(train|test)/([a-z]+)/(\d+)\.jpg$")


def write_task(archive: Path, folder: Path, classes: tuple[str, ...], train: int, val: int,
               test: int | None) -> dict[str, int]:
    """A train/val/test tree of `classes`: each one's first `train` training JPEGs (by number), the
    next `val` as validation, its first `test` test JPEGs (None: all), copied byte for byte."""
    counts = {"train": 0, "val": 0, "test": 0}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = _MEMBER.match(member.name)
            if not match or match.group(2) not in classes:
                continue
            split, label, number = match.group(1), match.group(2), int(match.group(3))
            if split == "train":
                if number >= train + val:
                    continue
                split = "train" if number < train else "val"
            elif test is not None and number >= test:
                continue
            target = folder / split / label / Path(member.name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            counts[split] += 1
    return counts


def task_params(tree: Path, seed: int, name: str, model: dict, train: dict) -> dict:
    params = shipped_params()
    params["seed"] = seed
    # The tree's own val/ is the validation split; a share of train/ would be drawn into it too, so
    # that share is made next to nothing (it must be above 0): train/ stays whole but for an image or so.
    params["data"] = {**params["data"], "source": "folder", "path": str(tree), "test_path": None,
                      "image_size": None, "channels": None, "val_fraction": 0.001}
    params["model"] = {"name": "resnet20", **model}
    params["train"] = train
    params["register"]["model_name"] = name
    return params


def train_and_score(project: Path) -> dict:
    """Train and evaluate `project` as it stands; its test accuracy and the train stage's seconds."""
    shutil.rmtree(project / "models", ignore_errors=True)
    seconds = stage("train", project, quiet=True)
    stage("evaluate", project, quiet=True)
    metrics = json.loads((project / "reports/metrics.json").read_text())
    return {"test": metrics["test_accuracy"], "train_s": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15, help="the vehicles' budget, both ways")
    parser.add_argument("--head-epochs", type=int, default=1)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--pretrain-per-class", type=int, default=2000)
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None, help="kept afterwards (default: a temp dir)")
    args = parser.parse_args()
    if not ARCHIVE.exists():
        print(f"skipped: {ARCHIVE} is absent; this benchmark needs the shared CIFAR-10 JPEG archive")
        return 0

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        for name in ("animals", "vehicles", "pretrain", "vehicles-project"):
            shutil.rmtree(work / name, ignore_errors=True)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work}/mlflow.db"
        started = time.perf_counter()

        animals = write_task(ARCHIVE, work / "animals", ANIMALS, args.pretrain_per_class, 100, 200)
        vehicles = write_task(ARCHIVE, work / "vehicles", VEHICLES, args.train_per_class, 50, None)
        print(f"animals: {animals}; vehicles: {vehicles}", flush=True)

        pretrain = scratch_project(work / "pretrain", task_params(
            work / "animals", 42, "cifar10-animals", {},
            {"epochs": args.pretrain_epochs, "augment": AUGMENT}))
        stage("prepare", pretrain, quiet=True)
        animals_result = train_and_score(pretrain)
        source = pretrain / "models/model.keras"
        print(f"pretrain: ResNet-20 on the animals, {args.pretrain_epochs} epochs: test accuracy "
              f"{animals_result['test']:.4f} (train {animals_result['train_s']:.0f} s)", flush=True)

        recipes = {
            "finetune": ({"pretrained": str(source)},
                         {"preset": "finetune", "epochs": args.epochs, "head_epochs": args.head_epochs}),
            "scratch": ({}, {"epochs": args.epochs, "augment": AUGMENT}),
        }
        project = work / "vehicles-project"
        runs: dict[str, list[dict]] = {name: [] for name in recipes}
        for index in range(args.seeds):
            seed = 42 + index
            order = list(recipes) if index % 2 == 0 else list(reversed(recipes))
            for name in order:
                model, train = recipes[name]
                params = task_params(work / "vehicles", seed, "cifar10-vehicles", model, train)
                if not project.exists():
                    scratch_project(project, params)
                write_params(project, params)
                stage("prepare", project, quiet=True)  # a second or two: the split depends on the seed
                result = train_and_score(project)
                runs[name].append(result)
                print(f"seed {seed} {name}: test accuracy {result['test']:.4f} (train {result['train_s']:.0f} s)",
                      flush=True)
        total = time.perf_counter() - started

    medians = {name: {key: statistics.median(r[key] for r in results) for key in ("test", "train_s")}
               for name, results in runs.items()}
    tuned, scratch = medians["finetune"], medians["scratch"]
    print(f"\nvehicles, {4 * args.train_per_class} training images, {args.epochs} epochs; medians over "
          f"{args.seeds} seeds ({total / 60:.1f} min in all, pretraining included):")
    print(f"{'':<24}{'finetune':>10}{'scratch':>10}{'ratio':>9}")
    print(f"{'test accuracy':<24}{tuned['test']:>10.4f}{scratch['test']:>10.4f}"
          f"{tuned['test'] / scratch['test']:>8.3f}x")
    print(f"{'train stage s':<24}{tuned['train_s']:>10.1f}{scratch['train_s']:>10.1f}"
          f"{tuned['train_s'] / scratch['train_s']:>8.3f}x")
    pairs = [(round(t["test"], 4), round(s["test"], 4)) for t, s in zip(runs["finetune"], runs["scratch"])]
    print(f"per seed (finetune, scratch): {pairs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
