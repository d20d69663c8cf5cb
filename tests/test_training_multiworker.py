"""Multi-worker training from TF_CONFIG: two real worker processes on 127.0.0.1 (CPU)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import numpy as np
import pytest

from conftest import TINY_PARAMS, copy_project, run

pytestmark = pytest.mark.slow


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_train_in_sync_and_only_the_chief_tracks(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    chief = copy_project(tmp_path / "chief", {**TINY_PARAMS, "train": {**TINY_PARAMS["train"], "batch_size": 32}})
    run(["resnet-mlops", "prepare"], chief)
    worker = tmp_path / "worker"
    shutil.copytree(chief, worker)

    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = []
    for index, folder in enumerate((chief, worker)):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(["resnet-mlops", "train"], cwd=folder, text=True,
                                          env={**os.environ, "TF_CONFIG": config},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output
    assert "MultiWorkerMirroredStrategy, worker 0 of 2" in outputs[0]
    assert "MultiWorkerMirroredStrategy, worker 1 of 2" in outputs[1]

    from resnet_mlops.models.saving import load_model

    first, second = (load_model(folder / "models/model.keras").get_weights() for folder in (chief, worker))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))  # moving statistics included
    saved = load_model(chief / "models/model.keras")
    assert not any(getattr(layer, "synchronized", False) for layer in saved._flatten_layers())  # portable
    assert (chief / "models/run.json").exists() and (chief / "mlflow.db").exists()
    assert not (worker / "models/run.json").exists() and not (worker / "mlflow.db").exists()
