"""`resnet-mlops deploy` and the scheduled `retrain` deployment, against a real `prefect server start`
and a real `mlflow server` on PostgreSQL: the operations side as a team runs it.

One server of each per module; every client (the deploy command, `prefect worker start --pool P
--run-once`, the flow runs it starts, this process) talks to Prefect through PREFECT_API_URL and
to MLflow through MLFLOW_TRACKING_URI, as on a team machine.
The project is a throw-away repository of the tiny params (a ResNet-8 for 2 epochs on the digits).
The tests run in order: the first run registers the champion that the later ones must leave alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from support.mlflow_server import mlflow_server
from support.postgres import fresh_database, postgres_cluster, query
from support.prefect_server import PREFECT, client_environment, prefect_server
from support.project_repo import PROJECT, TINY_PARAMS, make_project_repo, run
from support.server_process import stop_group

pytestmark = pytest.mark.slow

POOL = "resnet-mlops-tests"
DEPLOYMENT = "retrain/nightly"
OVERRIDES = ["train.batch_size=32"]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    tmp = tmp_path_factory.mktemp("prefect")
    with prefect_server(tmp / "server") as url, temporary_settings(updates={PREFECT_API_URL: url}):
        yield url


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    """The team's MLflow for the module: `mlflow server` on a fresh PostgreSQL database, artifacts
    proxied to a folder; yields its http URI (the database's DSN is `tracking.dsn`)."""
    tmp = tmp_path_factory.mktemp("mlflow")
    with postgres_cluster() as cluster, fresh_database(cluster, "deploy") as dsn, \
            mlflow_server(tmp, backend_store_uri=dsn, artifacts_destination=tmp / "artifacts") as uri:
        TRACKING["uri"], TRACKING["dsn"] = uri, dsn
        yield uri


TRACKING: dict[str, str] = {}  # the module's MLflow server and its database, once `tracking` started them


@pytest.fixture(scope="module")
def home(tmp_path_factory, tracking) -> Path:
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_project_repo(tmp_path_factory.mktemp("deployed") / "repo", TINY_PARAMS)


def environment(api: str, home: Path) -> dict[str, str]:
    return {**client_environment(api, home), "MLFLOW_TRACKING_URI": TRACKING["uri"]}


def cli(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "resnet-mlops"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def worker_run_once(api: str, home: Path, timeout: float = 300) -> str:
    done = subprocess.run([PREFECT, "worker", "start", "--pool", POOL, "--run-once"], cwd=home,
                          env=environment(api, home), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def client():
    from prefect import get_client

    return get_client(sync_client=True)


def wait_final(flow_run_id, timeout: float = 240):
    deadline = time.monotonic() + timeout
    with client() as prefect:
        while True:
            flow_run = prefect.read_flow_run(flow_run_id)
            if flow_run.state.is_final() or time.monotonic() > deadline:
                return flow_run
            time.sleep(0.5)


def champion_version(repo: Path) -> str:
    mlflow = MlflowClient(tracking_uri=TRACKING["uri"])
    return str(mlflow.get_model_version_by_alias("tiny-digits", "champion").version)


def test_deploy_needs_a_prefect_server_and_says_so_in_one_line(repo):
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API_URL")}
    done = cli(["deploy"], repo, {**env, "PREFECT_HOME": str(repo / ".no-prefect-home")})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "PREFECT_API_URL is not set" in done.stderr, done.stderr


def test_deploy_refuses_a_bad_cron_or_timezone_in_one_line(api, home, repo):
    for args, says in ((["--cron", "61 3 * * *"], "--cron '61 3 * * *': Invalid cron string"),
                       (["--timezone", "Mars/Olympus_Mons"], "--timezone 'Mars/Olympus_Mons': Invalid timezone")):
        done = cli(["deploy", *args], repo, environment(api, home))
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and says in done.stderr, done.stderr


def test_deploy_creates_then_updates_the_scheduled_deployment(api, home, repo):
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    first = cli(["deploy", "--pool", POOL, "--cron", "30 4 * * 1", "--paused"], repo, environment(api, home))
    assert first.returncode == 0, first.stdout + first.stderr
    with client() as prefect:
        created = prefect.read_deployment_by_name(DEPLOYMENT)
        assert prefect.read_work_pool(POOL).type == "process"  # created, since it was missing
    assert created.paused and created.schedules[0].schedule.cron == "30 4 * * 1"

    # Running it again updates the same deployment: any IANA timezone, overrides, shortcuts, unpaused.
    second = cli(["deploy", "--pool", POOL, "--timezone", "Europe/Paris", *(f"--set={o}" for o in OVERRIDES),
                  "--model-name", "tiny-digits", "--epochs", "2"], repo, environment(api, home))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "prefect worker start --pool " + POOL in second.stdout
    with client() as prefect:
        deployment = prefect.read_deployment_by_name(DEPLOYMENT)
    assert deployment.id == created.id
    (schedule,) = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == ("0 3 * * *", "Europe/Paris", True)
    assert not deployment.paused
    assert deployment.parameters == {"project_dir": str(repo.resolve()), "overrides": OVERRIDES,
                                     "model_name": "tiny-digits", "epochs": 2}
    assert deployment.work_pool_name == POOL and deployment.entrypoint == "pipeline/flows.py:retrain"
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE


def artifacts_of(flow_run_id) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with client() as prefect:
        found = prefect.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(
            any_=[flow_run_id])))
    return {artifact.key: artifact for artifact in found}


def test_a_run_triggered_through_the_api_is_executed_by_a_worker(api, home, repo):
    from prefect.deployments import run_deployment

    triggered = run_deployment(DEPLOYMENT, timeout=0)
    worker_run_once(api, home)
    flow_run = wait_final(triggered.id, timeout=30)
    assert flow_run.state.is_completed(), flow_run.state.message

    assert champion_version(repo) == "1"  # the first version of the name takes @champion
    assert not (repo / "mlflow.db").exists()  # everything went to the team's server, and into PostgreSQL:
    assert query(TRACKING["dsn"], "SELECT name, version FROM model_versions") == [("tiny-digits", 1)]
    mlflow = MlflowClient(tracking_uri=TRACKING["uri"])
    run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
    tracked = mlflow.get_run(run_id)
    assert tracked.data.tags["prefect.flow_run_id"] == str(flow_run.id)
    assert tracked.data.params["train.batch_size"] == "32"  # the deployment's override was applied
    experiment = f"retrain-{str(flow_run.id)[:8]}"
    assert tracked.data.tags["dvc.experiment"] == experiment

    artifacts = artifacts_of(flow_run.id)
    assert artifacts["retrain-progress"].type == "progress" and artifacts["retrain-progress"].data == 100
    report = artifacts["retrain-report"].data
    promotion = json.loads((repo / "reports/promotion.json").read_text())
    for expected in (run_id, "models:/tiny-digits/1", promotion["decision"], promotion["reason"], "p_value",
                     "champion_version", tracked.data.tags["git.commit"], tracked.data.tags["data.dvc_hash"],
                     str(flow_run.id), experiment):
        assert expected in report, (expected, report)

    # The run is an experiment DVC knows, with the override in its params.
    shown = run(["dvc", "exp", "show", "--json"], repo).stdout
    assert experiment in shown
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["batch_size"] == 32  # kept, as by -S


def test_a_bad_override_fails_the_run_at_its_stage_without_retries(api, home, repo):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    params_before = (repo / "params.yaml").read_bytes()
    champion_before = champion_version(repo)
    bad = ["data.source=folder", "data.path=data/raw/nowhere"]
    triggered = run_deployment(DEPLOYMENT, timeout=0, parameters={"overrides": bad})
    worker_run_once(api, home)
    flow_run = wait_final(triggered.id, timeout=30)

    assert flow_run.state.is_failed()
    message = flow_run.state.message or ""
    assert "stage prepare failed" in message and "data/raw/nowhere: no such file or folder" in message, message
    assert "not retried" in message
    with client() as prefect:
        tasks = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    (prepare,) = [t for t in tasks if t.name.startswith("dvc repro prepare")]
    assert prepare.run_count == 1  # a user's mistake (exit 2) is not retried, though prepare has retries
    assert not [t for t in tasks if t.name.startswith("dvc repro train")]  # nothing ran after it
    assert champion_version(repo) == champion_before
    mlflow = MlflowClient(tracking_uri=TRACKING["uri"])
    assert len(mlflow.search_model_versions("name = 'tiny-digits'")) == 1  # the registry is untouched
    assert (repo / "params.yaml").read_bytes() == params_before  # the bad override did not stay
    assert artifacts_of(flow_run.id)["retrain-progress"].data < 100


def test_a_run_that_fails_after_training_is_failed_in_prefect_and_in_mlflow(api, home, repo):
    """New data under the same model name: the digits at 16x16 train, then `register` refuses to rank
    them against the 8x8 champion. Prefect says which stage and why; the MLflow run is FAILED;
    @champion and the registry stay as they were."""
    from prefect.deployments import run_deployment

    champion_before = champion_version(repo)
    versions_before = len(MlflowClient(tracking_uri=TRACKING["uri"]).search_model_versions("name = 'tiny-digits'"))
    # `+`: a key the tiny params.yaml leaves out, as `dvc exp run -S +key=value` adds one
    triggered = run_deployment(DEPLOYMENT, timeout=0, parameters={"overrides": ["+data.image_size=16"]})
    worker_run_once(api, home)
    flow_run = wait_final(triggered.id, timeout=30)

    assert flow_run.state.is_failed()
    message = flow_run.state.message or ""
    assert "stage register failed" in message and "they cannot be compared on one test set" in message, message
    mlflow = MlflowClient(tracking_uri=TRACKING["uri"])
    (failed,) = mlflow.search_runs([mlflow.get_experiment_by_name("tests").experiment_id],
                                   f"tags.`prefect.flow_run_id` = '{flow_run.id}'")
    assert failed.info.status == "FAILED" and failed.data.params["data.image_size"] == "16"
    assert champion_version(repo) == champion_before
    assert len(mlflow.search_model_versions("name = 'tiny-digits'")) == versions_before


def test_two_runs_of_the_deployment_at_once_never_overlap(api, home, repo):
    from prefect.deployments import run_deployment

    runs = [run_deployment(DEPLOYMENT, timeout=0) for _ in range(2)]
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", POOL], cwd=home, env=environment(api, home),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        finished = [wait_final(flow_run.id, timeout=180) for flow_run in runs]
    finally:
        stop_group(worker, grace_s=30)  # on a busy machine the worker has taken over 30 s to exit on SIGTERM
    assert all(flow_run.state.is_completed() for flow_run in finished), [f.state for f in finished]
    first, second = sorted(finished, key=lambda flow_run: flow_run.start_time)
    assert first.end_time <= second.start_time, (first.start_time, first.end_time, second.start_time)
    assert champion_version(repo) == "1"  # nothing changed: every stage was up to date


def test_two_flow_runs_started_at_once_on_one_workspace_one_refuses(api, home, repo):
    """Runs that no deployment limits (two `python -m pipeline.flows`) meet the workspace lock."""
    env = environment(api, home)
    command = [sys.executable, "-m", "pipeline.flows", "--project-dir", str(repo)]
    started = [subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outcomes = [(process.wait(timeout=180), process.stderr.read()) for process in started]
    for process in started:
        process.stdout.close()
        process.stderr.close()
    assert sorted(status for status, _ in outcomes) == [0, 1], outcomes
    (refused,) = [err for status, err in outcomes if status]
    assert f"stage lock failed: another retrain is running on {repo.resolve()}" in refused, refused
    assert "this run did not start" in refused


def test_a_failed_execution_marks_its_mlflow_run_failed(tmp_path):
    """fail_mlflow_runs: the flow run's own runs become FAILED; another execution's run stays as it was."""
    from pipeline.steps import fail_mlflow_runs

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracking = MlflowClient(tracking_uri=uri)
    experiment = tracking.create_experiment("tests", artifact_location=(tmp_path / "mlartifacts").as_uri())
    ours = tracking.create_run(experiment, tags={"prefect.flow_run_id": "run-a"})
    theirs = tracking.create_run(experiment, tags={"prefect.flow_run_id": "run-b"})
    for created in (ours, theirs):
        tracking.set_terminated(created.info.run_id, status="FINISHED")
    previous = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        assert fail_mlflow_runs(tmp_path, "tests", "run-a") == [ours.info.run_id]
    finally:
        if previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    assert tracking.get_run(ours.info.run_id).info.status == "FAILED"
    assert tracking.get_run(theirs.info.run_id).info.status == "FINISHED"


def test_serving_the_flow_without_a_pool_leaves_its_schedule_active_when_stopped(api, home, repo):
    """`python -m pipeline.flows --serve`: flow.serve with pause_on_shutdown=False."""
    import signal

    from prefect.exceptions import ObjectNotFound

    command = [sys.executable, "-m", "pipeline.flows", "--serve", "--name", "served", "--project-dir", str(repo),
               "--cron", "15 2 * * *", "--timezone", "America/New_York"]
    served = subprocess.Popen(command, cwd=PROJECT, env=environment(api, home), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    deployment, deadline = None, time.monotonic() + 90
    try:
        with client() as prefect:
            while deployment is None and time.monotonic() < deadline and served.poll() is None:
                try:
                    deployment = prefect.read_deployment_by_name("retrain/served")
                except ObjectNotFound:
                    time.sleep(0.5)
    finally:
        os.killpg(served.pid, signal.SIGINT)
        try:
            served.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(served.pid, signal.SIGKILL)
            served.wait(timeout=30)
        errors = served.stderr.read()
        served.stderr.close()
    assert deployment is not None, errors[-3000:]
    assert deployment.parameters["project_dir"] == str(repo.resolve())
    with client() as prefect:
        stopped = prefect.read_deployment_by_name("retrain/served")
    (schedule,) = stopped.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("15 2 * * *", "America/New_York")
    assert schedule.active and not stopped.paused  # still scheduled after the process stopped
