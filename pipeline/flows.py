"""The `retrain` Prefect flow: the four DVC stages as tasks.

Each task runs `dvc repro --single-item <stage>`, so DVC still decides what is
stale and writes dvc.lock exactly as a plain `dvc repro` would; the flow adds
retries, logging of each stage's summary, a progress artifact, a run report and the
link between the Prefect flow run and the MLflow run (through the
RESNET_MLOPS_FLOW_RUN_ID environment variable, which the train stage records as a tag).
The steps themselves (overrides, the workspace lock, the report, a failed run's
MLflow run) live in pipeline/steps.py; this module wires them.

Run it locally (Prefect's ephemeral API is enough):  .venv/bin/python -m pipeline.flows
Serve it on a schedule without a work pool:           .venv/bin/python -m pipeline.flows --serve
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from resnet_mlops import console

console.quiet_environment()  # before Prefect reads its settings: no telemetry attempts offline

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import (create_markdown_artifact, create_progress_artifact,  # noqa: E402
                               update_progress_artifact)
from prefect.runtime import flow_run  # noqa: E402
from prefect.tasks import exponential_backoff  # noqa: E402

from pipeline import deploy, steps  # noqa: E402
from pipeline.steps import StageFailed  # noqa: E402
from resnet_mlops.config import load_params  # noqa: E402
from resnet_mlops.errors import UserError  # noqa: E402
from resnet_mlops.project import Layout, path_with_this_environment  # noqa: E402
from resnet_mlops.run import markdown_report  # noqa: E402
from resnet_mlops.stages import STAGES, stage  # noqa: E402
from resnet_mlops.tracking import FLOW_RUN_ENV  # noqa: E402


def _one_line_reason(name: str, output: str) -> str:
    """The stage command's own one-line error (`resnet-mlops <stage>: error: ...`), else DVC's last ERROR."""
    ours = re.findall(rf"resnet-mlops {name}: error: (.+)", output)
    if ours:
        return ours[-1].strip()
    errors = [line.removeprefix("ERROR: ").strip() for line in output.splitlines() if line.startswith("ERROR")]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return (errors or lines or ["no output"])[-1]


def run_dvc_stage(name: str, project_dir: str, experiment_name: str = "") -> dict:
    """`dvc repro --single-item <name>`, then the stage's summary (read from its outputs)."""
    logger = get_run_logger()
    env = {**os.environ, FLOW_RUN_ENV: str(flow_run.id or ""), "PATH": path_with_this_environment()}
    if experiment_name:
        env["DVC_EXP_NAME"] = experiment_name  # recorded on the MLflow run as dvc.experiment
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", name], cwd=project_dir,
                          env=env, capture_output=True, text=True)
    logger.info("dvc repro --single-item %s\n%s", name, console.without_dvc_hints(done.stdout)[-4000:])
    if done.returncode != 0:
        logger.error("stage %s failed:\n%s", name, done.stderr[-4000:])
        status = re.findall(r"exited with (-?\d+)", done.stderr)
        raise StageFailed(name, _one_line_reason(name, done.stderr + "\n" + done.stdout),
                          int(status[-1]) if status else done.returncode)
    summary = stage(name).summary(Layout(Path(project_dir)))
    logger.info("%s summary: %s", name, json.dumps(summary, sort_keys=True))
    return summary


def transient(task, task_run, state) -> bool:
    """Retry a failed stage unless it failed for a user's mistake (exit status 2): no retry fixes that."""
    failure = state.data if isinstance(state.data, BaseException) else None
    return not (isinstance(failure, StageFailed) and failure.user_error)


# Transient failures (a lost device, a killed worker, a registry that did not answer) are retried with
# exponential backoff and jitter; training resumes from its checkpoint. Register retries once: it writes
# to the registry, which a retry must not do twice without need.
RETRIES = {"prepare": 2, "train": 2, "evaluate": 2, "register": 1}
TASKS = {name: task(run_dvc_stage, name=name, task_run_name=f"dvc repro {name}", retries=RETRIES[name],
                    retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_jitter_factor=0.5,
                    retry_condition_fn=transient)
         for name in STAGES}


@flow(name="retrain", log_prints=True)
def retrain(project_dir: str = ".", overrides: list[str] | None = None, model_name: str | None = None,
            epochs: int | None = None) -> dict:
    """prepare -> train -> evaluate -> register, each a DVC stage; returns every stage's summary.

    overrides: `key=value` as `dvc exp run -S` takes them; model_name and epochs are shortcuts for
    `register.model_name=` and `train.epochs=`. A completed run is saved as a DVC experiment.
    """
    project = Path(project_dir).resolve()
    run_id = str(flow_run.id or "local")
    experiment_name = f"retrain-{run_id[:8]}"
    try:
        applied = steps.parameters_of(overrides, model_name, epochs)
    except UserError as error:
        raise StageFailed("params", str(error), user_error=True) from None
    progress = create_progress_artifact(0.0, key="retrain-progress", description="retrain: starting")
    started: list[str] = []
    try:
        with steps.workspace_lock(project, f"flow run {run_id}"):
            summaries = _run_stages(project, applied, run_id, experiment_name, progress, started)
            saved = steps.save_experiment(project, experiment_name)
            base = markdown_report(Layout(project))
            try:
                report = steps.report_markdown(project, run_id, saved, base)
            except Exception as error:  # the run succeeded; a report without its lineage rows says why
                report = f"{base}\n\nlineage unavailable: {type(error).__name__}: {error}\n"
            create_markdown_artifact(key="retrain-report", markdown=report, description="Outcome of the retrain flow")
    except Exception as failure:
        step = failure.step if isinstance(failure, StageFailed) else (started[-1] if started else "retrain")
        update_progress_artifact(progress, 100.0 * max(len(started) - 1, 0) / len(TASKS),
                                 description=f"retrain: failed at {step}")
        raise
    return summaries


def _run_stages(project: Path, applied: list[str], run_id: str, experiment_name: str, progress, started: list) -> dict:
    """The overrides, then the four stage tasks in order; on a failure, params.yaml is put back and the
    execution's MLflow run marked FAILED."""
    with steps.overrides_applied(project, applied):
        params = None
        try:
            try:
                params = load_params(project / "params.yaml")  # bad params fail here, before any stage runs
            except UserError as error:
                raise StageFailed("params", str(error), user_error=True) from None
            summaries = {}
            for done, (name, run_stage) in enumerate(TASKS.items(), start=1):
                started.append(name)
                summaries[name] = run_stage(name, str(project), experiment_name)
                update_progress_artifact(progress, 100.0 * done / len(TASKS),
                                         description=f"retrain: {name} done ({done}/{len(TASKS)})")
        except Exception:
            if params is not None and set(started) - {"prepare"}:  # train started: its run must not stay FINISHED
                failed = steps.fail_mlflow_runs(project, params.experiment, run_id)
                if failed:
                    get_run_logger().info("marked MLflow run(s) %s FAILED", ", ".join(failed))
            raise
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.flows", description="run or serve the retrain flow")
    parser.add_argument("--project-dir", default=".", help="the DVC project to retrain (default: .)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a params override, as `dvc exp run -S` takes it (repeatable)")
    parser.add_argument("--serve", action="store_true",
                        help="serve it as deployment retrain/<name> on --cron until stopped (needs PREFECT_API_URL)")
    parser.add_argument("--cron", default=deploy.DEFAULT_CRON, help=f"with --serve (default: {deploy.DEFAULT_CRON!r})")
    parser.add_argument("--timezone", default=deploy.DEFAULT_TIMEZONE, help="with --serve (default: UTC)")
    parser.add_argument("--name", default=deploy.DEFAULT_NAME, help="with --serve (default: nightly)")
    args = parser.parse_args(argv)
    try:
        if args.serve:
            deploy.serve(args.project_dir, args.cron, args.timezone, args.name, args.overrides)
            return 0
        print(json.dumps(retrain(project_dir=args.project_dir, overrides=args.overrides), indent=2, sort_keys=True))
    except UserError as error:
        print(f"python -m pipeline.flows: error: {error}", file=sys.stderr)
        return 2
    except StageFailed as failure:
        print(f"python -m pipeline.flows: {failure}", file=sys.stderr)
        return 2 if failure.user_error else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
