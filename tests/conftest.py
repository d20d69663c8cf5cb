"""Shared fixtures: a tiny params file and throw-away git+DVC repositories of this project."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]

# The stage commands (`resnet-mlops ...`) and `dvc` come from the environment running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GIT_AUTHOR_NAME", "resnet-mlops tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@localhost")
os.environ.setdefault("GIT_COMMITTER_NAME", "resnet-mlops tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@localhost")

# A ResNet-8 for 2 epochs on the digits: the whole pipeline in seconds.
TINY_PARAMS = {
    "seed": 7,
    "mlflow": {"experiment": "tests"},
    "data": {"source": "digits", "path": None, "val_fraction": 0.15, "test_fraction": 0.2},
    "model": {"name": "resnet_cifar", "depth": 8},
    "train": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "optimizer": "adam"},
    "register": {"model_name": "tiny-digits"},
}


@pytest.fixture
def tiny_params() -> dict:
    return copy.deepcopy(TINY_PARAMS)


def write_params(folder: Path, params: dict) -> Path:
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def run(args: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def copy_project(folder: Path, params: dict) -> Path:
    """The pipeline definition, the sources and data/raw, as a downloaded archive would give them."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "dvc.yaml", folder / "dvc.yaml")
    for tree in ("src", "data/raw"):
        shutil.copytree(PROJECT / tree, folder / tree, ignore=shutil.ignore_patterns("__pycache__"))
    write_params(folder, params)
    return folder


def make_project_repo(folder: Path, params: dict) -> Path:
    """A git+DVC repository holding this project's pipeline definition and sources, committed."""
    copy_project(folder, params)
    (folder / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    run(["git", "init", "--quiet", "--initial-branch=main"], folder)
    run(["dvc", "init", "--quiet"], folder)
    run(["dvc", "config", "core.analytics", "false"], folder)
    run(["git", "add", "-A"], folder)
    run(["git", "commit", "--quiet", "-m", "pipeline"], folder)
    return folder


@pytest.fixture
def project_repo(tmp_path, tiny_params, monkeypatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return make_project_repo(tmp_path / "repo", tiny_params)


OUTPUTS = ("data/prepared", "models/model.keras", "models/run.json", "reports")


def outputs_of(repo: Path) -> dict[str, bytes]:
    """Every stage output's bytes, by path: what a failed run must leave exactly as it was."""
    found = {}
    for name in OUTPUTS:
        path = repo / name
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file() and not file.name.endswith(".failed.json"):
                found[str(file.relative_to(repo))] = file.read_bytes()
    assert len(found) > 10, sorted(found)
    return found


# Lines that are the libraries' business, not the user's (issue 11, item 9).
NOISE = ("oneDNN custom operations", "absl::InitializeLog", "Failed to send telemetry", "Add type hints",
         "interpreted in multiple ways", "CloudPickle", "Downloading artifacts", "Use `dvc push`",
         "Creating initial MLflow database", "command not found", "resnet-mlops: not found", "is empty.",
         "Traceback")


def unactivated_path() -> str:
    """$PATH without the environment running the tests: a shell where it is not activated."""
    bin_dir = str(Path(sys.executable).parent)
    return os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bin_dir)
