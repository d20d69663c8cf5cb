"""Atomic outputs: write under a temporary name in the same folder, then rename.

A stage killed half-way therefore never leaves a file or folder that looks
complete; the previous output (if any) stays until the new one is whole. The
stages' outputs are `persist: true` in dvc.yaml, so DVC does not delete them
before a stage runs either: a failed run leaves the last good outputs in place.

Temporary names carry the writing process's id (`.<name>.<pid>.<random>.tmp`),
so what a killed process left behind is recognised and removed by the next
writer in that folder, while a live writer's files are left alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_LEFTOVER = re.compile(r"^\..+\.(\d+)\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")
_LEFTOVER_WITHOUT_PID = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")  # written before names had one


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders that dead processes left in `folder`; return them."""
    folder = Path(folder)
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else ():
        match = _LEFTOVER.match(entry.name)
        if match is not None and _alive(int(match.group(1))):
            continue
        if match is None and not _LEFTOVER_WITHOUT_PID.match(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success rename it to `path`.

    The file gets the permissions a plain `open()` would give it (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path.name), suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(path.name), suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    old = Path(tempfile.mkdtemp(prefix=_prefix(path.name), suffix=".tmp.old", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            os.replace(path, old)  # `old` is an empty folder: rename replaces it
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def replace_together(*paths: str | Path) -> Iterator[dict[Path, Path]]:
    """Stage several outputs, then put them all in place once the body succeeded.

    Yields {final path: temporary path}; each temporary path has the final file's
    own name (inside a temporary folder beside the first output), so whatever reads
    or uploads it meanwhile (an MLflow artifact, say) sees the right name. If the
    body fails, none of the outputs is touched.
    """
    finals = [Path(p) for p in paths]
    for final in finals:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(final.parent)
    staging = Path(tempfile.mkdtemp(prefix=_prefix("staging"), suffix=".tmp", dir=finals[0].parent))
    try:
        staged = {final: staging / final.name for final in finals}
        if len(set(staged.values())) != len(finals):
            raise ValueError(f"replace_together needs outputs with distinct names, got {paths}")
        yield staged
        for final, tmp in staged.items():
            if tmp.is_file():
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
