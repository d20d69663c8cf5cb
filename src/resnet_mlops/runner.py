"""`resnet-mlops run` (what `make run` calls): check, `dvc repro`, then say what happened.

DVC needs a git repository. When the project folder is not one (a downloaded
archive rather than a clone), `run` creates it with `git init` and says so;
when `.dvc/` is missing it runs `dvc init`. Nothing else about the folder changes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from resnet_mlops import project
from resnet_mlops.config import load_params
from resnet_mlops.errors import UserError
from resnet_mlops.project import Layout


def _inside_git_work_tree() -> bool:
    done = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)
    return done.returncode == 0 and done.stdout.strip() == "true"


def ensure_repositories() -> None:
    if shutil.which("git") is None:
        raise UserError("git is not installed; DVC needs it (install git, then run again)")
    if not _inside_git_work_tree():
        print(f"run: {Path.cwd()} is not a git repository; DVC needs one, so creating it with `git init`")
        subprocess.run(["git", "init", "--quiet"], check=True)
    if not Path(".dvc").is_dir():
        print("run: no .dvc/ folder here; creating it with `dvc init`")
        subprocess.run(["dvc", "init", "--quiet"], check=True)


def run_pipeline() -> int:
    """`dvc repro` reads params.yaml (change values there or with `dvc exp run -S key=value`)."""
    params = load_params("params.yaml")  # fail on bad params before DVC touches any output
    ensure_repositories()
    done = subprocess.run(["dvc", "repro"])
    if done.returncode != 0:
        print(f"run: `dvc repro` failed with exit status {done.returncode}; earlier outputs are unchanged")
        return done.returncode
    print(report(Layout(), params.register.model_name))
    return 0


def report(layout: Layout, model_name: str) -> str:
    """The closing summary: accuracy, run, registered version, champion decision, next commands."""
    metrics = json.loads(layout.metrics.read_text())
    registration = json.loads(layout.registration.read_text())
    uri = project.tracking_uri()
    bin_dir = Path(sys.executable).parent
    venv = f'PATH="{bin_dir}:$PATH"'  # the mlflow CLI starts its web server from there
    became = "yes" if registration["champion"] else "no"
    lines = [
        "",
        "== resnet-mlops: pipeline finished ==",
        f"test accuracy      {metrics['test_accuracy']:.4f}  ({metrics['test_examples']} test images)",
        f"MLflow run id      {registration['run_id']}",
        f"registered model   {registration['model_name']} version {registration['version']}",
        f"@champion          {became}: {registration['reason']}",
        "",
        "open the MLflow dashboard:",
        f"  {venv} mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000",
        f"serve the champion (models:/{model_name}@champion) at http://127.0.0.1:5001/invocations:",
        f"  {bin_dir}/resnet-mlops serve",
        "label image files, folders or archives with it:",
        f"  {bin_dir}/resnet-mlops predict PATH... -o predictions.csv",
    ]
    return "\n".join(lines)
