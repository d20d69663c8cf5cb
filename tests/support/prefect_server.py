"""A real `prefect server start` process for the tests of deployments, workers and schedules.

`prefect_test_harness` runs an API inside the test process; a deployment, though, is only real
when several processes (the `resnet-mlops deploy` command, a `prefect worker`, the flow run it
starts) share one server. `prefect_server(tmp)` starts `prefect server start` on a free port of
127.0.0.1 with its own PREFECT_HOME and SQLite database under `tmp`, waits until
`GET /api/health` answers, yields the API URL (`http://127.0.0.1:<port>/api`) and stops the
server (SIGTERM to its process group, then SIGKILL). Its output goes to `tmp/server.log`, which
a failing start quotes. `client_environment(url, home)` is the environment a client process
(CLI, worker) needs to talk to that server and nothing else.
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

PREFECT = str(Path(sys.executable).parent / "prefect")


def client_environment(api_url: str, home: Path, **extra: str) -> dict[str, str]:
    """os.environ for a process that must use the server at `api_url` (never a temporary one of its own)."""
    return {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1", "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "1", **extra}


@contextmanager
def prefect_server(tmp: Path, start_s: float = 90) -> Iterator[str]:
    """A `prefect server start` on SQLite under `tmp`, for the block; yields its API URL."""
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    environment = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
    environment.update({
        "PREFECT_HOME": str(tmp / "home"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # A run waiting for the deployment's concurrency slot is looked at again after 1 s, not 30.
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
    })
    log = tmp / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  stdout=output, stderr=subprocess.STDOUT, env=environment, start_new_session=True)
    try:
        wait_until_answers(server, f"{api}/health", log, start_s, "prefect server")
        yield api
    finally:
        stop_group(server)
