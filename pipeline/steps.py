"""What each run of the `retrain` flow needs, beside running the stages (pipeline/flows.py wires them).

- Overrides (`key=value`) applied to params.yaml by DVC's own code for `dvc exp run -S`
  (`dvc.utils.hydra.apply_overrides`), checked first, and put back when the run fails;
- the workspace lock: never two runs on one project folder (an `flock` on
  `.dvc/tmp/retrain.lock`, released when the run ends or its process dies);
- a completed run recorded as a DVC experiment (`save_experiment` says why not `dvc exp run`);
- a failed execution's MLflow runs marked FAILED;
- the run's Markdown report.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from resnet_mlops.errors import EXIT_USER_ERROR, UserError

LOCK_FILE = Path(".dvc") / "tmp" / "retrain.lock"


class StageFailed(Exception):
    """A step of the retrain flow failed; the message is one line naming the step and the reason.

    `user_error`: the step's command exited with status 2 (a mistake in params or data), which
    no retry can fix.
    """

    def __init__(self, step: str, reason: str, exit_status: int | None = None, user_error: bool = False):
        self.step, self.reason, self.exit_status = step, reason, exit_status
        self.user_error = user_error or exit_status == EXIT_USER_ERROR
        status = "" if exit_status is None else (
            f" (exit {exit_status}: a mistake in params or data, not retried)" if self.user_error
            else f" (exit {exit_status})")
        super().__init__(f"stage {step} failed{status}: {reason}")


# -- overrides ---------------------------------------------------------------------------------------

def parameters_of(overrides: list[str] | None = None, model_name: str | None = None,
                  epochs: int | None = None) -> list[str]:
    """Every `key=value` a run applies: `overrides`, then the shortcuts (which win)."""
    applied = [*(overrides or [])]
    if model_name:
        applied.append(f"register.model_name={_hydra_value(model_name)}")
    if epochs is not None:
        applied.append(f"train.epochs={int(epochs)}")
    for override in applied:
        key, equals, _ = override.partition("=")
        if not equals or not key.strip() or key != key.strip():
            raise UserError(f"{override!r}: an override is key=value, e.g. train.epochs=3")
    return applied


def _hydra_value(text: str) -> str:
    """`text` as one value of DVC's (Hydra's) override grammar: quoted unless it is a plain word."""
    if re.fullmatch(r"[A-Za-z0-9_./-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def apply_overrides(params_file: Path, overrides: list[str]) -> None:
    """What `dvc exp run -S key=value ...` does to params.yaml: DVC's own function, so the same
    grammar (Hydra's), the same type parsing and comments kept."""
    if not overrides:
        return
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides as dvc_apply_overrides

    try:
        dvc_apply_overrides(str(params_file), list(overrides))
    except DvcException as error:
        cause = " ".join(str(error.__cause__ or "").split()).split(" See https://")[0]  # Hydra's reason, one line
        raise UserError(f"overrides {' '.join(overrides)}: {error}{f' ({cause})' if cause else ''}") from None


def check_overrides(params_file: Path, overrides: list[str]) -> None:
    """Apply `overrides` to a copy of `params_file` and validate the result (one-line UserError)."""
    from resnet_mlops.config import load_params

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "params.yaml"
        shutil.copyfile(params_file, copy)
        apply_overrides(copy, overrides)
        try:
            load_params(copy)
        except UserError as error:
            raise UserError(str(error).replace(str(copy), f"{params_file.name} with {' '.join(overrides)}")) from None


@contextmanager
def overrides_applied(project: Path, overrides: list[str]) -> Iterator[None]:
    """params.yaml with `overrides` applied for the block, and kept when it succeeds (as `dvc exp run -S`
    keeps them in the workspace); restored byte for byte when the block fails, so that a bad override
    of one run never becomes the workspace's params for the next."""
    params_file = project / "params.yaml"
    before = params_file.read_bytes()
    try:
        try:
            apply_overrides(params_file, overrides)
        except UserError as error:
            raise StageFailed("params", str(error), user_error=True) from None
        yield
    except BaseException:
        if params_file.read_bytes() != before:
            params_file.write_bytes(before)
        raise


# -- one run at a time -------------------------------------------------------------------------------

@contextmanager
def workspace_lock(project: Path, holder: str) -> Iterator[Path]:
    """Hold an exclusive `flock` on <project>/.dvc/tmp/retrain.lock for the block, or fail at once.

    `flock` belongs to the open file, so it also excludes a second run in the same process, and the
    kernel releases it when the holder dies (no stale lock after a kill). The file names the holder.
    """
    if not (project / ".dvc").is_dir():
        raise StageFailed("lock", f"{project} is not a DVC project (no .dvc/): run `make run` there first")
    path = project / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            held_by = lock.read().strip() or "another process"
            raise StageFailed("lock", f"another retrain is running on {project} ({held_by}; lock {path}): "
                                      f"this run did not start") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{holder}, pid {os.getpid()}, since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC\n")
        lock.flush()
        try:
            yield path
        finally:
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# -- what a run records ------------------------------------------------------------------------------

def save_experiment(project: Path, name: str) -> str:
    """`dvc exp save -n <name>`: the completed run becomes an experiment `dvc exp show` lists.

    Why stages + `dvc exp save` rather than `dvc exp run -S ...`: `dvc exp run` is one command for
    the whole pipeline, so the flow would lose a task per stage (each stage's retries, its place in
    the progress artifact, the failing stage named in the flow run's state). DVC's `-S` code applies
    the overrides (`apply_overrides`), each stage runs as `dvc repro --single-item`, and `dvc exp
    save` then records exactly what `dvc exp run` records: params, dvc.lock, metrics and the outputs
    in DVC's cache, as a ref under the current commit. Returns the experiment's name, or why not.
    """
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "save", "--force", "-n", name], cwd=project,
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        return f"not saved ({lines[-1] if lines else f'dvc exp save exited with {done.returncode}'})"
    return name


def fail_mlflow_runs(project: Path, experiment: str, flow_run_id: str) -> list[str]:
    """Mark FAILED every MLflow run this flow run started (tag prefect.flow_run_id) that is not
    already: a later stage failing must not leave the execution's run FINISHED (or RUNNING, when a
    stage was killed). Runs of earlier executions are never touched. Returns the runs marked."""
    from mlflow.tracking import MlflowClient

    from resnet_mlops import project as where
    from resnet_mlops.tracking import FLOW_RUN_TAG

    client = MlflowClient(tracking_uri=where.tracking_uri(project))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    marked = []
    for run in client.search_runs([found.experiment_id], filter_string=f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'"):
        if run.info.status != "FAILED":
            client.set_terminated(run.info.run_id, status="FAILED")
            marked.append(run.info.run_id)
    return marked


def report_markdown(project: Path, flow_run_id: str, experiment_name: str, base: str) -> str:
    """The flow's markdown report: `base` (the pipeline's outcome, as `make run` prints it), the
    promotion gate's decision and numbers, links to the MLflow run and model version, the lineage."""
    from mlflow.tracking import MlflowClient

    from resnet_mlops import project as where
    from resnet_mlops.project import Layout

    layout = Layout(project)
    registration = json.loads(layout.registration.read_text())
    promotion = json.loads(layout.promotion.read_text())
    uri = where.tracking_uri(project)
    run_id = registration["run_id"]
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    tags = run.data.tags
    version_uri = f"models:/{registration['model_name']}/{registration['version']}"
    if uri.startswith(("http://", "https://")):
        run_link = f"[{run_id}]({uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id})"
        version_link = (f"[{version_uri}]({uri.rstrip('/')}/#/models/{registration['model_name']}"
                        f"/versions/{registration['version']})")
    else:
        run_link, version_link = f"`{run_id}` in `{uri}`", f"`{version_uri}`"

    def number(key: str) -> str:
        value = promotion.get(key)
        return "—" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))

    gate = [("decision", promotion.get("decision")), ("reason", promotion.get("reason")),
            *((key, number(key)) for key in ("p_value", "b", "c", "accuracy_delta", "champion_version"))]
    lineage = [("MLflow run", run_link), ("MLflow run id", f"`{run_id}`"), ("model version", version_link),
               ("git commit", f"`{tags.get('git.commit', 'unknown')}`"
                              f"{' (work tree changed)' if tags.get('git.dirty') == 'true' else ''}"),
               ("data (DVC hash of data/prepared)", f"`{tags.get('data.dvc_hash', 'unknown')}`"),
               ("data (content hash)", f"`{tags.get('data.content_hash', 'unknown')}`"),
               ("reproduce", f"`{tags.get('reproduce', 'unknown')}`"),
               ("DVC experiment", f"`{experiment_name}`"), ("Prefect flow run", f"`{flow_run_id}`")]
    table = lambda rows: "| | |\n|---|---|\n" + "".join(f"| {label} | {value} |\n" for label, value in rows)
    return (f"{base.rstrip()}\n\n## Promotion gate (reports/promotion.json)\n\n{table(gate)}"
            f"\n## Lineage\n\n{table(lineage)}")
