"""PostgreSQL for the tests of the real servers: the store a team's MLflow (and Prefect) server runs on.

`postgres_cluster()` yields the DSN of a cluster the tests may create databases in:
- `RESNET_MLOPS_TEST_POSTGRES` when it is set (`.ci/run` starts a cluster with `.ci/postgres start`
  and sets it to that cluster's DSN), checked by connecting to it;
- else a throwaway cluster that `.ci/postgres` (the script behind `make postgres`) starts for the
  block: its own folder under /tmp, a free port, no fsync; stopped and removed after.
`fresh_database(cluster_dsn)` yields the DSN of a new, empty database in it, dropped after.
DSNs are SQLAlchemy's, `postgresql+psycopg2://postgres@127.0.0.1:<port>/<database>`, as MLflow takes
them (SQLAlchemy 2.1 reads a plain `postgresql://` as psycopg 3, which the lock does not hold).

When neither way gives a cluster the test fails and says why: never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest
from sqlalchemy.engine import make_url

from support.project_repo import PROJECT
from support.served_model import free_port

ENV = "RESNET_MLOPS_TEST_POSTGRES"
SCRIPT = PROJECT / ".ci" / "postgres"


def libpq_dsn(dsn: str, database: str | None = None) -> str:
    """The SQLAlchemy DSN as libpq (and so psycopg2.connect) reads it: no `+driver`; another database."""
    url = make_url(dsn).set(drivername="postgresql")
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def with_driver(dsn: str, driver: str) -> str:
    """The same database for another SQLAlchemy driver, e.g. `asyncpg` for Prefect."""
    return make_url(dsn).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def connect(dsn: str):
    import psycopg2

    return psycopg2.connect(libpq_dsn(dsn), connect_timeout=10)


def query(dsn: str, sql: str, parameters: tuple = ()) -> list[tuple]:
    with connect(dsn) as connection, connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall()
    connection.close()
    return rows


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """A cluster's DSN for the block: RESNET_MLOPS_TEST_POSTGRES's, else a throwaway cluster's."""
    given = os.environ.get(ENV)
    if given:
        try:
            query(given, "SELECT 1")
        except Exception as error:  # noqa: BLE001 - the reason goes into the failure
            pytest.fail(f"{ENV}={given} is set, but PostgreSQL does not answer there: {error}", pytrace=False)
        yield given
        return
    folder = tempfile.mkdtemp(prefix="resnet-mlops-postgres-")
    os.chmod(folder, 0o755)  # the cluster's owner (`postgres`, when the tests run as root) must reach it
    settings = {**os.environ, "POSTGRES_DATA": os.path.join(folder, "data"), "POSTGRES_PORT": str(free_port()),
                "POSTGRES_DB": "tests", "POSTGRES_NO_FSYNC": "1"}
    try:
        started = subprocess.run(["bash", str(SCRIPT), "start"], env=settings, capture_output=True, text=True,
                                 timeout=600)
        if started.returncode != 0:
            pytest.fail(f"no PostgreSQL for the tests: {ENV} is not set and `.ci/postgres start` failed "
                        f"({started.returncode}):\n{started.stderr[-3000:]}\nInstall PostgreSQL 15 (initdb, "
                        f"pg_ctl), or set {ENV} to a cluster's postgresql+psycopg2://USER@HOST:PORT/DB",
                        pytrace=False)
        yield started.stdout.strip()
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=settings, capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def fresh_database(cluster_dsn: str, prefix: str = "test") -> Iterator[str]:
    """A new, empty database in the cluster for the block (dropped after, even with clients still on it)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = connect(cluster_dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield make_url(cluster_dsn).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
