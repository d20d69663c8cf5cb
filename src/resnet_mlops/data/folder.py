"""The `folder` source: a class-per-subfolder tree, as a folder or an archive read in place.

Layouts understood (after one common top folder, if any, is set aside):

    <class>/<...>/<image>                    the split is drawn by content hash
    train/<class>/<image>, test/<class>/...  the source's own test (and val) set is kept

`data.test_path` may name a second folder or archive that is the test set.
Files are decoded in parallel worker processes while the archive is being read.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import posixpath
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np

from resnet_mlops.config import DataSettings
from resnet_mlops.dataset import archive, images
from resnet_mlops.data.examples import Examples, Problem

PREDEFINED_SPLITS = ("train", "val", "test")
_CHUNK = 512


@dataclass(frozen=True)
class _Policy:
    size: int
    channels: int
    min_size: int
    max_pixels: int | None


def _decode_chunk(task: tuple[_Policy, list[tuple[str, bytes]]]) -> tuple[np.ndarray, list, list]:
    """Worker: decode a chunk of files; never raises for a bad file.

    Returns the good images stacked in one array (one cheap transfer back), their
    (path, sha256 of the file, original size), and (path, problem kind, detail) for the bad ones.
    """
    policy, files = task
    pixels, meta, bad = [], [], []
    for path, data in files:
        try:
            decoded = images.decode(data, policy.size, policy.channels, policy.min_size, policy.max_pixels)
        except images.BadImage as problem:
            bad.append((path, problem.kind, problem.detail))
        else:
            pixels.append(decoded.pixels)
            meta.append((path, hashlib.sha256(data).hexdigest(), (decoded.width, decoded.height)))
    shape = (0, policy.size, policy.size, policy.channels)
    return (np.stack(pixels) if pixels else np.zeros(shape, np.uint8)), meta, bad


def _decode_all(chunks: Iterator, pool: ProcessPoolExecutor, window: int) -> tuple[list, list, list]:
    """Decode chunks in the pool, in order, with at most `window` in flight (bounded memory)."""
    arrays, meta, bad = [], [], []
    pending: deque = deque()

    def collect():
        chunk_pixels, chunk_meta, chunk_bad = pending.popleft().result()
        arrays.append(chunk_pixels)
        meta.extend(chunk_meta)
        bad.extend(chunk_bad)

    for task in chunks:
        pending.append(pool.submit(_decode_chunk, task))
        if len(pending) >= window:
            collect()
    while pending:
        collect()
    return arrays, meta, bad


class _Reader:
    """Splits a tree's entries into files to decode and things to report."""

    def __init__(self, root: str):
        self.root = root
        self.folders: list[str] = []
        self.problems: list[Problem] = []

    def chunks(self, policy: _Policy) -> Iterator[tuple[_Policy, list[tuple[str, bytes]]]]:
        chunk: list[tuple[str, bytes]] = []
        for entry in archive.entries(self.root):
            if entry.is_dir:
                self.folders.append(entry.path)
            elif entry.unsafe:
                self.problems.append(Problem("unsafe_entry", entry.path, entry.unsafe))
            elif posixpath.splitext(entry.path)[1].lower() not in images.EXTENSIONS:
                self.problems.append(Problem("not_an_image", entry.path,
                                             f"extension is not one of {sorted(images.EXTENSIONS)}"))
            else:
                chunk.append((entry.path, entry.read()))
                if len(chunk) == _CHUNK:
                    yield policy, chunk
                    chunk = []
        if chunk:
            yield policy, chunk


def _strip_common_top(files: list[str], folders: list[str]) -> int:
    """1 when everything sits in one plain wrapper folder (e.g. `cifar10-jpeg/`), else 0.

    A single top folder that holds images directly (`3/*.png`) is a class, not a wrapper.
    """
    firsts = {p.split("/")[0] for p in files + folders}
    if len(firsts) != 1:
        return 0
    (top,) = firsts
    if top in PREDEFINED_SPLITS or top in files:
        return 0
    directly_inside = (p for p in files if p.count("/") == 1)
    return 0 if any(posixpath.splitext(p)[1].lower() in images.EXTENSIONS for p in directly_inside) else 1


def _place(parts: list[str], predefined: bool, split: str | None) -> tuple[str | None, list[str]]:
    """(split hint, the components below the split folder) of one path."""
    return (parts[0], parts[1:]) if predefined and parts else (split, parts)


class _Row(NamedTuple):
    path: str
    sha256: str
    size: tuple[int, int]
    split: str | None
    class_name: str


@dataclass
class _Tree:
    """One folder or archive, decoded: images in file order, their metadata, and what was wrong."""

    images: np.ndarray
    rows: list[_Row]
    classes: list[str]
    problems: list[Problem]


def _read_tree(root: str, role: str | None, policy: _Policy, pool, window: int) -> _Tree:
    """`role` "test": every image is test (data.test_path); "train": nothing is drawn into test,
    but a train/val layout is kept; None: the tree's own layout, or the hash split."""
    reader = _Reader(root)
    arrays, meta, bad = _decode_all(reader.chunks(policy), pool, window)
    # Unsafe entries (absolute, '..') say nothing about the layout.
    files = [m[0] for m in meta] + [b[0] for b in bad] + [p.path for p in reader.problems if p.kind != "unsafe_entry"]
    skip = _strip_common_top(files, reader.folders)
    trimmed = lambda path: path.split("/")[skip:]
    firsts = {trimmed(p)[0] for p in files + reader.folders if trimmed(p)}
    predefined = role != "test" and "train" in firsts and firsts <= set(PREDEFINED_SPLITS)

    problems = list(reader.problems) + [Problem(kind, path, detail) for path, kind, detail in bad]
    classes = set()
    for folder in reader.folders:  # a class folder counts even when it holds no usable image
        below = _place(trimmed(folder), predefined, role)[1]
        if below:
            classes.add(below[0])
    rows, keep = [], []
    for i, (path, digest, size) in enumerate(meta):
        split, below = _place(trimmed(path), predefined, role)
        if len(below) < 2:  # a file directly in the root (or a split folder) has no class
            where = f" of {root}" if role == "test" else ""
            problems.append(Problem("outside_class_folder", path, f"images must be inside a class folder{where}"))
            continue
        classes.add(below[0])
        shown = f"{root}:{path}" if role == "test" else path
        rows.append(_Row(shown, digest, size, split, below[0]))
        keep.append(i)
    stacked = np.concatenate(arrays) if arrays else np.zeros((0, policy.size, policy.size, policy.channels), np.uint8)
    return _Tree(stacked[keep] if len(keep) < len(meta) else stacked, rows, sorted(classes), problems)


def load_folder(settings: DataSettings) -> Examples:
    """Every image under data.path (and data.test_path), decoded by the image policy."""
    policy = _Policy(settings.image_size, settings.channels, settings.min_size, settings.max_pixels)
    # A separate test set given: nothing else may be drawn into test.
    trees = [(settings.path, "train"), (settings.test_path, "test")] if settings.test_path else [(settings.path, None)]
    workers = max(1, min(settings.workers or os.cpu_count() or 1, 8))
    pixels, rows, classes, problems = [], [], set(), []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for root, role in trees:
            tree = _read_tree(root, role, policy, pool, window=2 * workers + 2)
            pixels.append(tree.images)
            rows += tree.rows
            problems += tree.problems
            classes.update(tree.classes)
    # The dataset must not depend on the order of entries in an archive.
    order = sorted(range(len(rows)), key=lambda i: rows[i].path)
    stacked = np.concatenate(pixels)
    if order != list(range(len(rows))):
        rows, stacked = [rows[i] for i in order], stacked[order]
    class_names = tuple(sorted(classes))
    index = {name: i for i, name in enumerate(class_names)}
    return Examples(
        images=stacked,
        labels=np.array([index[r.class_name] for r in rows], dtype=np.int64),
        class_names=class_names,
        paths=[r.path for r in rows],
        hashes=[r.sha256 for r in rows],
        sizes=[r.size for r in rows],
        split_hints=[r.split for r in rows],
        problems=problems,
    )
