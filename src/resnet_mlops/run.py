"""`resnet-mlops run` (what `make run` calls): check, `dvc repro`, then say what happened.

The closing report is written here once, for `make run` and for the Prefect flow.

DVC needs a git repository. When the project folder is not one (a downloaded
archive rather than a clone), `run` creates it with `git init` and says so;
when `.dvc/` is missing it runs `dvc init`. Nothing else about the folder changes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from resnet_mlops import project
from resnet_mlops.config import load_params
from resnet_mlops.errors import EXIT_USER_ERROR, UserError
from resnet_mlops.project import Layout
from resnet_mlops.stages import stage


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
        subprocess.run([sys.executable, "-m", "dvc", "init", "--quiet"], check=True)


def run_pipeline() -> int:
    """`dvc repro` reads params.yaml (change values there or with `dvc exp run -S key=value`)."""
    params = load_params("params.yaml")  # fail on bad params before DVC touches any output
    os.environ["PATH"] = project.path_with_this_environment()
    ensure_repositories()
    try:
        ran = reproduce()
    except StageFailed as failure:
        print(f"run: {failure}; every output is still the one its stage's last successful run wrote "
              f"(DVC keeps them: persist: true)", file=sys.stderr)
        return failure.exit_status
    layout = Layout()
    print(report(layout, params.register.model_name, ran))
    hint = commit_hint()
    if hint:
        print(hint)
    return 0


class StageFailed(Exception):
    """A stage of `dvc repro` failed; `exit_status` is the stage's own (2 for a user's mistake)."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def reproduce() -> list[str]:
    """`dvc repro` through DVC's Python API: the stages it ran, in order.

    In-process rather than the `dvc` command so that the stages keep this terminal
    (Keras' progress bar), the failing stage's exit status is known, and DVC's
    closing hints (`git add dvc.lock`, `dvc push` with no remote configured) give way
    to this command's own summary.
    """
    import logging

    from dvc.exceptions import DvcException, ReproductionError
    from dvc.repo import Repo  # importing dvc sets up its console logging, as the dvc command has it

    for handler in logging.getLogger("dvc").handlers:  # on the handlers: they see dvc.*'s records too
        handler.addFilter(lambda record: "lock file" not in record.getMessage())  # bookkeeping, not news
    try:
        with Repo() as repo:
            repo.scm_context.quiet = True
            return [stage.addressing for stage in repo.reproduce()]
    except ReproductionError as error:
        cause = str(error.__cause__ or "")
        status = re.search(r"exited with (\d+)", cause)
        exit_status = EXIT_USER_ERROR if status and int(status.group(1)) == EXIT_USER_ERROR else 1
        raise StageFailed(f"{error} ({cause})" if cause else str(error), exit_status) from None
    except DvcException as error:
        raise StageFailed(f"dvc repro: {error}", 1) from None


def outcome(layout: Layout, by_last_run: bool = False) -> list[tuple[str, str]]:
    """The pipeline's outcome, row by row: the closing report of `make run` and of the Prefect
    flow (its markdown artifact). `by_last_run`: no stage ran now; the rows are the last run's."""
    metrics = stage("evaluate").summary(layout)
    registration = stage("register").summary(layout)
    became = "yes" if registration["champion"] else "no"
    figures = ", the last run's" if by_last_run else ""
    return [
        ("test accuracy", f"{metrics['test_accuracy']:.4f}  ({metrics['test_examples']} test images{figures})"),
        ("MLflow run id", registration["run_id"]),
        ("registered model", f"{registration['model_name']} version {registration['version']}"
                             f"{' (by the last run)' if by_last_run else ''}"),
        ("@champion", f"{became}{', decided by the last run' if by_last_run else ''}: {registration['reason']}"),
    ]


def report(layout: Layout, model_name: str, ran: list[str]) -> str:
    """What `make run` prints last: what ran, the outcome, and the commands that come next."""
    uri = project.tracking_uri()
    bin_dir = Path(sys.executable).parent
    venv = f'PATH="{bin_dir}:$PATH"'  # the mlflow CLI starts its web server from there
    heading = (f"== resnet-mlops: pipeline finished (ran {', '.join(ran)}) ==" if ran else
               "== resnet-mlops: nothing to do, every stage is up to date (the last run's results) ==")
    lines = [
        "",
        heading,
        *(f"{label:<19}{value}" for label, value in outcome(layout, by_last_run=not ran)),
        "",
        "open the MLflow dashboard:",
        f"  {venv} mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000",
        f"serve the champion ({project.champion_uri(model_name)}) at http://127.0.0.1:5001/invocations:",
        f"  {bin_dir}/resnet-mlops serve",
        "label image files, folders or archives with it:",
        f"  {bin_dir}/resnet-mlops predict PATH... -o predictions.csv",
    ]
    return "\n".join(lines)


def markdown_report(layout: Layout) -> str:
    """The outcome as the Prefect flow's markdown artifact shows it."""
    rows = "".join(f"| {label} | {value} |\n" for label, value in outcome(layout))
    return f"# retrain\n\n| | |\n|---|---|\n{rows}"


# What a run changes that git should keep: the lock, the params and the small outputs
# (metrics, plots data, reports), and the .gitignore files DVC writes for its outputs.
_COMMITTED = ("dvc.lock", "params.yaml", "reports", ".gitignore", "data/.gitignore", "models/.gitignore")


def commit_hint() -> str | None:
    """What to commit so that `dvc exp show` and `dvc metrics diff` can compare against this run."""
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], capture_output=True).returncode != 0:
        paths = ["-A"]  # a repository `run` has just created: nothing is committed yet
    else:
        done = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", *_COMMITTED],
                              capture_output=True, text=True)
        changed = [line[3:] for line in done.stdout.splitlines()]
        paths = [path for path in _COMMITTED if any(c == path or c.startswith(f"{path}/") for c in changed)]
    if not paths:
        return None
    return ("\nthis run is not committed yet; commit it to compare experiments against it "
            "(dvc exp show, dvc metrics diff):\n"
            f"  git add {' '.join(paths)} && git commit -m 'Pipeline run'")
