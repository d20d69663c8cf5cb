"""The `folder` source: a class-per-subfolder tree, as a folder or an archive read in place.

Layouts understood (after one common top folder, if any, is set aside):

    <class>/<...>/<image>                    the split is drawn by content hash
    train/<class>/<image>, test/<class>/...  the source's own test (and val) set is kept

`data.test_path` may name a second folder or archive that is the test set.
Files are read and hashed here and looked up in the decode cache (data/cache.py); only files it
does not know are decoded, in chunks, by worker processes or a Dask cluster (data/executors.py)
while the rest is being read.
"""

from __future__ import annotations

import array
import hashlib
import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from resnet_mlops.config import DataSettings
from resnet_mlops.data import executors
from resnet_mlops.data.cache import CachedPixels, DecodeCache, KnownFiles
from resnet_mlops.data.examples import SPLIT_CODE, Examples, Paths, PathsBuilder, Problem
from resnet_mlops.dataset import archive, images
from resnet_mlops.errors import UserError

PREDEFINED_SPLITS = ("train", "val", "test")
# The decoded pixels one decode task returns (between 16 and 512 files): with a few tasks in
# flight, what decoding holds in memory at 32x32 and at 224x224 alike.
CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class _Policy:
    size: int
    channels: int
    min_size: int
    max_pixels: int | None


def _decode_chunk(task: tuple[_Policy, list[bytes]]) -> tuple[np.ndarray, list, list]:
    """Worker: decode a chunk of files; never raises for a bad file.

    Returns the good images stacked in one array (one cheap transfer back), the index in
    the chunk and original size of each good one, and (index, problem kind, detail) of each bad one.
    """
    policy, files = task
    pixels, good, bad = [], [], []
    for i, data in enumerate(files):
        try:
            decoded = images.decode(data, policy.size, policy.channels, policy.min_size, policy.max_pixels)
        except images.BadImage as problem:
            bad.append((i, problem.kind, problem.detail))
        else:
            pixels.append(decoded.pixels)
            good.append((i, (decoded.width, decoded.height)))
    shape = (0, policy.size, policy.size, policy.channels)
    return (np.stack(pixels) if pixels else np.zeros(shape, np.uint8)), good, bad


_IMAGE_SUFFIXES = tuple(images.EXTENSIONS)


def _is_image_name(path: str) -> bool:
    """Whether `posixpath.splitext(path)[1].lower()` is one of images.EXTENSIONS, at a fraction of its
    cost on a million files: the name ends with one, and its dot is not one of the name's leading dots."""
    lowered = path.lower()
    return lowered.endswith(_IMAGE_SUFFIXES) and lowered[lowered.rfind("/") + 1:].lstrip(".").rfind(".") > 0


class _Files:
    """The files of one tree read so far, column by column (no pixels: those are in the decode
    cache), in the order they were read: a few dozen bytes per file, not a Python object each."""

    def __init__(self):
        self.paths = PathsBuilder()
        self.shas = bytearray()
        self.placements = array.array("i")                      # pack, row per file (in the decode cache)
        self.sizes = array.array("i")                           # original width, height per file
        self.problems: dict[int, tuple[int, str, str]] = {}     # file -> (pack, kind, detail)

    def extend(self, paths: list[str], shas: np.ndarray, where: np.ndarray) -> int:
        """Add files with their sha256 (S32) and (pack, row, width, height); the first one's index."""
        first = len(self.paths)
        self.paths.extend(paths)
        self.shas += np.ascontiguousarray(shas).tobytes()
        self.placements.frombytes(np.ascontiguousarray(where[:, :2], np.int32).tobytes())
        self.sizes.frombytes(np.ascontiguousarray(where[:, 2:], np.int32).tobytes())
        return first

    def sha(self, i: int) -> bytes:
        return bytes(self.shas[32 * i:32 * i + 32])

    def columns(self) -> tuple[np.ndarray, np.ndarray]:
        """(pack, row) and (width, height) of every file, as int32 arrays (N, 2) on this object's buffers."""
        return (np.frombuffer(self.placements, np.int32).reshape(-1, 2),
                np.frombuffer(self.sizes, np.int32).reshape(-1, 2))


class _Reader:
    """Splits a tree's entries into files to decode and things to report; looks each file up in the
    cache, reading it only when its stat changed since the last run or the cache does not know it."""

    def __init__(self, root: str, cache: DecodeCache, chunk: int):
        self.root = root
        self.cache = cache
        self.chunk = chunk
        self.known = KnownFiles(cache.root, root)
        self.folders: list[str] = []
        self.problems: list[Problem] = []
        self.files = _Files()
        self.read = 0

    def tasks(self, policy: _Policy) -> Iterator[tuple[_Policy, list[bytes]]]:
        """Chunks of the files the cache does not know, as decode tasks (their indices in `self.misses`)."""
        self.misses: list[list[int] | None] = []
        batch: list[tuple[archive.Entry, bytes | None]] = []
        todo: list[tuple[int, bytes]] = []
        for entry in archive.entries(self.root):
            if entry.is_dir:
                self.folders.append(entry.path)
            elif entry.unsafe:
                self.problems.append(Problem("unsafe_entry", entry.path, entry.unsafe))
            elif not _is_image_name(entry.path):
                self.problems.append(Problem("not_an_image", entry.path,
                                             f"extension is not one of {sorted(images.EXTENSIONS)}"))
            else:
                # An archive's member is read now, while the archive is open; a folder's file maybe never.
                batch.append((entry, None if entry.stat else entry.read()))
                if len(batch) == 512:
                    todo += self._look_up(batch)
                    batch = []
                while len(todo) >= self.chunk:
                    yield self._task(policy, todo[:self.chunk])
                    todo = todo[self.chunk:]
        todo += self._look_up(batch)
        while todo:
            yield self._task(policy, todo[:self.chunk])
            todo = todo[self.chunk:]
        self.known.save()

    def _look_up(self, batch: list[tuple[archive.Entry, bytes | None]]) -> list[tuple[int, bytes]]:
        """Record a batch of files; return (index, bytes) of those to decode."""
        shas, known = self.known.shas([(entry.path, entry.stat) for entry, _ in batch])
        contents: dict[int, bytes] = {}
        for j in np.flatnonzero(~known):
            entry, data = batch[j]
            contents[j] = entry.read() if data is None else data
            shas[j] = hashlib.sha256(contents[j]).digest()
        self.known.saw(shas)
        where, bad = self.cache.lookup(shas)
        first = self.files.extend([entry.path for entry, _ in batch], shas, where)
        for j, verdict in bad.items():
            self.files.problems[first + j] = verdict
        misses = [(first + j, contents[j] if j in contents else self._read_again(batch[j][0], self.files.sha(first + j)))
                  for j in np.flatnonzero(where[:, 0] < 0) if j not in bad]
        self.read += len(contents)
        return misses

    @staticmethod
    def _read_again(entry: archive.Entry, sha: bytes) -> bytes:
        """A file known by its stat but no longer in the cache (pruned, or deleted by hand)."""
        data = entry.read()
        if hashlib.sha256(data).digest() != sha:  # changed without changing its stat: trust the bytes
            raise UserError(f"{entry.path}: changed while prepare was reading it; run prepare again")
        return data

    def _task(self, policy: _Policy, todo: list[tuple[int, bytes]]) -> tuple[_Policy, list[bytes]]:
        self.misses.append([i for i, _ in todo])
        return policy, [data for _, data in todo]

    def decoded(self, number: int, result: tuple[np.ndarray, list, list]) -> None:
        """Keep task `number`'s result in the cache and as the verdicts of its files."""
        pixels, good, bad = result
        indices, self.misses[number] = self.misses[number], None
        pack = self.cache.store(pixels, [(self.files.sha(indices[i]), size) for i, size in good],
                                [(self.files.sha(indices[i]), kind, detail) for i, kind, detail in bad])
        for row, (i, (width, height)) in enumerate(good):
            self.files.placements[2 * indices[i]:2 * indices[i] + 2] = array.array("i", (pack, row))
            self.files.sizes[2 * indices[i]:2 * indices[i] + 2] = array.array("i", (width, height))
        for i, kind, detail in bad:
            self.files.problems[indices[i]] = (pack, kind, detail)


def _strip_common_top(files: Iterable[str], folders: list[str]) -> int:
    """1 when everything sits in one plain wrapper folder (e.g. `cifar10-jpeg/`), else 0.

    A single top folder that holds images directly (`3/*.png`) is a class, not a wrapper.
    """
    firsts, loose, image_directly_inside = set(), set(), False
    for path in files:
        first, _, rest = path.partition("/")
        firsts.add(first)
        if len(firsts) > 1:
            return 0
        if not rest:
            loose.add(first)
        elif "/" not in rest and _is_image_name(rest):
            image_directly_inside = True
    firsts.update(folder.split("/")[0] for folder in folders)
    if len(firsts) != 1:
        return 0
    (top,) = firsts
    if top in PREDEFINED_SPLITS or top in loose:
        return 0
    return 0 if image_directly_inside else 1


def _place(parts: list[str], predefined: bool, split: str | None) -> tuple[str | None, list[str]]:
    """(split hint, the components below the split folder) of one path."""
    return (parts[0], parts[1:]) if predefined and parts else (split, parts)


@dataclass
class _Tree:
    """One folder or archive, read: its images' metadata in file order (their pixels are in
    the cache) and what was wrong."""

    paths: Paths
    shas: np.ndarray        # S32
    placements: np.ndarray  # int32 (pack, row) in the decode cache
    sizes: np.ndarray       # int32 (width, height) of the original
    splits: np.ndarray      # int8 split hint codes (examples.SPLIT_CODE)
    labels: np.ndarray      # int32 index into label_names
    label_names: list[str]
    classes: list[str]
    problems: list[Problem]
    packs: np.ndarray       # every pack holding a verdict on a file of the tree
    files: int              # image files found
    read: int               # of them, read (the others' stat was unchanged since the last run)


def _read_tree(root: str, role: str | None, policy: _Policy, cache: DecodeCache, pool, slots: int) -> _Tree:
    """`role` "test": every image is test (data.test_path); "train": nothing is drawn into test,
    but a train/val layout is kept; None: the tree's own layout, or the hash split."""
    image_bytes = policy.size * policy.size * policy.channels
    reader = _Reader(root, cache, chunk=max(16, min(512, CHUNK_BYTES // image_bytes)))
    for number, result in enumerate(executors.in_order(pool, slots, _decode_chunk, reader.tasks(policy))):
        reader.decoded(number, result)
    files = reader.files
    paths = files.paths.build()
    placements, sizes = files.columns()
    bad = sorted(files.problems)
    # Unsafe entries (absolute, '..') say nothing about the layout.
    named = [p.path for p in reader.problems if p.kind != "unsafe_entry"]
    skip = _strip_common_top(itertools.chain(paths, named), reader.folders)
    trimmed = lambda path: path.split("/")[skip:]
    below_top = lambda path: path.split("/", skip + 1)[skip:skip + 1]  # trimmed(path)[:1], splitting less
    firsts = {first for p in itertools.chain(paths, named, reader.folders) for first in below_top(p)}
    predefined = role != "test" and "train" in firsts and firsts <= set(PREDEFINED_SPLITS)

    problems = list(reader.problems) + [Problem(files.problems[i][1], paths[i], files.problems[i][2]) for i in bad]
    classes = set()
    for folder in reader.folders:  # a class folder counts even when it holds no usable image
        below = _place(trimmed(folder), predefined, role)[1]
        if below:
            classes.add(below[0])
    # A file's split and class depend on its folder only: placed once per folder, not once per file.
    placed: dict[str, tuple[int, str | None]] = {}  # folder -> (split hint code, class or None: outside any)
    label_index: dict[str, int] = {}
    dropped, splits, labels = [], array.array("b"), array.array("i")
    for i, path in enumerate(paths):
        if i in files.problems:
            dropped.append(i)
            continue
        folder = path[:path.rfind("/") + 1]
        if folder not in placed:
            split, below = _place(trimmed(path), predefined, role)
            placed[folder] = SPLIT_CODE[split], below[0] if len(below) >= 2 else None
        split, label = placed[folder]
        if label is None:  # a file directly in the root (or a split folder) has no class
            where_ = f" of {root}" if role == "test" else ""
            problems.append(Problem("outside_class_folder", path, f"images must be inside a class folder{where_}"))
            dropped.append(i)
            continue
        splits.append(split)
        labels.append(label_index.setdefault(label, len(label_index)))
    classes.update(label_index)
    packs = np.union1d(placements[:, 0], np.array([files.problems[i][0] for i in bad], np.int32))
    shas = np.frombuffer(files.shas, "S32")
    if dropped:  # else the columns as read, not a copy of each
        keep = np.delete(np.arange(len(paths)), dropped)
        paths, shas, placements, sizes = paths.take(keep), shas[keep], placements[keep], sizes[keep]
    return _Tree(Paths.of(f"{root}:{path}" for path in paths) if role == "test" else paths,
                 shas, placements, sizes, np.frombuffer(splits, np.int8), np.array(labels, np.int32),
                 list(label_index), sorted(classes), problems, packs, len(files.paths), reader.read)


def load_folder(settings: DataSettings, cache: DecodeCache, pool, slots: int) -> Examples:
    """Every image under data.path (and data.test_path), by the image policy: decoded once into
    the cache (on `pool`, `slots` at a time), read from it at write time, so memory holds metadata only."""
    policy = _Policy(settings.image_size, settings.channels, settings.min_size, settings.max_pixels)
    # A separate test set given: nothing else may be drawn into test.
    roots = [(settings.path, "train"), (settings.test_path, "test")] if settings.test_path else [(settings.path, None)]
    trees = [_read_tree(root, role, policy, cache, pool, slots) for root, role in roots]
    cache.prune(np.concatenate([tree.packs for tree in trees]))
    cache.close_index()
    print(f"decode cache {cache.folder}: {cache.decoded} of {sum(tree.files for tree in trees)} image files "
          f"decoded, {sum(tree.read for tree in trees)} read")
    class_names = tuple(sorted({name for tree in trees for name in tree.classes}))
    index = {name: i for i, name in enumerate(class_names)}
    labels = [np.array([index[name] for name in tree.label_names], np.int64)[tree.labels] for tree in trees]
    problems = [problem for tree in trees for problem in tree.problems]
    paths = Paths.concat([tree.paths for tree in trees])
    columns = [[tree.placements for tree in trees], [tree.sizes for tree in trees], [tree.shas for tree in trees],
               [tree.splits for tree in trees]]
    del trees  # each column's parts are now held once, by `columns`
    # A folder's walk is usually in path order already (nothing to sort or copy); an archive's entries need not be.
    order = None if paths.is_sorted() else paths.sorted_order()
    placements, sizes, hashes, split_hints = (_in_order(parts, order) for parts in columns)
    return Examples(
        pixels=CachedPixels(cache, placements[:, 0], placements[:, 1]),
        labels=_in_order(labels, order),
        class_names=class_names,
        paths=paths if order is None else paths.take(order),
        hashes=hashes,
        sizes=sizes,
        split_hints=split_hints,
        problems=problems,
    )


def _in_order(parts: list[np.ndarray], order: np.ndarray | None) -> np.ndarray:
    """The parts end to end, in `order` (None: as they are). `parts` is emptied as soon as they are
    joined, so that a large folder's column is in memory twice at most while it is put in order."""
    column = parts[0] if len(parts) == 1 else np.concatenate(parts)
    parts.clear()
    return column if order is None else column[order]
