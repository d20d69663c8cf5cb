"""A deterministic, seeded, stratified train/val/test split.

Within each class, examples are ordered by a hash of (seed, image bytes) and the
first `test_fraction` of them go to test, the next `val_fraction` to val. The
order depends only on content and seed, never on file order or on the random
state of the process, so the same data and seed always give the same split.
"""

from __future__ import annotations

import hashlib

import numpy as np

SPLITS = ("train", "val", "test")


def example_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha256(image.tobytes()).hexdigest() for image in images]


def stratified_split(labels: np.ndarray, hashes: list[str], seed: int,
                     val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Indices of each split, every class divided in the same proportions."""
    def key(index: int) -> tuple[str, int]:
        # The index breaks ties between identical images, keeping the order total.
        return hashlib.sha256(f"{seed}:{hashes[index]}".encode()).hexdigest(), index

    chosen: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = sorted(np.flatnonzero(labels == label).tolist(), key=key)
        n_test = round(len(members) * test_fraction)
        n_val = round(len(members) * val_fraction)
        chosen["test"] += members[:n_test]
        chosen["val"] += members[n_test:n_test + n_val]
        chosen["train"] += members[n_test + n_val:]
    return {name: np.array(sorted(idx), dtype=np.int64) for name, idx in chosen.items()}
