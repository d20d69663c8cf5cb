"""A throw-away copy of this project for a bench to run the real stages in.

`scratch_project(folder, params)` writes dvc.yaml and `params` (default: the shipped params.yaml)
into `folder`: dvc.yaml makes the folder a project root, so the stages keep their MLflow store
and artifacts inside it. `sources=True` adds src/ and data/raw/, what a downloaded archive holds;
`repo=True` also makes it a git+DVC repository, for `dvc repro`.

Then a bench runs stages on it either as the command line does, in a child process (`stage`),
or in its own process (`prepare_here`, `train_here`), where it can time and look inside them.
Importing this module imports PyYAML only: the GPU bench's orchestrator, which must leave the
GPU to its children, imports it without Keras.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CIFAR_ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
BIN = Path(sys.executable).parent  # this environment's resnet-mlops and dvc


def shipped_params() -> dict:
    """The project's params.yaml, as a fresh dict to edit."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def read_params(project: Path) -> dict:
    return yaml.safe_load((Path(project) / "params.yaml").read_text())


def write_params(project: Path, params: dict) -> Path:
    path = Path(project) / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def digits32_params(epochs: int = 2, batch_size: int = 64) -> dict:
    """The shipped params, training ResNet-20 on the digits at 32x32x3 (CIFAR's input shape).

    SGD at 0.05 with a cosine schedule, pad-4 crop and flip: short epochs, in which a stage's
    per-epoch costs weigh as much as they ever will (the train-overhead and JAX-cache benches).
    """
    params = shipped_params()
    params["data"].update({"source": "digits", "path": None, "image_size": 32, "channels": 3})
    params["model"] = {"name": "resnet20"}
    params["train"] = {"epochs": epochs, "batch_size": batch_size, "optimizer": "sgd", "learning_rate": 0.05,
                       "schedule": "cosine", "augment": {"crop": 4, "flip": True}}
    return params


def scratch_project(folder: Path, params: dict | None = None, *, sources: bool = False,
                    repo: bool = False) -> Path:
    """`folder` made a copy of this project with `params`; see the module's docstring."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", folder / "dvc.yaml")
    if sources or repo:
        for tree in ("src", "data/raw"):
            shutil.copytree(ROOT / tree, folder / tree, ignore=shutil.ignore_patterns("__pycache__"),
                            dirs_exist_ok=True)
    write_params(folder, shipped_params() if params is None else params)
    if repo:
        for command in (["git", "init", "--quiet"], [str(BIN / "dvc"), "init", "--quiet"],
                        [str(BIN / "dvc"), "config", "core.analytics", "false"]):
            subprocess.run(command, cwd=folder, check=True, capture_output=True)
    return folder


def stage(name: str, project: Path, *, env: dict | None = None, quiet: bool = False) -> float:
    """Seconds `resnet-mlops <name>` took in `project`, in its own process (extra `env` on top of ours).

    Its output goes to ours; `quiet` keeps it, and shows its tail only if the stage fails.
    A failed stage ends the bench.
    """
    started = time.perf_counter()
    done = subprocess.run([str(BIN / "resnet-mlops"), name], cwd=project, env={**os.environ, **(env or {})},
                          capture_output=quiet, text=True)
    if done.returncode != 0:
        tail = f":\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}" if quiet else " (its output is above)"
        sys.exit(f"resnet-mlops {name} failed in {project} (exit {done.returncode}){tail}")
    return time.perf_counter() - started


def prepare_here(project: Path) -> dict:
    """The prepare stage on `project`, in this process; its summary (splits' counts, image shape, hash)."""
    from resnet_mlops.config import load_params
    from resnet_mlops.data import prepare
    from resnet_mlops.project import Layout

    project = Path(project).resolve()
    with contextlib.chdir(project):  # where DVC runs it
        return prepare.run(load_params(project / "params.yaml"), Layout(project))


def train_here(project: Path) -> dict:
    """The train stage on `project`, in this process; its summary (run id, epochs, last metrics).

    In `project`, as DVC runs it: its MLflow store (unless MLFLOW_TRACKING_URI says otherwise)
    and its artifacts stay in the scratch project.
    """
    from resnet_mlops.config import load_params
    from resnet_mlops.project import Layout
    from resnet_mlops.training import trainer

    project = Path(project).resolve()
    with contextlib.chdir(project):
        return trainer.run(load_params(project / "params.yaml"), Layout(project))
