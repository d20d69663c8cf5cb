"""Where the MLflow store and the outputs are: one store, even from `dvc exp` temp copies."""

from __future__ import annotations

import pytest

from resnet_mlops import atomic
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


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def _killed_writer(folder, code: str) -> None:
    """Run `code` (with `atomic` imported and `folder` set) in a child that is SIGKILLed mid-write."""
    import subprocess
    import sys

    script = (f"import os, signal, pathlib\nfrom resnet_mlops import atomic\nfolder = pathlib.Path({str(folder)!r})\n"
              f"{code}\n")
    done = subprocess.run([sys.executable, "-c", script])
    assert done.returncode == -9


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_one(tmp_path):
    _killed_writer(tmp_path, "with atomic.atomic_directory(folder / 'prepared') as tmp:\n"
                             "    (tmp / 'big.npy').write_bytes(b'0' * 1000)\n"
                             "    os.kill(os.getpid(), signal.SIGKILL)")
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 2 and all(name.startswith(".prepared.") for name in leftovers)  # new and old
    _killed_writer(tmp_path, "with atomic.atomic_path(folder / 'metrics.json') as tmp:\n"
                             "    tmp.write_text('half')\n"
                             "    os.kill(os.getpid(), signal.SIGKILL)")
    (tmp_path / ".prepared.k3j4h5g6.tmp").mkdir()  # named as before names carried the writer's pid
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 2 and leftovers[0].startswith(".metrics.json.") and leftovers[0].endswith(".tmp.json")
    with atomic.atomic_directory(tmp_path / "prepared") as tmp:
        (tmp / "summary.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_a_live_writers_temporary_files_are_left_alone(tmp_path):
    with atomic.atomic_path(tmp_path / "a.json") as first:
        first.write_text("1")
        atomic.write_json(tmp_path / "b.json", {"b": 2})  # cleans the folder while `first` is being written
        assert first.exists()
    assert (tmp_path / "a.json").read_text() == "1"


def test_outputs_get_the_umasks_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic.write_json(tmp_path / "metrics.json", {})
        with atomic.atomic_directory(tmp_path / "prepared") as tmp:
            (tmp / "x").write_text("x")
        with atomic.replace_together(tmp_path / "model.keras") as staged:
            staged[tmp_path / "model.keras"].write_text("m")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(tmp_path / "metrics.json") == 0o644 and mode(tmp_path / "model.keras") == 0o644
    assert mode(tmp_path / "prepared") == 0o755


def test_replace_together_touches_nothing_when_the_body_fails(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.keras").write_text("good")
    with pytest.raises(RuntimeError):
        with atomic.replace_together(tmp_path / "models" / "model.keras", tmp_path / "reports" / "history.csv") as staged:
            for tmp in staged.values():
                tmp.write_text("new")
            raise RuntimeError("MLflow is down")
    assert (tmp_path / "models" / "model.keras").read_text() == "good"
    assert not (tmp_path / "reports" / "history.csv").exists()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["model.keras"]
