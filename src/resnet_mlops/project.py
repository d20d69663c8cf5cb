"""Where things live: the repository root, the stage outputs and the MLflow store.

Stages run with the repository (or a `dvc exp` copy of it) as working directory.
Output paths are relative to that working directory, exactly as dvc.yaml names
them, so `dvc exp run --temp` writes into its own copy. The MLflow store, in
contrast, must be one store for all runs: it is resolved from the *original*
repository root, never from a temporary experiment copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The registry alias of the version `serve` and `predict` use by default, and `register` moves.
CHAMPION = "champion"
# DVC runs queued and temporary experiments in copies under this folder.
_DVC_EXPERIMENT_COPIES = (".dvc", "tmp", "exps")


@dataclass(frozen=True)
class Layout:
    """The stage outputs, as dvc.yaml declares them (relative to the working directory)."""

    root: Path = Path(".")

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared"

    @property
    def decode_cache(self) -> Path:
        """What prepare decoded, by file content (data/cache.py): in the repository root, so every
        `dvc exp` copy shares it; not a DVC output, so `dvc repro` keeps it for the next prepare."""
        return repository_root(self.root) / "data" / "cache"

    @property
    def validation_report(self) -> Path:
        return self.root / "reports" / "data_validation.json"

    @property
    def model_file(self) -> Path:
        return self.root / "models" / "model.keras"

    @property
    def checkpoints(self) -> Path:
        """Per-epoch training checkpoints: not a DVC output, so `dvc repro` keeps them for a resume."""
        return self.root / "models" / "checkpoints"

    @property
    def run_file(self) -> Path:
        """Written by `train`, read by `evaluate` and `register`: the one MLflow run of this execution."""
        return self.root / "models" / "run.json"

    @property
    def history(self) -> Path:
        return self.root / "reports" / "history.csv"

    @property
    def curves(self) -> Path:
        return self.root / "reports" / "curves.png"

    @property
    def metrics(self) -> Path:
        return self.root / "reports" / "metrics.json"

    @property
    def per_class(self) -> Path:
        return self.root / "reports" / "per_class.csv"

    @property
    def predictions(self) -> Path:
        """Each test image's prediction, by content hash: what a paired comparison reads."""
        return self.root / "reports" / "predictions.parquet"

    @property
    def confusion_csv(self) -> Path:
        return self.root / "reports" / "confusion.csv"

    @property
    def confusion_png(self) -> Path:
        return self.root / "reports" / "confusion_matrix.png"

    @property
    def confusion_normalised_png(self) -> Path:
        """The confusion matrix with each actual class's row divided by its count (recall on the diagonal)."""
        return self.root / "reports" / "confusion_normalised.png"

    @property
    def reliability_csv(self) -> Path:
        """The reliability diagram's data, per confidence bin (DVC plot data)."""
        return self.root / "reports" / "reliability.csv"

    @property
    def reliability_png(self) -> Path:
        return self.root / "reports" / "reliability.png"

    @property
    def mistakes_png(self) -> Path:
        """The most confident mistakes on the test split, with true and predicted labels."""
        return self.root / "reports" / "mistakes.png"

    @property
    def registration(self) -> Path:
        return self.root / "reports" / "registration.json"

    @property
    def promotion(self) -> Path:
        """The promotion gate's verdict on this execution's version, promoted or not."""
        return self.root / "reports" / "promotion.json"

    @property
    def model_card(self) -> Path:
        return self.root / "reports" / "model_card.md"


def repository_root(start: Path | None = None) -> Path:
    """The project's root, seen through any `dvc exp` temporary copy.

    A copy lives at `<root>/.dvc/tmp/exps/.../<copy>`; its own root is inside
    that tree, but the runs it logs belong to `<root>`.
    """
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - len(_DVC_EXPERIMENT_COPIES) + 1):
        if parts[i:i + len(_DVC_EXPERIMENT_COPIES)] == _DVC_EXPERIMENT_COPIES:
            return Path(*parts[:i])
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").exists() or (candidate / ".dvc").is_dir():
            return candidate
    return here


def default_tracking_uri(start: Path | None = None) -> str:
    """The project's own store: an absolute SQLite file in the repository root."""
    return f"sqlite:///{repository_root(start) / 'mlflow.db'}"


def tracking_uri(start: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` when set, else the project's own store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(start)


def artifact_root(start: Path | None = None) -> str:
    """Where experiments created by this project keep their artifacts (beside the SQLite store)."""
    return (repository_root(start) / "mlartifacts").as_uri()


def path_with_this_environment(path: str | None = None) -> str:
    """`path` (default: $PATH) with this Python environment's bin/ first.

    DVC runs a stage's `cmd` with its caller's PATH; with this first, the stages'
    `resnet-mlops` and a nested `dvc` are this environment's even when it is not activated.
    """
    bin_dir = str(Path(sys.executable).parent)
    return os.pathsep.join([bin_dir, *(path if path is not None else os.environ.get("PATH", "")).split(os.pathsep)])


def dvc(args: list[str], cwd: str | Path = ".") -> str:
    """`dvc ARGS` in `cwd` (this environment's DVC, its commands first on PATH, as the stages need);
    its stdout, or a one-line UserError naming the command and DVC's last line."""
    from resnet_mlops.errors import UserError

    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path_with_this_environment()})
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[-1]
        raise UserError(f"`dvc {' '.join(args)}` failed (exit {done.returncode}): {last}")
    return done.stdout


def champion_uri(model_name: str) -> str:
    """The registry URI of the model's current champion."""
    return f"models:/{model_name}@{CHAMPION}"


def user_cache() -> Path:
    """This user's cache of downloads and compiled code, shared by every project (XDG layout)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resnet-mlops"
