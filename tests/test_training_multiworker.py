"""Multi-worker training from TF_CONFIG: two real worker processes on 127.0.0.1 (CPU)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from support.project_repo import TINY_PARAMS, copy_project, run

pytestmark = pytest.mark.slow


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


# Both workers together take under a minute on 2 cores; a worker whose peer is gone waits forever.
TRAINING_S = 300


def wait_for_all_or_a_failure(processes: list[subprocess.Popen], timeout_s: float) -> None:
    """Return once every process has exited, one has failed (its peers would wait for it forever),
    or `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        codes = [process.poll() for process in processes]
        if None not in codes or any(code not in (None, 0) for code in codes):
            return
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    """SIGKILL the process's whole session (TensorFlow's threads and any child) if it still runs."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def test_two_workers_train_in_sync_and_only_the_chief_tracks(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    chief = copy_project(tmp_path / "chief", {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "batch_size": 32}})
    run(["resnet-mlops", "prepare"], chief)
    worker = tmp_path / "worker"
    shutil.copytree(chief, worker)

    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes, logs = [], [tmp_path / "chief.log", tmp_path / "worker.log"]
    try:
        for index, (folder, log) in enumerate(zip((chief, worker), logs)):
            config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            with log.open("wb") as out:  # a file, not a pipe: nobody reads it while both run
                processes.append(subprocess.Popen(["resnet-mlops", "train"], cwd=folder, stdout=out,
                                                  stderr=subprocess.STDOUT, start_new_session=True,
                                                  env={**os.environ, "TF_CONFIG": config}))
        wait_for_all_or_a_failure(processes, timeout_s=TRAINING_S)
    finally:
        for process in processes:
            stop(process)
    outputs = [log.read_text(errors="replace") for log in logs]
    for name, process, output in zip(("chief", "worker"), processes, outputs):
        assert process.returncode == 0, f"{name}: exit {process.returncode} (negative: killed by the test)\n{output}"
    assert "MultiWorkerMirroredStrategy, worker 0 of 2" in outputs[0]
    assert "MultiWorkerMirroredStrategy, worker 1 of 2" in outputs[1]

    from resnet_mlops.models.saving import load_model

    first, second = (load_model(folder / "models/model.keras").get_weights() for folder in (chief, worker))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))  # moving statistics included
    saved = load_model(chief / "models/model.keras")
    assert not any(getattr(layer, "synchronized", False) for layer in saved._flatten_layers())  # portable
    assert (chief / "models/run.json").exists() and (chief / "mlflow.db").exists()
    assert not (worker / "models/run.json").exists() and not (worker / "mlflow.db").exists()
