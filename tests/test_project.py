"""Where the MLflow store is: one store, in the repository root, even from `dvc exp` temp copies."""

from __future__ import annotations

from resnet_mlops.project import repository_root, tracking_uri


def test_the_store_is_absolute_and_in_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "src" / "deep").mkdir(parents=True)
    assert tracking_uri(tmp_path / "src" / "deep") == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_a_dvc_experiment_copy_logs_to_the_original_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "run" / "abc123"
    copy.mkdir(parents=True)
    (copy / "dvc.yaml").write_text("stages: {}\n")
    assert repository_root(copy) == tmp_path.resolve()
    assert tracking_uri(copy) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_the_environment_overrides_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"
