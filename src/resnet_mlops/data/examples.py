"""What every source hands to validation and the split: decoded images with their provenance."""

from __future__ import annotations

import array
import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from resnet_mlops.dataset.images import to_pixels

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = 0, 1, 2  # each split's code in int8 columns: its index in SPLITS
NO_HINT = -1                # a split hint's code where the source fixed no split
SPLIT_CODE = {None: NO_HINT, **{name: code for code, name in enumerate(SPLITS)}}  # name (None: no hint) -> code


def split_codes(names: Iterable[str | None]) -> np.ndarray:
    """Split names (None: no hint) as an int8 column of their codes (SPLIT_CODE)."""
    return np.array([SPLIT_CODE[name] for name in names], np.int8)


def split_names(codes: np.ndarray) -> np.ndarray:
    """The split names (an object array of str) of int8 codes, none of them NO_HINT."""
    return np.array(SPLITS, dtype=object)[codes]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, as listed in reports/data_validation.json."""

    kind: str    # e.g. "undecodable", "duplicate", "unsafe_entry", "empty_class"
    path: str    # the file (or class folder) it concerns
    detail: str

    def sentence(self) -> str:
        return f"{self.path}: {self.kind.replace('_', ' ')} ({self.detail})"


class ArrayPixels:
    """Pixels held in memory, as the small built-in sources give them; `take` returns rows of it.

    The folder source gives `cache.CachedPixels` instead, with the same three members, which
    reads them from the decode cache: nothing downstream holds a whole dataset's pixels.
    """

    def __init__(self, images: np.ndarray):
        self.images = images
        self.shape = images.shape[1:]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: np.ndarray) -> "ArrayPixels":
        return ArrayPixels(self.images[index])

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.images[index]


class Paths:
    """File paths as one Arrow string column: their UTF-8 text end to end and an offset each, not
    a Python string each (a folder of millions of images keeps its paths in a few dozen MB).
    Indexing gives a str; iterating makes the strings a block at a time."""

    _BLOCK = 1 << 16

    def __init__(self, column: pa.Array):
        self.column = column  # large_string

    @classmethod
    def of(cls, paths: Iterable[str]) -> "Paths":
        return cls(pa.array(list(paths), pa.large_string()))

    @classmethod
    def concat(cls, parts: "list[Paths]") -> "Paths":
        if len(parts) == 1:
            return parts[0]  # concat_arrays would copy the one column
        return cls(pa.concat_arrays([part.column for part in parts]))

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, i) -> str:
        return self.column[int(i)].as_py()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self.column), self._BLOCK):
            yield from self.column.slice(start, self._BLOCK).to_pylist()

    def take(self, index: np.ndarray) -> "Paths":
        return Paths(self.column.take(pa.array(index, pa.int64())))

    def is_sorted(self) -> bool:
        """Whether the paths are in the order `sorted_order` gives, without sorting them."""
        if len(self.column) < 2:
            return True
        return pc.all(pc.less_equal(self.column.slice(0, len(self.column) - 1), self.column.slice(1))).as_py()

    def sorted_order(self) -> np.ndarray:
        """The indexes that sort the paths as Python sorts str (UTF-8 bytes sort as code points), stably."""
        return pc.sort_indices(self.column).to_numpy().astype(np.intp)


class PathsBuilder:
    """Paths appended a batch at a time, straight into the column's two buffers."""

    def __init__(self):
        self._text = bytearray()
        self._ends = array.array("q", [0])

    def __len__(self) -> int:
        return len(self._ends) - 1

    def extend(self, paths: Iterable[str]) -> None:
        for path in paths:
            self._text += path.encode()
            self._ends.append(len(self._text))

    def build(self) -> Paths:
        """The column (it shares this builder's buffers: add nothing after)."""
        return Paths(pa.Array.from_buffers(pa.large_string(), len(self),
                                           [None, pa.py_buffer(self._ends), pa.py_buffer(self._text)]))


@dataclass
class Examples:
    """Images in file order. `split_hints[i]` is the split a source fixed (its own test set), or NO_HINT."""

    pixels: "ArrayPixels"            # uint8 (N, H, W, C), in memory or in the decode cache
    labels: np.ndarray               # int64 (N,), index into class_names
    class_names: tuple[str, ...]
    paths: Paths
    hashes: np.ndarray               # S32 (N,): sha256 of the original file bytes (or of the pixels), raw
    sizes: np.ndarray                # int32 (N, 2): original (width, height)
    split_hints: np.ndarray          # int8 (N,): the index in SPLITS, or NO_HINT
    problems: list[Problem] = field(default_factory=list)  # found while reading; already excluded

    # Columns, not a Python object per image: a few dozen bytes each besides the path, so that
    # a dataset of millions of images fits in memory as metadata (issue 15).

    def subset(self, keep: np.ndarray) -> "Examples":
        index = np.flatnonzero(keep) if keep.dtype == bool else keep
        return Examples(self.pixels.subset(index), self.labels[index], self.class_names,
                        self.paths.take(index), self.hashes[index], self.sizes[index],
                        self.split_hints[index], list(self.problems))


def hex_digests(shas: np.ndarray, start: int = 0, stop: int | None = None) -> list[str]:
    """The hex digests of `shas[start:stop]` (S32), through the raw bytes: numpy drops an element's
    trailing zero bytes when it hands it out."""
    blob = np.ascontiguousarray(shas[start:stop]).tobytes().hex()
    return [blob[i:i + 64] for i in range(0, len(blob), 64)]


def digest_prefixes(digests: np.ndarray) -> np.ndarray:
    """Each digest's first 8 bytes (S16 or S32) as a big-endian integer: they sort as the digests do,
    and numpy compares integers many times faster than it compares strings."""
    words = np.ascontiguousarray(digests).view(">u8")  # no copy of a column of digests
    return words.reshape(-1, digests.dtype.itemsize // 8)[:, 0].copy()


def from_arrays(images: np.ndarray, labels, class_names: tuple[str, ...], paths: list[str],
                split_hints: list[str | None], size: int, channels: int) -> Examples:
    """Examples from a source that ships uint8 arrays (N, H, W[, C]), brought to the image
    policy's `size` and `channels` when they differ, and identified by a hash of their pixels."""
    height, width = images.shape[1:3]
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.shape[1:] != (size, size, channels):
        images = np.stack([to_pixels(Image.fromarray(x.squeeze(-1) if x.shape[-1] == 1 else x), size, channels)
                           for x in images])
    return Examples(
        pixels=ArrayPixels(images), labels=np.asarray(labels, dtype=np.int64), class_names=class_names, paths=Paths.of(paths),
        hashes=np.array([hashlib.sha256(x.tobytes()).digest() for x in images], dtype="S32"),
        sizes=np.tile(np.array([width, height], np.int32), (len(paths), 1)),
        split_hints=split_codes(split_hints),
    )
