"""The `retrain` Prefect flow: the four DVC stages as tasks.

Each task runs `dvc repro --single-item <stage>`, so DVC still decides what is
stale and writes dvc.lock exactly as a plain `dvc repro` would; the flow adds
retries, logging of each stage's summary, a run report and the link between the
Prefect flow run and the MLflow run (through the RESNET_MLOPS_FLOW_RUN_ID
environment variable, which the train stage records as a tag).

Run it locally (Prefect's ephemeral API is enough):  .venv/bin/python -m pipeline.flows
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from resnet_mlops import console

console.quiet_environment()  # before Prefect reads its settings: no telemetry attempts offline

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from resnet_mlops.config import load_params  # noqa: E402
from resnet_mlops.data.prepared import read_summary  # noqa: E402
from resnet_mlops.project import Layout, path_with_this_environment  # noqa: E402
from resnet_mlops.tracking import FLOW_RUN_ENV  # noqa: E402


def stage_summary(stage: str, project_dir: Path) -> dict:
    """What the stage left behind, in a few numbers (read from its outputs)."""
    layout = Layout(project_dir)
    if stage == "prepare":
        return {name: split["count"] for name, split in read_summary(layout.prepared)["splits"].items()}
    if stage == "train":
        rows = layout.history.read_text().splitlines()
        header, last = rows[0].split(","), rows[-1].split(",")
        return {"run_id": json.loads(layout.run_file.read_text())["run_id"], **dict(zip(header, last))}
    if stage == "evaluate":
        return json.loads(layout.metrics.read_text())
    return json.loads(layout.registration.read_text())


def run_dvc_stage(stage: str, project_dir: str) -> dict:
    logger = get_run_logger()
    env = {**os.environ, FLOW_RUN_ENV: str(flow_run.id or ""), "PATH": path_with_this_environment()}
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=project_dir,
                          env=env, capture_output=True, text=True)
    logger.info("dvc repro --single-item %s\n%s", stage, console.without_dvc_hints(done.stdout)[-4000:])
    if done.returncode != 0:
        raise RuntimeError(f"stage {stage} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    summary = stage_summary(stage, Path(project_dir))
    logger.info("%s summary: %s", stage, json.dumps(summary, sort_keys=True))
    return summary


prepare_task = task(run_dvc_stage, name="prepare", task_run_name="dvc repro prepare")
train_task = task(run_dvc_stage, name="train", task_run_name="dvc repro train",
                  retries=2, retry_delay_seconds=5)
evaluate_task = task(run_dvc_stage, name="evaluate", task_run_name="dvc repro evaluate")
register_task = task(run_dvc_stage, name="register", task_run_name="dvc repro register")


@flow(name="retrain", log_prints=True)
def retrain(project_dir: str = ".") -> dict:
    """prepare -> train -> evaluate -> register, each a DVC stage; returns every stage's summary."""
    project = Path(project_dir).resolve()
    load_params(project / "params.yaml")  # bad params fail here, before any stage runs
    summaries = {
        "prepare": prepare_task("prepare", str(project)),
        "train": train_task("train", str(project)),
        "evaluate": evaluate_task("evaluate", str(project)),
        "register": register_task("register", str(project)),
    }
    registration = summaries["register"]
    create_markdown_artifact(
        key="retrain-report",
        markdown=(f"# retrain\n\n| | |\n|---|---|\n"
                  f"| test accuracy | {summaries['evaluate']['test_accuracy']:.4f} |\n"
                  f"| MLflow run | `{registration['run_id']}` |\n"
                  f"| registered | {registration['model_name']} v{registration['version']} |\n"
                  f"| @champion | {'yes' if registration['champion'] else 'no'}: {registration['reason']} |\n"),
        description="Outcome of the retrain flow",
    )
    return summaries


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2, sort_keys=True))
