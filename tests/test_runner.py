"""`resnet-mlops run`, what `make run` calls: from a folder that is not yet a git repository."""

from __future__ import annotations

import pytest

from conftest import copy_project, run

pytestmark = pytest.mark.slow


def test_run_sets_up_git_and_dvc_then_reports(tmp_path, tiny_params, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = copy_project(tmp_path / "download", tiny_params)
    done = run(["resnet-mlops", "run"], folder)
    out = done.stdout
    assert "is not a git repository; DVC needs one, so creating it with `git init`" in out
    assert "no .dvc/ folder here; creating it with `dvc init`" in out
    assert (folder / ".git").is_dir() and (folder / ".dvc").is_dir() and (folder / "dvc.lock").is_file()
    assert "test accuracy      0." in out or "test accuracy      1." in out
    assert "registered model   tiny-digits version 1" in out
    assert "@champion          yes: no champion yet" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{folder.resolve()}/mlflow.db" in out
    assert "serve the champion (models:/tiny-digits@champion) at http://127.0.0.1:5001/invocations:" in out
    assert "/resnet-mlops serve\n" in out


def test_run_with_bad_params_touches_nothing(tmp_path, tiny_params):
    tiny_params["train"]["learning_rate"] = -1
    folder = copy_project(tmp_path / "download", tiny_params)
    done = run(["resnet-mlops", "run"], folder, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"resnet-mlops run: error: params.yaml: train.learning_rate: "
                                   f"must be a number >= 0, got -1")
    assert sorted(p.name for p in folder.iterdir()) == ["data", "dvc.yaml", "params.yaml", "src"]
