"""What a run records about how to rebuild it: the commit, and the `-S` overrides of an experiment."""

from __future__ import annotations

import pytest
import yaml

from resnet_mlops import tracking
from support.project_repo import run, write_params


@pytest.fixture
def repo(tmp_path, tiny_params, monkeypatch):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(
        {"stages": {"evaluate": {"cmd": "true", "metrics": [{"reports/metrics.json": {"cache": False}}]}}}))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text("{}\n")
    write_params(tmp_path, tiny_params)
    run(["git", "init", "--quiet", "--initial-branch=main"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "--quiet", "-m", "base"], tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    return tmp_path


def head(repo) -> str:
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def test_a_clean_run_is_rebuilt_by_dvc_repro_at_its_commit(repo):
    (repo / "reports" / "metrics.json").write_text('{"a": 1}\n')  # outputs the run itself rewrites
    tags = tracking.git_state()
    assert tags["reproduce"] == f"git checkout {head(repo)} && dvc checkout && dvc repro"


def test_an_experiment_is_rebuilt_with_its_overrides(repo, tiny_params, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-fern")
    tiny_params["train"]["epochs"] = 3
    tiny_params["train"]["optimizer"] = "sgd"
    tiny_params["data"]["path"] = "data/raw/my photos"
    tiny_params["model"]["shortcut"] = "B"  # a key the commit does not have
    write_params(repo, tiny_params)
    tags = tracking.git_state()
    assert tags["git.dirty"] == "true" and tags["dvc.experiment"] == "lucky-fern"
    assert tags["reproduce"] == (f"git checkout {head(repo)} && dvc checkout && dvc exp run "
                                 f"-S 'data.path=data/raw/my photos' -S model.shortcut=B "
                                 f"-S train.epochs=3 -S train.optimizer=sgd")


def test_other_uncommitted_changes_are_named_not_hidden(repo, tiny_params):
    (repo / "src" / "code.py").write_text("x = 2\n")
    tags = tracking.git_state()
    assert tags["reproduce"] == ("not reproducible from git: uncommitted changes to src/code.py "
                                 "(commit them, then run again)")
    del tiny_params["train"]["epochs"]
    (repo / "src" / "code.py").write_text("x = 1\n")
    write_params(repo, tiny_params)
    assert tracking.git_state()["reproduce"].startswith("not reproducible from git: params.yaml removes keys")


def test_run_names_say_the_model_the_data_and_what_differs_from_the_commit(repo, tiny_params):
    assert tracking.run_name("resnet_cifar", {"depth": 8}, "digits") == "resnet_cifar(depth=8) · digits"
    assert tracking.run_name("resnet20", {}, "cifar10") == "resnet20 · cifar10"
    tiny_params["train"].update(epochs=3, batch_size=32, learning_rate=0.1, optimizer="sgd")
    write_params(repo, tiny_params)
    assert tracking.run_name("resnet20", {}, "digits") == (
        "train.batch_size=32 · train.epochs=3 · train.learning_rate=0.1 · +1 more · resnet20 · digits")
