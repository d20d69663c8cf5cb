"""The real servers a team shares: MLflow on PostgreSQL (with and without the login) and Prefect.

- The whole pipeline (`dvc repro`) against an `mlflow server` whose store is a PostgreSQL database
  and whose artifacts are uploaded through it: the run, the registry and `@champion` are on the
  server, the rows in PostgreSQL, the artifacts in the server's folder, nothing in the repository.
- `mlflow server --app-name basic-auth`: no credentials, no answer; a read-only user reads the
  model but cannot move `@champion`, which the admin can.
- The Makefile's targets: `make postgres` (twice: the second only prints the DSN), `make
  mlflow-server` and `make prefect-server` (SQLite, then PostgreSQL) answer their health checks.

PostgreSQL comes from support/postgres.py: RESNET_MLOPS_TEST_POSTGRES's cluster (`.ci/run` starts
one), else a throwaway one; a fresh database per server.
"""

from __future__ import annotations

import configparser
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from support.mlflow_server import mlflow_server
from support.postgres import fresh_database, postgres_cluster, query, with_driver
from support.project_repo import PROJECT, make_project_repo, run
from support.served_model import free_port
from support.server_process import stop_group, wait_until_answers

pytestmark = pytest.mark.slow

VENV = Path(sys.prefix)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with postgres_cluster() as dsn:
        yield dsn


@pytest.fixture
def database(cluster) -> Iterator[str]:
    with fresh_database(cluster) as dsn:
        yield dsn


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


# ------------------------------------------------------------------ the pipeline on MLflow + PostgreSQL

def test_the_pipeline_logs_and_registers_on_an_mlflow_server_backed_by_postgresql(tmp_path, database, tiny_params):
    repo = make_project_repo(tmp_path / "repo", tiny_params)
    artifacts = tmp_path / "server-artifacts"
    with mlflow_server(tmp_path / "server", backend_store_uri=database, artifacts_destination=artifacts) as uri:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        done = run(["dvc", "repro"], repo, env=env)
        assert "Running stage 'register'" in done.stdout + done.stderr

        client = MlflowClient(tracking_uri=uri)
        run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
        experiment = client.get_experiment_by_name("tests")
        assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run_id]
        tracked = client.get_run(run_id)
        assert tracked.info.status == "FINISHED"
        assert tracked.info.artifact_uri.startswith("mlflow-artifacts:/")  # uploaded through the server
        champion = client.get_model_version_by_alias("tiny-digits", "champion")
        assert str(champion.version) == "1" and champion.run_id == run_id
        verdict = json.loads((repo / "reports/promotion.json").read_text())
        assert verdict["decision"] == "promoted" and verdict["servable"]
        # The project's own commands read the server's registry too.
        shown = run(["resnet-mlops", "champion", "--history"], repo, env=env).stdout
        assert shown.startswith("models:/tiny-digits@champion = v1 "), shown

    # The artifacts are in the server's folder, none in the repository (nor a local store).
    run_folder = artifacts / experiment.experiment_id / run_id / "artifacts"
    for logged in ("reports/metrics.json", "reports/promotion.json", "reports/model_card.md"):
        assert (run_folder / logged).is_file(), sorted(str(p.relative_to(artifacts)) for p in artifacts.rglob("*"))[:40]
    assert list(artifacts.rglob("MLmodel")), "no model's MLmodel in the server's artifact folder"
    assert not any((repo / name).exists() for name in ("mlflow.db", "mlartifacts", "mlruns"))

    # And the rows are really in PostgreSQL.
    assert query(database, "SELECT name FROM registered_models") == [("tiny-digits",)]
    assert query(database, "SELECT version, run_id FROM model_versions") == [(1, run_id)]
    assert sorted(query(database, "SELECT alias, version FROM registered_model_aliases")) == [
        ("challenger", 1), ("champion", 1)]
    assert query(database, "SELECT status FROM runs WHERE run_uuid = %s", (run_id,)) == [("FINISHED",)]


# ------------------------------------------------------------------------------------------ the login

@contextmanager
def credentials(username: str, password: str) -> Iterator[None]:
    """MLflow's clients in this process authenticate as `username` for the block."""
    before = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = username, password
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def denied(call) -> MlflowException:
    with pytest.raises(MlflowException) as raised:
        call()
    assert raised.value.get_http_status_code() == 403 and raised.value.error_code == "PERMISSION_DENIED", raised.value
    return raised.value


def test_the_login_keeps_out_strangers_and_read_only_users_cannot_move_the_champion(tmp_path, cluster, database):
    from mlflow.server import get_app_client

    admin_password, reader_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    with fresh_database(cluster, prefix="auth") as users:
        config = configparser.ConfigParser()
        config["mlflow"] = {"default_permission": "NO_PERMISSIONS", "database_uri": users,
                            "admin_username": "admin", "admin_password": admin_password,
                            "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
                            # A password check (PBKDF2) takes seconds on a busy 2-core machine: check once a minute.
                            "auth_cache_ttl_seconds": "60"}
        ini = tmp_path / "basic_auth.ini"
        with ini.open("w") as file:
            config.write(file)
        server_env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
        with mlflow_server(tmp_path / "server", workers=1, backend_store_uri=database,
                           artifacts_destination=tmp_path / "server-artifacts", app_name="basic-auth",
                           env=server_env) as uri:
            search = f"{uri}/api/2.0/mlflow/registered-models/search"
            assert status_of(f"{uri}/health") == 200  # the health check needs no login
            assert status_of(search) == 401  # no credentials
            wrong = b64encode(b"admin:not-the-password").decode()
            assert status_of(search, {"Authorization": f"Basic {wrong}"}) == 401

            client = MlflowClient(tracking_uri=uri)
            with credentials("admin", admin_password):
                experiment = client.create_experiment("guarded")
                sources = []
                for _ in range(2):
                    made = client.create_run(experiment)
                    client.log_text(made.info.run_id, "weights", "model/weights.txt")
                    client.set_terminated(made.info.run_id)
                    sources.append(made)
                client.create_registered_model("guarded")
                for made in sources:
                    client.create_model_version("guarded", f"{made.info.artifact_uri}/model", run_id=made.info.run_id)
                client.set_registered_model_alias("guarded", "champion", "1")
                users_api = get_app_client("basic-auth", tracking_uri=uri)
                users_api.create_user("reader", reader_password)
                users_api.grant_user_permission("reader", "registered_model", "guarded", "READ")
                users_api.create_user("stranger", reader_password)

            with credentials("reader", reader_password):
                assert client.get_registered_model("guarded").name == "guarded"
                assert str(client.get_model_version_by_alias("guarded", "champion").version) == "1"
                denied(lambda: client.set_registered_model_alias("guarded", "champion", "2"))
                denied(lambda: client.delete_registered_model_alias("guarded", "champion"))
                denied(lambda: client.set_registered_model_tag("guarded", "champion.history.000001", "forged"))
            with credentials("stranger", reader_password):
                denied(lambda: client.get_registered_model("guarded"))  # no grant, no read

            with credentials("admin", admin_password):
                assert str(client.get_model_version_by_alias("guarded", "champion").version) == "1"
                client.set_registered_model_alias("guarded", "champion", "2")
                assert str(client.get_model_version_by_alias("guarded", "champion").version) == "2"
                assert "champion.history.000001" not in client.get_registered_model("guarded").tags
        # The users live in their own PostgreSQL database.
        assert {name for (name,) in query(users, "SELECT username FROM users")} == {"admin", "reader", "stranger"}


# --------------------------------------------------------------------------------- the Makefile's targets

def make(*arguments: str) -> list[str]:
    """`make` in the project with the tests' environment as its VENV, never rebuilt (-o: taken as up to date)."""
    return ["make", "--no-print-directory", "-C", str(PROJECT), f"VENV={VENV}", "-o", f"{VENV}/.installed",
            *arguments]


@contextmanager
def background(command: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    """`command` running in its own process group for the block; SIGTERM to the group after (SIGKILL if need be)."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield process
    finally:
        stop_group(process, grace_s=20)


def wait_for(url: str, process: subprocess.Popen, log: Path, within_s: float = 120) -> bytes:
    return wait_until_answers(process, url, log, within_s, " ".join(map(str, process.args[:4])))


def test_make_postgres_starts_a_cluster_once_and_make_mlflow_server_runs_on_it(tmp_path):
    folder = Path(tempfile.mkdtemp(prefix="resnet-mlops-make-postgres-"))
    os.chmod(folder, 0o755)
    settings = [f"POSTGRES_DATA={folder / 'data'}", f"POSTGRES_PORT={free_port()}", "POSTGRES_DB=mlflow"]
    env = {**os.environ}
    env.pop("MLFLOW_TRACKING_URI", None)
    try:
        first = run(make("postgres", *settings), tmp_path, env=env)
        dsn = first.stdout.strip()
        assert dsn.startswith("postgresql+psycopg2://postgres@127.0.0.1:") and dsn.endswith("/mlflow"), first.stdout
        assert "creating a PostgreSQL" in first.stderr
        again = run(make("postgres", *settings), tmp_path, env=env)
        assert again.stdout.strip() == dsn and "creating" not in again.stderr and "runs on" not in again.stderr

        port, log = free_port(), tmp_path / "mlflow-server.log"
        artifacts = tmp_path / "artifacts"
        with background(make("mlflow-server", *settings, f"MLFLOW_PORT={port}",
                             f"MLFLOW_ARTIFACTS_DESTINATION={artifacts}", "MLFLOW_ARGS=--workers 1"), log, env) as server:
            assert wait_for(f"http://127.0.0.1:{port}/health", server, log) == b"OK"
            client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
            client.create_registered_model("made-by-make")
        assert query(dsn, "SELECT name FROM registered_models") == [("made-by-make",)]
    finally:
        subprocess.run(make("postgres-stop", *settings), capture_output=True, env=env, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_make_prefect_server_answers_its_health_check(tmp_path, cluster, store):
    port, log = free_port(), tmp_path / "prefect-server.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="false")
    with fresh_database(cluster, prefix="prefect") as database:
        if store == "postgresql":
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = with_driver(database, "asyncpg")
        with background(make("prefect-server", f"PREFECT_PORT={port}"), log, env) as server:
            assert wait_for(f"http://127.0.0.1:{port}/api/health", server, log, within_s=150) == b"true"
        if store == "sqlite":
            assert (tmp_path / "prefect-home" / "prefect.db").is_file()
        else:
            tables = {name for (name,) in query(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            assert {"flow", "flow_run", "deployment"} <= tables, sorted(tables)
