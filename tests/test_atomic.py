"""Atomic outputs: a stage's files are replaced whole, or not at all, even when its process is killed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from resnet_mlops import atomic


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def _killed_writer(folder, code: str) -> None:
    """Run `code` (with `atomic` imported and `folder` set) in a child that is SIGKILLed mid-write.

    A child still alive after the timeout is killed by `subprocess.run`, and the test fails.
    """
    script = (f"import os, signal, pathlib\nfrom resnet_mlops import atomic\nfolder = pathlib.Path({str(folder)!r})\n"
              f"{code}\n")
    done = subprocess.run([sys.executable, "-c", script], timeout=120)
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
