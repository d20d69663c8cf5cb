"""A real `mlflow server` process for the tests that need what a remote registry does.

Some behaviour exists only behind the REST API: several processes writing one registry through
one server, HTTP retries, errors that come back as JSON. `mlflow_server(tmp)` starts
`python -m mlflow server` on a free port of 127.0.0.1, with its own SQLite store and artifact
folder under `tmp`, waits until `GET /health` answers, yields the http URI and stops the server
(SIGTERM, then SIGKILL when it does not stop within seconds). The server's output goes to
`tmp/server.log`, which a failing start quotes.

A team's server (tests/test_servers.py) differs in what the keywords say: `backend_store_uri` (e.g.
a PostgreSQL DSN from support/postgres.py) instead of the SQLite file, `artifacts_destination`: the
artifacts uploaded and downloaded through the server (`--artifacts-destination`, runs' artifact URIs
`mlflow-artifacts:/...`) instead of written by the clients into a folder they name, `app_name`
(`basic-auth`: the login) and `env`: more environment for the server process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from support.served_model import free_port
from support.server_process import stop_group, wait_until_answers


@contextmanager
def mlflow_server(tmp: Path, workers: int = 2, port: int | None = None, start_s: float = 90, *,
                  backend_store_uri: str | None = None, artifacts_destination: Path | None = None,
                  app_name: str | None = None, env: dict[str, str] | None = None) -> Iterator[str]:
    """An `mlflow server` on SQLite under `tmp` (or `backend_store_uri`), for the block; yields its
    `http://127.0.0.1:<port>`.

    `workers` > 1 makes the writers really concurrent: separate processes on one SQLite file, as a
    team server on one database is. `port`: one the caller chose (default: a free one).
    `artifacts_destination`: a folder the server keeps the artifacts in, uploaded through it
    (default: the clients write into `tmp/artifacts` themselves). `app_name`: `--app-name`.
    `env`: set in the server's environment besides the tests' own.
    """
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", backend_store_uri or f"sqlite:///{tmp / 'mlflow.db'}", "--workers", str(workers)]
    if artifacts_destination is None:
        command += ["--default-artifact-root", (tmp / "artifacts").as_uri()]
    else:
        command += ["--serve-artifacts", "--artifacts-destination", str(artifacts_destination)]
    if app_name:
        command += ["--app-name", app_name]
    environment = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", **(env or {})}
    environment.pop("MLFLOW_TRACKING_URI", None)
    log = tmp / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment,
                                  start_new_session=True)
    try:
        wait_until_answers(server, f"{uri}/health", log, start_s, "mlflow server")
        yield uri
    finally:
        stop_group(server)
