"""The Prefect `retrain` flow under a real (temporary) Prefect API, against plain `dvc repro`."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from support.console import unactivated_path
from support.project_repo import make_project_repo, outputs_of, run, write_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def prefect_api():
    # Starting the temporary API server takes ~20 s: once per test session.
    with prefect_test_harness(server_startup_timeout=120):
        yield


def lock_shape(repo) -> dict:
    """dvc.lock without the hashes that legitimately differ between two trainings."""
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    shape = {}
    for name, stage in stages.items():
        shape[name] = {
            "cmd": stage["cmd"],
            "deps": sorted((d["path"], d.get("md5")) for d in stage.get("deps", [])
                           if not d["path"].startswith(("models/", "reports/"))),
            "params": stage.get("params"),
            "outs": sorted(o["path"] for o in stage.get("outs", [])),
        }
    return shape


def test_retrain_flow_matches_dvc_repro(prefect_api, reproduced_repo, tmp_path, tiny_params, monkeypatch):
    from pipeline.flows import retrain

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    by_flow = make_project_repo(tmp_path / "flow", tiny_params)
    by_dvc = reproduced_repo  # the same project and params, after a plain `dvc repro`

    with monkeypatch.context() as unactivated:  # `.venv/bin/python -m pipeline.flows` from a plain shell
        unactivated.setenv("PATH", unactivated_path())
        state = retrain(project_dir=str(by_flow), return_state=True)
    assert state.is_completed()
    summaries = state.result()
    assert list(summaries) == ["prepare", "train", "evaluate", "register"]
    prepared = json.loads((by_flow / "data/prepared/summary.json").read_text())
    assert summaries["prepare"] == {"splits": {name: split["count"] for name, split in prepared["splits"].items()},
                                    "image_shape": [8, 8, 1], "content_hash": prepared["content_hash"]}
    assert sum(summaries["prepare"]["splits"].values()) == 1797
    run_id = json.loads((by_flow / "models/run.json").read_text())["run_id"]
    assert summaries["train"]["run_id"] == run_id and summaries["train"]["epochs"] == 2
    assert summaries["register"]["version"] == 1 and summaries["register"]["champion"] is True

    assert lock_shape(by_flow) == lock_shape(by_dvc)
    prepared_outs = lambda repo: yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]["outs"]
    assert prepared_outs(by_flow) == prepared_outs(by_dvc)  # the same data, byte for byte
    assert "up to date" in run(["dvc", "status"], by_flow).stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{by_flow.resolve()}/mlflow.db")
    assert client.get_run(run_id).data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)

    # A stage that fails (prepare, or train after a good prepare) fails the flow run, and the last
    # good outputs stay in place.
    good = outputs_of(by_flow)
    mistakes = {"data": ({"source": "folder", "path": "data/raw/nowhere"}, "data/raw/nowhere: no such file or folder"),
                "train": ({"epochs": -1}, "params.yaml: train.epochs:")}
    for section, (values, says) in mistakes.items():
        write_params(by_flow, {**tiny_params, section: {**tiny_params[section], **values}})
        failed = retrain(project_dir=str(by_flow), return_state=True)
        assert failed.is_failed() and says in str(failed.message or "") + str(failed.result(raise_on_failure=False))
        assert outputs_of(by_flow) == good


def kill_training_after_first_checkpoint(repo: Path, killed: list, stop: threading.Event) -> None:
    """Watch `repo`; SIGKILL its `resnet-mlops train` process once epoch 1 is checkpointed (unless `stop`
    is set first: the flow ended without one)."""
    checkpoint = repo / "models/checkpoints/epoch-0001"
    while not checkpoint.exists():
        if stop.wait(0.02):
            return
    for process in psutil.process_iter(["cmdline", "cwd"]):
        command = " ".join(process.info["cmdline"] or [])
        if "resnet-mlops train" in command and process.info["cwd"] == str(repo):
            process.kill()
            killed.append(process.pid)


def test_a_retried_training_task_resumes_from_its_checkpoint(prefect_api, tmp_path, tiny_params, monkeypatch):
    from pipeline.flows import retrain

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny_params["data"]["image_size"] = 16
    tiny_params["train"].update(epochs=4, batch_size=32)
    repo = make_project_repo(tmp_path / "killed", tiny_params)
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=kill_training_after_first_checkpoint, args=(repo.resolve(), killed, stop),
                               daemon=True)
    watcher.start()
    try:
        state = retrain(project_dir=str(repo), return_state=True)
    finally:
        stop.set()
        watcher.join(timeout=60)
    assert not watcher.is_alive(), "the watcher still scans for the training process 60 s after the flow ended"

    assert killed, "no training process was killed: no epoch-0001 checkpoint was seen while the flow ran"
    assert state.is_completed()  # the task failed once, was retried, and the flow finished
    assert state.result()["train"]["epochs"] == 4
    client = MlflowClient(tracking_uri=f"sqlite:///{repo.resolve()}/mlflow.db")
    (tracked,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert tracked.data.tags["train.attempt"] == "2"  # resumed in the same run, not restarted
    assert int(tracked.data.tags["train.resumed_from_epoch"]) >= 1
