"""The prepared dataset on disk (data/prepared/), written by `prepare` and read by the later stages.

    summary.json       class names, image shape, format, per split: count, counts per class, sha256
    stats.json         counts per class and split; per-channel mean and std of train (0..1 scale)
    manifest.parquet   one row per image: source path, label, split, content hash, original size
    <split>_images.npy / <split>_labels.npy     format "arrays" (the default): uint8 arrays
    <split>-NNNNN-of-MMMMM.tfrecord             format "tfrecord" (data.stream: true): shards,
                                                see dataset/tfrecords.py

`.npy` rather than `.npz`, and pyarrow's parquet writer, because both write
identical bytes for identical data, so re-preparing unchanged data keeps the DVC hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from resnet_mlops.dataset import tfrecords
from resnet_mlops.dataset.tfrecords import read_tfrecords, shard, shard_names
from resnet_mlops.errors import UserError


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for array in (self.images, self.labels):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


@dataclass(frozen=True)
class Written:
    """A split as written: its files, the sha256 `Split.sha256` gives it, and per channel the number,
    sum and sum of squares of its pixel values (exact integers: the statistics need no second pass)."""

    files: list[str]
    sha256: str
    moments: np.ndarray  # int64 (3, channels): count, sum, sum of squares (zeros when not asked for)


# The pixels of one unit of writing: a block is read, hashed and handed to `in_order` to be encoded
# (with a pool, a few blocks are in flight at once), whatever the dataset's size.
BLOCK_BYTES = 4 << 20


def write_split(folder: Path, name: str, stream: bool, images: Callable[[int, int], np.ndarray], labels: np.ndarray,
                shape: tuple[int, ...], moments: bool = True, in_order: Callable = map) -> Written:
    """Write a split of `len(labels)` images, `images(start, stop)` giving rows start..stop of them:
    as TFRecord shards of SHARD_EXAMPLES images, or (not `stream`) as the two .npy arrays.

    Read, hashed and written here in blocks of at most BLOCK_BYTES of pixels, none across a
    shard's end; each block is encoded (its records framed, its moments summed when `moments`)
    by `in_order(fn, blocks)`, a map yielding results in order: `map` here, or prepare's worker
    processes or Dask cluster (data/executors.py), the same bytes either way.
    """
    count = len(labels)
    labels = np.asarray(labels, np.int64)
    digest = hashlib.sha256(str((count, *shape)).encode())
    files = shard_names(name, count) if stream else [f"{name}_images.npy", f"{name}_labels.npy"]
    per_shard = tfrecords.SHARD_EXAMPLES
    block = max(1, min(per_shard, BLOCK_BYTES // int(np.prod(shape))))
    spans = [(start, min(start + block, first + per_shard, count))
             for first in range(0, count, per_shard) for start in range(first, min(first + per_shard, count), block)]

    def blocks():
        for start, stop in spans:
            pixels = np.ascontiguousarray(images(start, stop))
            digest.update(pixels.data)
            yield stream, moments, pixels, labels[start:stop]

    totals = np.zeros((3, shape[-1]), np.int64)
    out = None
    if not stream:
        out = open(folder / files[0], "wb")
        np.lib.format.write_array_header_1_0(out, {"descr": "|u1", "fortran_order": False, "shape": (count, *shape)})
    try:
        for (start, _), (data, block_moments) in zip(spans, in_order(encode_block, blocks())):
            if stream and start % per_shard == 0:
                if out:
                    out.close()
                out = open(folder / files[start // per_shard], "wb")
            out.write(data)
            totals += block_moments
    finally:
        if out:
            out.close()
    digest.update(str(labels.shape).encode())
    digest.update(labels.tobytes())
    if not stream:
        np.save(folder / files[1], labels, allow_pickle=False)
    return Written(files, digest.hexdigest(), totals)


def encode_block(task: tuple[bool, bool, np.ndarray, np.ndarray]) -> tuple[bytes | np.ndarray, np.ndarray]:
    """A unit of writing, on a worker or here: (stream, moments, images, labels) -> the block's bytes
    in the file (its framed records, or the pixels themselves) and its moments (zeros when not asked)."""
    stream, moments, images, labels = task
    data = shard(images, labels) if stream else images
    return data, _moments(images) if moments else np.zeros((3, images.shape[-1]), np.int64)


def _moments(images: np.ndarray) -> np.ndarray:
    """(count, sum, sum of squares) per channel, exactly: float64 sums of 65,536 values at a time
    (each below 2 ** 53) added up as integers; a few times faster than numpy's integer reductions."""
    channels = np.ascontiguousarray(images.reshape(-1, images.shape[-1]).T)
    out = np.zeros((3, len(channels)), np.int64)
    for c, values in enumerate(channels):
        for start in range(0, len(values), 1 << 16):
            part = values[start:start + (1 << 16)].astype(np.float64)
            out[:, c] += len(part), int(part.sum()), int(np.einsum("i,i->", part, part))
    return out


def read_summary(folder: str | Path) -> dict:
    path = Path(folder) / "summary.json"
    try:
        return json.loads(path.read_text())
    except OSError:
        raise UserError(f"{path} is missing; run `dvc repro prepare` first") from None


def read_split(folder: str | Path, name: str) -> Split:
    """A whole split in memory, from either format."""
    folder = Path(folder)
    summary = read_summary(folder)
    try:
        if summary["format"] == "tfrecord":
            return Split(*read_tfrecords([folder / f for f in summary["splits"][name]["files"]],
                                         tuple(summary["image_shape"])))
        return Split(images=np.load(folder / f"{name}_images.npy", allow_pickle=False),
                     labels=np.load(folder / f"{name}_labels.npy", allow_pickle=False))
    except OSError:
        raise UserError(f"{folder}: the prepared '{name}' split is missing; run `dvc repro prepare` first") from None
