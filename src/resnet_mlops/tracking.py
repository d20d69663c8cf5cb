"""The MLflow run of one pipeline execution, and the lineage tags it carries.

DVC runs each stage as its own process. `train` opens the run and records its id
in models/run.json (a DVC output); `evaluate` and `register` declare that file as
a dependency and reopen the same run, so one execution is one MLflow run and no
stage leaves an orphan.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
import yaml

from resnet_mlops import atomic, project
from resnet_mlops.config import flatten
from resnet_mlops.errors import UserError

# Set by the Prefect flow on the `dvc repro` it starts, so runs link back to the flow run.
FLOW_RUN_ENV = "RESNET_MLOPS_FLOW_RUN_ID"
FLOW_RUN_TAG = "prefect.flow_run_id"


def configure() -> str:
    uri = project.tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def experiment_id(name: str) -> str:
    """The experiment's id, creating it when it is new.

    In the project's own store its artifacts go to `<repo>/mlartifacts/`; a tracking
    server keeps them where it is configured to. (Whether the store is the project's
    is read from the URI itself: `mlflow.set_tracking_uri` also sets
    MLFLOW_TRACKING_URI, so the environment cannot tell.)
    """
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    own_store = mlflow.get_tracking_uri() == project.default_tracking_uri()
    return mlflow.create_experiment(name, artifact_location=project.artifact_root() if own_store else None)


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


def _changed_files() -> list[str]:
    """Tracked files that differ from HEAD, less those DVC itself writes (dvc.lock, outputs, .gitignore)."""
    changed = (_git("diff", "--name-only", "--no-renames", "HEAD") or "").splitlines()
    written_by_dvc = {"dvc.lock", *_pipeline_outputs()}
    return [path for path in changed if path not in written_by_dvc and Path(path).name != ".gitignore"]


def _pipeline_outputs(dvc_file: str = "dvc.yaml") -> list[str]:
    try:
        stages = (yaml.safe_load(Path(dvc_file).read_text()) or {}).get("stages", {})
    except (OSError, yaml.YAMLError):
        return []
    return [next(iter(out)) if isinstance(out, dict) else out
            for stage in stages.values() for kind in ("outs", "metrics", "plots") for out in stage.get(kind, [])]


def _param_overrides(commit: str) -> list[str] | None:
    """`-S key=value` for every param whose value differs from the commit's params.yaml.

    None when `-S` cannot express the difference (a key removed, or no params.yaml at
    the commit).
    """
    committed = _git("show", f"{commit}:params.yaml")
    try:
        now = flatten(yaml.safe_load(Path("params.yaml").read_text()) or {})
        then = flatten(yaml.safe_load(committed) or {}) if committed is not None else None
    except (OSError, yaml.YAMLError):
        return None
    if then is None or set(then) - set(now):
        return None
    return [f"{key}={_yaml_scalar(value)}" for key, value in sorted(now.items()) if then.get(key, object()) != value]


def _yaml_scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("\n...").strip()


def git_state() -> dict[str, str]:
    """The commit, whether the work tree differs from it, and the command that rebuilds this run.

    A run from `dvc exp run` (or from a work tree whose only change is params.yaml)
    is rebuilt by checking the commit out and running the same `-S` overrides; a run
    with other uncommitted changes cannot be rebuilt from git, and says which files.
    """
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "none", "git.dirty": "unknown"}
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    tags = {"git.commit": commit, "git.dirty": str(bool(dirty)).lower()}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.experiment"] = os.environ["DVC_EXP_NAME"]
    others = [path for path in _changed_files() if path != "params.yaml"]
    overrides = _param_overrides(commit)
    if others or overrides is None:
        reason = (f"uncommitted changes to {', '.join(others[:5])}{' ...' if len(others) > 5 else ''}" if others
                  else "params.yaml removes keys the commit has")
        tags["reproduce"] = f"not reproducible from git: {reason} (commit them, then run again)"
        return tags
    run = "dvc exp run " + " ".join(f"-S {shlex.quote(o)}" for o in overrides) if overrides else "dvc repro"
    tags["reproduce"] = f"git checkout {commit} && dvc checkout && {run}"
    return tags


def run_name(model: str, options: dict, source: str) -> str:
    """What the MLflow runs list shows for a run: the params that differ from the commit (as `dvc exp
    run -S` would set them), the model and the data, so that runs differ at a glance. The changed
    params come first: the runs list cuts names at about 25 characters.
    e.g. `train.epochs=3 · resnet_cifar(depth=8) · digits`."""
    commit = _git("rev-parse", "HEAD")
    changed = (_param_overrides(commit) if commit else None) or []
    shown = changed[:3] + ([f"+{len(changed) - 3} more"] if len(changed) > 3 else [])
    arguments = ", ".join(f"{key}={value}" for key, value in sorted(options.items()))
    return " · ".join([*shown, f"{model}({arguments})" if arguments else model, source])


def dvc_output_hash(output: str, lock_file: str | Path = "dvc.lock") -> str | None:
    """The hash dvc.lock records for a stage output, e.g. 'data/prepared' -> 'ab12...dir'."""
    try:
        lock = yaml.safe_load(Path(lock_file).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    for stage in lock.get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == output:
                return out.get("md5") or out.get("hash")
    return None


def _lineage_tags(data_summary: dict, dvc_hash: str | None) -> dict[str, str]:
    tags = {**git_state(), "data.content_hash": data_summary["content_hash"],
            "data.source": data_summary["source"], "data.dvc_hash": dvc_hash or "unknown"}
    flow_run = os.environ.get(FLOW_RUN_ENV)
    if flow_run:
        tags[FLOW_RUN_TAG] = flow_run
    return tags


def log_lineage(prepared_dir: str, data_summary: dict) -> None:
    """Tag the active run with its lineage and record data/prepared as its training dataset.

    The dataset is identified by its DVC hash (from dvc.lock), or by the content hash of
    the prepared splits when the stage ran outside DVC.
    """
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    dvc_hash = dvc_output_hash(prepared_dir)
    mlflow.set_tags(_lineage_tags(data_summary, dvc_hash))
    # Named by type: resolving the URI finds two equal "local" sources (MLflow registers one
    # per URI scheme of its local artifact repository) and warns that it had to choose.
    source = get_dataset_source_from_json(json.dumps({"uri": Path(prepared_dir).resolve().as_uri()}), "local")
    digest = (dvc_hash or data_summary["content_hash"])[:36]  # MLflow stores at most 36 characters
    mlflow.log_input(MetaDataset(source, name=f"prepared-{data_summary['source']}", digest=digest),
                     context="training")


@contextmanager
def new_run(experiment: str, run_file: Path, run_name: str | None = None, resume_run_id: str | None = None,
            log_system_metrics: bool = False) -> Iterator[mlflow.ActiveRun]:
    """Open the execution's run (or continue `resume_run_id`, a killed attempt's) and yield it.

    run_file (the run's id, experiment and store) is written only once the body succeeded.
    """
    configure()
    if resume_run_id and not _run_exists(resume_run_id):
        resume_run_id = None
    start = ({"run_id": resume_run_id} if resume_run_id else
             {"experiment_id": experiment_id(experiment), "run_name": run_name})
    with mlflow.start_run(**start, log_system_metrics=log_system_metrics) as run:
        record = {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                  "tracking_uri": mlflow.get_tracking_uri()}
        yield run
        atomic.write_json(run_file, record)


def _run_exists(run_id: str) -> bool:
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def requirements() -> list[str]:
    """Pins of what the logged models need, read from this environment."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in ("keras", "tensorflow-cpu", "tensorflow", "mlflow", "numpy", "pandas", "pillow", "simplejpeg"):
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pins


def read_run_file(run_file: Path) -> dict:
    try:
        return json.loads(Path(run_file).read_text())
    except OSError:
        raise UserError(f"{run_file} is missing; run the train stage first (`dvc repro train`)") from None


@contextmanager
def reopen_run(run_file: Path) -> Iterator[mlflow.ActiveRun]:
    """Continue the run that `train` opened in this pipeline execution."""
    configure()
    run_id = read_run_file(run_file)["run_id"]
    if not _run_exists(run_id):
        raise UserError(f"{run_file} names MLflow run {run_id}, which the store at "
                        f"{mlflow.get_tracking_uri()} does not have") from None
    with mlflow.start_run(run_id=run_id) as run:
        yield run
