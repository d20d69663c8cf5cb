"""A real `mlflow server` process for the tests that need what a remote registry does.

Some behaviour exists only behind the REST API: several processes writing one registry through
one server, HTTP retries, errors that come back as JSON. `mlflow_server(tmp)` starts
`python -m mlflow server` on a free port of 127.0.0.1, with its own SQLite store and artifact
folder under `tmp`, waits until `GET /health` answers, yields the http URI and stops the server
(SIGTERM, then SIGKILL when it does not stop within seconds). The server's output goes to
`tmp/server.log`, which a failing start quotes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from support.served_model import free_port


@contextmanager
def mlflow_server(tmp: Path, workers: int = 2, port: int | None = None, start_s: float = 90) -> Iterator[str]:
    """An `mlflow server` on SQLite under `tmp`, for the block; yields its `http://127.0.0.1:<port>`.

    `workers` > 1 makes the writers really concurrent: separate processes on one SQLite file, as a
    team server on one database is. `port`: one the caller chose (default: a free one).
    """
    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
               "--default-artifact-root", (tmp / "artifacts").as_uri(), "--workers", str(workers)]
    environment = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    log = tmp / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment,
                                  start_new_session=True)
    try:
        _wait_until_healthy(server, uri, log, start_s)
        yield uri
    finally:
        _stop(server)


def _wait_until_healthy(server: subprocess.Popen, uri: str, log: Path, start_s: float) -> None:
    deadline = time.monotonic() + start_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode} before answering:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mlflow server at {uri} did not answer /health within {start_s:.0f} s:\n"
                       f"{log.read_text(errors='replace')[-3000:]}")


def _stop(server: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM to the server's process group (uvicorn's workers are its children), SIGKILL if needed."""
    import signal

    if server.poll() is not None:
        return
    try:
        os.killpg(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        server.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait(timeout=grace_s)
