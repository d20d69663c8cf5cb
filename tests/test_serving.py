"""The champion, as `make run` tells users to serve it: a real `mlflow models serve` process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest

from conftest import run

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture
def served_champion(project_repo):
    run(["dvc", "repro"], project_repo)
    uri = f"sqlite:///{project_repo.resolve()}/mlflow.db"
    port = free_port()
    server = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", "models:/tiny-digits@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=project_repo, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"server did not start:\n{server.stdout.read().decode()}")
                time.sleep(0.5)
        yield base, uri, project_repo
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_served_champion_answers_like_the_model_in_process(served_champion):
    base, uri, repo = served_champion
    images = np.load(repo / "data/prepared/test_images.npy")[:16]
    status, body = post(f"{base}/invocations", json.dumps({"inputs": images.tolist()}).encode())
    assert status == 200
    served = body["predictions"]

    mlflow.set_tracking_uri(uri)
    local = mlflow.pyfunc.load_model("models:/tiny-digits@champion").predict(images)
    assert [p["label"] for p in served] == local["label"].tolist()
    assert np.allclose([p["probabilities"] for p in served], np.stack(local["probabilities"]), atol=1e-5)

    status, _ = post(f"{base}/invocations", b"{not json")
    assert 400 <= status < 500
    status, _ = post(f"{base}/invocations", json.dumps({"inputs": images[:1].tolist()}).encode())
    assert status == 200  # the bad request did not take the server down
