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
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

import numpy as np

from resnet_mlops.config import DataSettings
from resnet_mlops.data import archive, images
from resnet_mlops.data.examples import Examples, Problem

PREDEFINED_SPLITS = ("train", "val", "test")
_CHUNK = 256


@dataclass(frozen=True)
class _Policy:
    size: int
    channels: int
    min_size: int
    max_pixels: int | None


def _decode_chunk(task: tuple[_Policy, list[tuple[str, bytes]]]) -> list[tuple]:
    """Worker: decode a chunk of files; never raises for a bad file."""
    policy, files = task
    results = []
    for path, data in files:
        digest = hashlib.sha256(data).hexdigest()
        try:
            decoded = images.decode(data, policy.size, policy.channels, policy.min_size, policy.max_pixels)
        except images.BadImage as bad:
            results.append((path, digest, None, bad.kind, bad.detail))
        else:
            results.append((path, digest, decoded.pixels, (decoded.width, decoded.height), decoded.format))
    return results


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
            elif PurePosixPath(entry.path).suffix.lower() not in images.EXTENSIONS:
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
    """1 when everything sits in one plain wrapper folder (e.g. `cifar10-jpeg/`), else 0."""
    firsts = {p.split("/")[0] for p in files + folders}
    if len(firsts) != 1:
        return 0
    (top,) = firsts
    return 0 if top in PREDEFINED_SPLITS or top in files else 1


def _place(parts: list[str], predefined: bool, fixed_split: str | None) -> tuple[str | None, str | None, list[str]]:
    """(split hint, class name, remaining parts) of one path's components."""
    split = fixed_split
    if predefined:
        split, parts = parts[0], parts[1:]
    if len(parts) < 2:
        return split, None, parts
    return split, parts[0], parts[1:]


def _read_tree(root: str, fixed_split: str | None, policy: _Policy, pool) -> tuple[list, list[str], list[Problem]]:
    reader = _Reader(root)
    decoded = [row for chunk in pool.imap(_decode_chunk, reader.chunks(policy)) for row in chunk]
    # Unsafe entries (absolute, '..') say nothing about the layout.
    files = [row[0] for row in decoded] + [p.path for p in reader.problems if p.kind != "unsafe_entry"]
    skip = _strip_common_top(files, reader.folders)
    trimmed = lambda path: path.split("/")[skip:]
    all_paths = files + reader.folders
    firsts = {trimmed(p)[0] for p in all_paths if trimmed(p)}
    predefined = fixed_split is None and "train" in firsts and firsts <= set(PREDEFINED_SPLITS)

    rows, problems = [], list(reader.problems)
    classes = {place[1] for place in (_place(trimmed(f) + ["_"], predefined, fixed_split) for f in reader.folders)
               if place[1] is not None}
    where = f" of {root}" if fixed_split else ""
    for path, digest, pixels, info, detail in decoded:
        split, class_name, _ = _place(trimmed(path), predefined, fixed_split)
        if class_name is None:
            problems.append(Problem("outside_class_folder", path, f"images must be inside a class folder{where}"))
        elif pixels is None:
            problems.append(Problem(info, path, detail))
        else:
            classes.add(class_name)
            rows.append((path, digest, pixels, info, split, class_name))
    return rows, sorted(classes), problems


def load_folder(settings: DataSettings) -> Examples:
    """Every image under data.path (and data.test_path), decoded by the image policy."""
    policy = _Policy(settings.image_size, settings.channels, settings.min_size, settings.max_pixels)
    trees = [(settings.path, None)] + ([(settings.test_path, "test")] if settings.test_path else [])
    workers = max(1, min(settings.workers or os.cpu_count() or 1, 8))
    rows, classes, problems = [], set(), []
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for root, fixed_split in trees:
            tree_rows, tree_classes, tree_problems = _read_tree(root, fixed_split, policy, pool)
            if fixed_split:
                tree_rows = [(f"{root}:{r[0]}", *r[1:]) for r in tree_rows]
            elif settings.test_path:  # a separate test set given: nothing else may be drawn into test
                tree_rows = [(*r[:4], r[4] or "train", r[5]) for r in tree_rows]
            rows += tree_rows
            problems += tree_problems
            classes.update(tree_classes)
    rows.sort(key=lambda row: row[0])  # the dataset must not depend on the order of entries in an archive
    class_names = tuple(sorted(classes))
    index = {name: i for i, name in enumerate(class_names)}
    shape = (0, settings.image_size, settings.image_size, settings.channels)
    return Examples(
        images=np.stack([r[2] for r in rows]) if rows else np.zeros(shape, np.uint8),
        labels=np.array([index[r[5]] for r in rows], dtype=np.int64),
        class_names=class_names,
        paths=[r[0] for r in rows],
        hashes=[r[1] for r in rows],
        sizes=[r[3] for r in rows],
        split_hints=[r[4] for r in rows],
        problems=problems,
    )
