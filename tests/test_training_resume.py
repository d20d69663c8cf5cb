"""Fault tolerance and tracking of the real `resnet-mlops train` process.

Deterministic CPU mode: the same seed gives the same weights twice, and a
training killed with SIGKILL mid-run, started again, resumes from its last
checkpoint and ends with exactly the weights of an uninterrupted run, in the
same MLflow run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from support.project_repo import TINY_PARAMS, copy_project, kill_training_at, run
from support.tracking_uri import tracking_store

pytestmark = pytest.mark.slow

EPOCHS = 5


@pytest.fixture(scope="module")
def prepared_project(tmp_path_factory) -> Path:
    """A prepared project with a recipe using every random part (augmentation, mixup, schedule)."""
    params = {**TINY_PARAMS,
              "data": {**TINY_PARAMS["data"], "image_size": 16},
              "train": {"epochs": EPOCHS, "batch_size": 32, "optimizer": "sgd", "learning_rate": 0.05,
                        "nesterov": True, "weight_decay": 5e-4, "label_smoothing": 0.1,
                        "schedule": "onecycle", "warmup_fraction": 0.2, "deterministic": True,
                        "augment": {"crop": 2, "flip": True, "cutout": 4, "mixup": 0.2}}}
    folder = copy_project(tmp_path_factory.mktemp("resume") / "prepared", params)
    run(["resnet-mlops", "prepare"], folder)
    return folder


def clone(prepared: Path, folder: Path) -> Path:
    shutil.copytree(prepared, folder)
    return folder


def weights(folder: Path) -> list[np.ndarray]:
    from resnet_mlops.models.saving import load_model

    return [np.asarray(w) for w in load_model(folder / "models/model.keras").get_weights()]


def store(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder.resolve()}/mlflow.db")


def test_deterministic_mode_gives_identical_weights_twice(prepared_project, tmp_path):
    first, second = clone(prepared_project, tmp_path / "first"), clone(prepared_project, tmp_path / "second")
    for folder in (first, second):
        run(["resnet-mlops", "train"], folder)
    assert all(np.array_equal(a, b) for a, b in zip(weights(first), weights(second)))
    assert not (first / "models/checkpoints").exists()  # removed once training finished


def test_killed_training_resumes_to_the_same_weights_in_the_same_run(prepared_project, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    whole, killed = clone(prepared_project, tmp_path / "whole"), clone(prepared_project, tmp_path / "killed")
    run(["resnet-mlops", "train"], whole)

    kill_training_at(killed, "epoch-0002", settle=0.3)  # into the third epoch
    assert not (killed / "models/model.keras").exists()
    kept = sorted(p.name for p in (killed / "models/checkpoints").iterdir() if not p.name.startswith("."))
    assert 1 <= len(kept) <= 2 and kept[-1] in ("epoch-0002", "epoch-0003")  # never more than two

    resumed = run(["resnet-mlops", "train"], killed)
    assert "resuming after epoch" in resumed.stdout
    assert all(np.array_equal(a, b) for a, b in zip(weights(whole), weights(killed)))

    client = store(killed)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert len(runs) == 1  # the killed attempt's run continued, not a second unrelated run
    tracked = runs[0]
    assert tracked.info.status == "FINISHED" and tracked.data.tags["train.attempt"] == "2"
    assert tracked.data.tags["train.resumed_from_epoch"] in ("2", "3")
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "val_accuracy")][-1] == EPOCHS
    assert (killed / "reports/history.csv").read_text().count("\n") == EPOCHS + 1


def test_the_run_records_params_metrics_lineage_system_metrics_and_model(prepared_project, tmp_path,
                                                                         monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = clone(prepared_project, tmp_path / "tracked")
    for command in (["git", "init", "--quiet"], ["git", "add", "-A"], ["git", "commit", "--quiet", "-m", "x"]):
        run(command, folder)
    run(["resnet-mlops", "train"], folder, env={**os.environ, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5",
                                                     "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1"})
    client = store(folder)
    (tracked,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    params, tags, metrics = tracked.data.params, tracked.data.tags, tracked.data.metrics

    from resnet_mlops.config import flatten, load_params
    from dataclasses import asdict

    loaded = load_params(folder / "params.yaml")
    expected = flatten({**loaded.raw, "train": asdict(loaded.train)})
    assert set(expected) <= set(params) and params["train.augment.mixup"] == "0.2"
    assert params["train.momentum"] == "0.9"  # a default the file does not spell out
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds",
                 "images_per_second"):
        assert len(client.get_metric_history(tracked.info.run_id, name)) == EPOCHS, name
    assert any(name.startswith("system/cpu_utilization") for name in metrics)
    assert any(name.startswith("system/system_memory_usage") for name in metrics)
    assert len(tags["git.commit"]) == 40 and tags["git.dirty"] == "false" and len(tags["params.hash"]) == 16
    assert tags["data.content_hash"] and "CPU only" in tags["device"]
    artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id, "reports")}
    assert {"reports/history.csv", "reports/curves.png"} <= artifacts
    import mlflow

    with tracking_store(f"sqlite:///{folder.resolve()}/mlflow.db"):  # (the served pyfunc is register's to log)
        assert mlflow.models.get_model_info(f"runs:/{tracked.info.run_id}/keras_model").signature is not None
    assert os.path.exists(folder / "models/run.json")
