"""The prepared dataset on disk (data/prepared/), written by `prepare` and read by the later stages.

    summary.json       class names, image shape, format, per split: count, counts per class, sha256
    stats.json         counts per class and split; per-channel mean and std of train (0..1 scale)
    manifest.parquet   one row per image: source path, label, split, content hash, original size
    <split>_images.npy / <split>_labels.npy     format "arrays" (the default): uint8 arrays
    <split>-NNNNN-of-MMMMM.tfrecord             format "tfrecord" (data.stream: true): shards,
                                                see data/tfrecords.py

`.npy` rather than `.npz`, and pyarrow's parquet writer, because both write
identical bytes for identical data, so re-preparing unchanged data keeps the DVC hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_mlops.dataset.tfrecords import read_tfrecords
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


def write_arrays(folder: Path, name: str, split: Split) -> list[str]:
    np.save(folder / f"{name}_images.npy", split.images, allow_pickle=False)
    np.save(folder / f"{name}_labels.npy", split.labels, allow_pickle=False)
    return [f"{name}_images.npy", f"{name}_labels.npy"]


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
