"""The prepared dataset on disk: one uint8 image array and one label array per split, plus summary.json.

`.npy` files (not `.npz`) because numpy writes them byte-for-byte identically for
identical arrays, so re-preparing unchanged data gives the same DVC hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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


def write_split(folder: Path, name: str, split: Split) -> None:
    np.save(folder / f"{name}_images.npy", split.images, allow_pickle=False)
    np.save(folder / f"{name}_labels.npy", split.labels, allow_pickle=False)


def read_split(folder: str | Path, name: str) -> Split:
    folder = Path(folder)
    try:
        return Split(images=np.load(folder / f"{name}_images.npy", allow_pickle=False),
                     labels=np.load(folder / f"{name}_labels.npy", allow_pickle=False))
    except OSError:
        raise UserError(f"{folder}: the prepared '{name}' split is missing; run `dvc repro prepare` first") from None


def read_summary(folder: str | Path) -> dict:
    path = Path(folder) / "summary.json"
    try:
        return json.loads(path.read_text())
    except OSError:
        raise UserError(f"{path} is missing; run `dvc repro prepare` first") from None
