"""`resnet-mlops run`, what `make run` calls: from a folder that is not yet a git repository."""

from __future__ import annotations

import re

import pytest

from support.project_repo import copy_project, run

pytestmark = pytest.mark.slow


def test_run_sets_up_git_and_dvc_then_reports(tmp_path, tiny_params, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = copy_project(tmp_path / "download", tiny_params)
    done = run(["resnet-mlops", "run"], folder)
    out = done.stdout
    assert "is not a git repository; DVC needs one, so creating it with `git init`" in out
    assert "no .dvc/ folder here; creating it with `dvc init`" in out
    assert (folder / ".git").is_dir() and (folder / ".dvc").is_dir() and (folder / "dvc.lock").is_file()
    accuracy = float(re.search(r"^test accuracy      (\d\.\d{4})  \(\d+ test images\)$", out, re.M).group(1))
    assert 0.9 <= accuracy <= 1  # the tiny config learns (97-98%); chance is 10%
    assert "registered model   tiny-digits version 1" in out
    assert "@champion          yes: the first version (no champion before it): test accuracy 0.9" in out
    assert f"mlflow ui --backend-store-uri sqlite:///{folder.resolve()}/mlflow.db" in out
    assert "serve the champion (models:/tiny-digits@champion) at http://127.0.0.1:5001/invocations:" in out
    assert "/resnet-mlops serve\n" in out
    assert "== resnet-mlops: pipeline finished (ran prepare, train, evaluate, register) ==" in out
    hint = out.splitlines()[out.splitlines().index(next(l for l in out.splitlines() if "not committed yet" in l)) + 1]
    assert hint == "  git add -A && git commit -m 'Pipeline run'"  # a new repository: everything
    for dvc_hint in ("To track the changes with git", "Use `dvc push`", "Updating lock file"):
        assert dvc_hint not in out + done.stderr, dvc_hint

    # Nothing changed: it says so, and does not replay the first run's decision as news.
    again = run(["resnet-mlops", "run"], folder).stdout
    assert "== resnet-mlops: nothing to do, every stage is up to date (the last run's results) ==" in again
    assert "@champion          yes, decided by the last run: the first version" in again
    assert "registered model   tiny-digits version 1 (by the last run)" in again
    assert "@champion          yes: the first version" not in again

    # Committed as the summary says, the next summary has nothing to ask.
    (folder / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")  # as the project's own .gitignore has it
    run(["bash", "-c", hint], folder)
    assert "not committed yet" not in run(["resnet-mlops", "run"], folder).stdout
    (folder / "params.yaml").write_text((folder / "params.yaml").read_text().replace("epochs: 2", "epochs: 1"))
    retrained = run(["resnet-mlops", "run"], folder).stdout
    assert "ran train, evaluate, register" in retrained
    assert "  git add dvc.lock params.yaml reports && git commit -m 'Pipeline run'" in retrained


def test_run_with_bad_params_touches_nothing(tmp_path, tiny_params):
    tiny_params["train"]["learning_rate"] = -1
    folder = copy_project(tmp_path / "download", tiny_params)
    done = run(["resnet-mlops", "run"], folder, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == ("resnet-mlops run: error: params.yaml: train.learning_rate: "
                                   "must be a number >= 0, got -1")
    assert sorted(p.name for p in folder.iterdir()) == ["data", "dvc.yaml", "params.yaml", "src"]
