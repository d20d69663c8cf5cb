"""Read the files of a folder, a .tar/.tar.gz/.tgz or a .zip the same way, without extracting to disk.

Entries are yielded in a stable order with a POSIX path relative to the root.
Unsafe entries are yielded too, as `Entry`s with an `unsafe` reason and no
data, so the validation policy (quarantine or fail) decides what to do: an
absolute path, a `..` component, or a link that resolves outside the archive
(tar slip). Such an entry is never read. Links inside an archive are not
followed either (reported the same way); in a folder, links inside it are.
"""

from __future__ import annotations

import functools
import os
import posixpath
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from resnet_mlops.dataset import tarscan
from resnet_mlops.errors import UserError


class Entry(NamedTuple):
    """One file or folder (a tuple: a folder of a million images makes a million of them)."""

    path: str                      # relative POSIX path inside the folder or archive
    read: Callable[[], bytes] | None
    unsafe: str | None = None      # why the entry must not be read
    is_dir: bool = False           # folders are listed too, so an empty class folder is seen
    stat: tuple[int, int, int] | None = None  # a folder's file: (size, mtime_ns, inode), to skip re-reading it


def entries(root: str | Path) -> Iterator[Entry]:
    """Every file and folder under `root` (a folder or an archive), in a stable order."""
    root = Path(root)
    if root.is_dir():
        yield from _folder_entries(root)
    elif not root.exists():
        raise UserError(f"{root}: no such file or folder")
    elif root.name.lower().endswith(".zip"):
        yield from _zip_entries(root)
    elif root.name.lower().endswith((".tar", ".tar.gz", ".tgz")):
        yield from _tar_entries(root)
    else:
        raise UserError(f"{root}: not a folder nor a .tar, .tar.gz, .tgz or .zip archive")


def _unsafe_name(name: str) -> str | None:
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' in the path (would escape the archive)"
    return None


def _link_escapes(member_name: str, target: str) -> bool:
    if target.startswith("/"):
        return True
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member_name), target))
    return resolved == ".." or resolved.startswith("../")


def _tar_entries(path: Path) -> Iterator[Entry]:
    try:
        for member in tarscan.members(path):
            name = member.name.removeprefix("./")
            if member.kind == "dir":
                yield Entry(name.rstrip("/"), None, is_dir=True)
                continue
            unsafe = _unsafe_name(name)
            if unsafe is None and member.kind in ("symlink", "hardlink"):
                target = member.linkname
                escapes = _link_escapes(name, target) if member.kind == "symlink" else _unsafe_name(target)
                unsafe = f"link to {target!r}" + (", outside the archive" if escapes else
                                                  " (links in archives are not followed)")
            if unsafe:
                yield Entry(name, None, unsafe)
            elif member.kind == "file":
                yield Entry(name, lambda data=member.data: data)
    except (tarscan.TarFormatError, EOFError, OSError, zlib.error) as exc:
        raise UserError(f"{path}: the archive is corrupt, truncated or not a tar file ({exc})") from None


def _zip_entries(path: Path) -> Iterator[Entry]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{path}: cannot open the archive ({exc})") from None
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                yield Entry(info.filename.rstrip("/"), None, is_dir=True)
                continue
            unsafe = _unsafe_name(info.filename)
            if unsafe is None and stat.S_ISLNK(info.external_attr >> 16):
                target = archive.read(info).decode(errors="replace")
                unsafe = f"link to {target!r}" + (", outside the archive" if _link_escapes(info.filename, target) else
                                                  " (links in zip archives are not followed)")
            if unsafe:
                yield Entry(info.filename, None, unsafe)
            else:
                yield Entry(info.filename, lambda info=info: archive.read(info))


def _folder_entries(root: Path) -> Iterator[Entry]:
    """In os.walk's order (a folder's subfolders, its files, then each subfolder), by os.scandir on
    strings: on a folder of a million small images, pathlib objects cost more than the files.

    A folder's listing is kept as (name, is a folder, is a link), not as os.DirEntry objects: one
    holding its stat is nearly a kilobyte, and a class folder can hold tens of thousands of files."""
    real_root = root.resolve()

    def walk(folder: str, prefix: str) -> Iterator[Entry]:
        with os.scandir(folder) as listing:
            items = sorted((item.name, item.is_dir(), item.is_symlink()) for item in listing)
        for name, is_dir, _ in items:
            if is_dir:
                yield Entry(prefix + name, None, is_dir=True)
        for name, is_dir, is_link in items:
            if is_dir:
                continue
            path = os.path.join(folder, name)
            if is_link and not Path(path).resolve().is_relative_to(real_root):
                yield Entry(prefix + name, None, f"link to {os.readlink(path)!r}, outside the folder")
                continue
            try:
                info = os.stat(path)
            except FileNotFoundError:  # a broken link
                continue
            if stat.S_ISREG(info.st_mode):
                yield Entry(prefix + name, functools.partial(_read, path),
                            stat=(info.st_size, info.st_mtime_ns, info.st_ino))
        for name, is_dir, is_link in items:
            if is_dir and not is_link:  # as os.walk: a linked folder is listed, not entered
                yield from walk(os.path.join(folder, name), f"{prefix}{name}/")

    yield from walk(str(root), "")


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()
