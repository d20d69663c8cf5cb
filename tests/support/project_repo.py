"""Throw-away copies of this project: a tiny params file, git+DVC repositories, their stage outputs.

A repository where the pipeline already ran is costly (a `dvc repro`, four stage
processes), so the tests reproduce one per session and give each test a copy
(`copy_repo`). A copy's MLflow store must then name the copy's artifacts, not the
original's: `copy_repo` rewrites it.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]

# A ResNet-8 for 2 epochs on the digits: the whole pipeline in seconds.
TINY_PARAMS = {
    "seed": 7,
    "mlflow": {"experiment": "tests"},
    "data": {"source": "digits", "path": None, "val_fraction": 0.15, "test_fraction": 0.2},
    "model": {"name": "resnet_cifar", "depth": 8},
    "train": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "optimizer": "adam"},
    "evaluate": {},
    "register": {"model_name": "tiny-digits"},
}


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


def reproduce(folder: Path, params: dict) -> Path:
    """`make_project_repo`, then `dvc repro` into the repository's own store (whatever the environment says)."""
    repo = make_project_repo(folder, params)
    run(["dvc", "repro"], repo, env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    return repo


def copy_repo(original: Path, folder: Path) -> Path:
    """A copy of `original` (work tree, .git and .dvc) whose MLflow store and models name the copy's files.

    Left as it is: models/run.json's `tracking_uri`, a record of where the run was logged that no code
    reads; it is a DVC output, so rewriting it would make `train` stale.
    """
    shutil.copytree(original, folder, symlinks=True)
    old, new = str(original.resolve()), str(folder.resolve())
    _relocate_store(folder / "mlflow.db", old, new)
    for model_file in (folder / "mlartifacts").rglob("MLmodel"):  # MLflow 3 writes its artifact_path there
        model_file.write_text(model_file.read_text().replace(old + "/", new + "/"))
    return folder


def _relocate_store(db: Path, old: str, new: str) -> None:
    """Replace the path `old` by `new` in every text value of the SQLite store (experiments' and logged
    models' artifact locations, runs' artifact URIs, model versions' storage locations, dataset sources),
    whatever MLflow's schema; then check that no value of any type still names `old`."""
    with sqlite3.connect(db) as store:
        columns = [(table, column) for (table,) in store.execute("SELECT name FROM sqlite_master WHERE type='table'")
                   for column in (row[1] for row in store.execute(f'PRAGMA table_info("{table}")'))]
        for table, column in columns:
            store.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                          f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0', (old + "/", new + "/", old))
        left = [f"{table}.{column}" for table, column in columns
                if store.execute(f'SELECT 1 FROM "{table}" WHERE instr(CAST("{column}" AS TEXT), ?) > 0 LIMIT 1',
                                 (old,)).fetchone()]
    store.close()  # (the `with` block commits; it does not close)
    assert not left, f"{db} still names {old} in {left}"


def file_states(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of everything under `folder`: what a test that must not touch it compares."""
    return {str(path.relative_to(folder)): (path.lstat().st_size, path.lstat().st_mtime_ns)
            for path in folder.rglob("*")}


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


def kill_training_at(project: Path, checkpoint: str, env: dict | None = None, settle: float = 0.0) -> Path:
    """Start `resnet-mlops train` in `project` and SIGKILL it once `models/checkpoints/<checkpoint>`
    exists (and `settle` seconds later); return that checkpoint's folder."""
    process = subprocess.Popen(["resnet-mlops", "train"], cwd=project, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        target = project / "models/checkpoints" / checkpoint
        deadline = time.monotonic() + 300
        while not target.exists():
            assert process.poll() is None, f"training ended (exit {process.returncode}) before {checkpoint}"
            assert time.monotonic() < deadline, f"no {checkpoint} checkpoint after 300 s"
            time.sleep(0.01)
        time.sleep(settle)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:  # never leave the training behind when the test fails
        if process.poll() is None:
            process.kill()
            process.wait()
    return target
