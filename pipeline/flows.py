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
from resnet_mlops.project import Layout, path_with_this_environment  # noqa: E402
from resnet_mlops.run import markdown_report  # noqa: E402
from resnet_mlops.stages import STAGES, stage  # noqa: E402
from resnet_mlops.tracking import FLOW_RUN_ENV  # noqa: E402


def run_dvc_stage(name: str, project_dir: str) -> dict:
    """`dvc repro --single-item <name>`, then the stage's summary (read from its outputs)."""
    logger = get_run_logger()
    env = {**os.environ, FLOW_RUN_ENV: str(flow_run.id or ""), "PATH": path_with_this_environment()}
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", name], cwd=project_dir,
                          env=env, capture_output=True, text=True)
    logger.info("dvc repro --single-item %s\n%s", name, console.without_dvc_hints(done.stdout)[-4000:])
    if done.returncode != 0:
        raise RuntimeError(f"stage {name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    summary = stage(name).summary(Layout(Path(project_dir)))
    logger.info("%s summary: %s", name, json.dumps(summary, sort_keys=True))
    return summary


# Training is the stage worth retrying: a lost device or a killed worker resumes from its checkpoint.
RETRIES = {"train": 2}
TASKS = {name: task(run_dvc_stage, name=name, task_run_name=f"dvc repro {name}",
                    retries=RETRIES.get(name, 0), retry_delay_seconds=5) for name in STAGES}


@flow(name="retrain", log_prints=True)
def retrain(project_dir: str = ".") -> dict:
    """prepare -> train -> evaluate -> register, each a DVC stage; returns every stage's summary."""
    project = Path(project_dir).resolve()
    load_params(project / "params.yaml")  # bad params fail here, before any stage runs
    summaries = {name: run_stage(name, str(project)) for name, run_stage in TASKS.items()}
    create_markdown_artifact(key="retrain-report", markdown=markdown_report(Layout(project)),
                             description="Outcome of the retrain flow")
    return summaries


if __name__ == "__main__":
    print(json.dumps(retrain(), indent=2, sort_keys=True))
