"""The `retrain` flow as a scheduled Prefect deployment, and what each of its runs needs.

`resnet-mlops deploy` (`deploy()`) creates or updates the deployment `retrain/<name>` on a
process work pool (created when missing), with a cron schedule in any IANA timezone, the
workspace as `project_dir` and default `overrides`. A `prefect worker start --pool <pool>`
runs it; `python -m pipeline.flows --serve` (`serve()`) is the alternative without a pool.
Both need a Prefect server (`PREFECT_API_URL`): without one every process would start its
own temporary API and the deployment would vanish with it, so `deploy` refuses.

Never two runs on one workspace: the deployment has a concurrency limit of 1 (a second run
waits for the slot, Prefect's ENQUEUE strategy), and every run of the flow, from a deployment
or not, holds the workspace lock while it runs (pipeline/steps.py, with the overrides, the
experiment each run is saved as, and the report).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.steps import check_overrides, parameters_of
from resnet_mlops.errors import UserError

FLOW_ENTRYPOINT = "pipeline/flows.py:retrain"
CODE_DIR = Path(__file__).resolve().parents[1]  # the folder holding pipeline/flows.py: the deployment's source
DEFAULT_CRON = "0 3 * * *"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_POOL = "resnet-mlops"
DEFAULT_NAME = "nightly"


# -- deploying ---------------------------------------------------------------------------------------

def api_url() -> str:
    """The Prefect server every client must share; a one-line UserError when none is configured."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise UserError("PREFECT_API_URL is not set: start a Prefect server (`prefect server start`) and "
                        "`export PREFECT_API_URL=http://127.0.0.1:4200/api`; without it the deployment would "
                        "live in a temporary server that stops with this command")
    return url


def cron_schedule(cron: str, tz: str):
    """The schedule, validated by Prefect's own schema (croniter; IANA timezones); a one-line UserError."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron, timezone=tz)
    except ValidationError as error:
        problem = error.errors()[0]
        field = problem["loc"][0] if problem.get("loc") else "cron"
        message = str(problem["msg"]).removeprefix("Value error, ")
        option = "--timezone" if field == "timezone" else "--cron"
        raise UserError(f"{option} {tz if field == 'timezone' else cron!r}: {message}") from None
    return Cron(cron, timezone=tz)


def default_parameters(project: Path, overrides: list[str], model_name: str | None,
                       epochs: int | None) -> dict:
    parameters: dict = {"project_dir": str(project), "overrides": list(overrides)}
    if model_name:
        parameters["model_name"] = model_name
    if epochs is not None:
        parameters["epochs"] = epochs
    return parameters


def _ensure_process_pool(pool: str) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
            print(f"deploy: created the process work pool {pool!r}")
            return
    if existing.type != "process":
        raise UserError(f"--pool {pool}: that work pool runs {existing.type!r} jobs, not local processes; "
                        f"name another pool")


def deploy(project_dir: str | Path = ".", cron: str = DEFAULT_CRON, tz: str = DEFAULT_TIMEZONE,
           pool: str = DEFAULT_POOL, name: str = DEFAULT_NAME, overrides: list[str] | None = None,
           model_name: str | None = None, epochs: int | None = None, paused: bool = False) -> str:
    """Create or update the deployment `retrain/<name>`; returns its id. Every mistake is a UserError."""
    import httpx
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.flows import Flow

    project = Path(project_dir).resolve()
    url = api_url()
    schedule = cron_schedule(cron, tz)
    overrides = list(overrides or [])
    applied = parameters_of(overrides, model_name, epochs)
    if not (project / "params.yaml").is_file() or not (project / "dvc.yaml").is_file():
        raise UserError(f"{project} holds no params.yaml and dvc.yaml: run `resnet-mlops deploy` in the project")
    check_overrides(project / "params.yaml", applied)
    try:
        _ensure_process_pool(pool)
        retrain = Flow.from_source(source=str(CODE_DIR), entrypoint=FLOW_ENTRYPOINT)
        deployment_id = retrain.deploy(
            name=name, work_pool_name=pool, schedule=schedule, paused=paused,
            parameters=default_parameters(project, overrides, model_name, epochs),
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            description=f"prepare -> train -> evaluate -> register on {project}",
            tags=["resnet-mlops"], print_next_steps=False, ignore_warnings=True)
    except (httpx.HTTPError, OSError) as error:
        raise UserError(f"cannot reach the Prefect API at {url} ({error}); is `prefect server start` running?") \
            from None
    state = "paused" if paused else f"next runs at {cron} ({tz})"
    print(f"deploy: retrain/{name} on work pool {pool!r}: {state}; overrides: {' '.join(applied) or 'none'}\n"
          f"  run it with a worker:   prefect worker start --pool {pool}\n"
          f"  run it now:             prefect deployment run retrain/{name}")
    return str(deployment_id)


def serve(project_dir: str | Path = ".", cron: str = DEFAULT_CRON, tz: str = DEFAULT_TIMEZONE,
          name: str = DEFAULT_NAME, overrides: list[str] | None = None) -> None:
    """`flow.serve`: the same deployment without a work pool, run by this process until stopped.
    `pause_on_shutdown=False`: stopping the process leaves the schedule active for the next start."""
    from pipeline.flows import retrain

    project = Path(project_dir).resolve()
    api_url()
    check_overrides(project / "params.yaml", parameters_of(overrides))
    retrain.serve(name=name, schedule=cron_schedule(cron, tz), global_limit=1, pause_on_shutdown=False,
                  parameters=default_parameters(project, list(overrides or []), None, None))
