"""The split: a function of each image's content hash and the seed, and nothing else.

Each image draws u = sha256(seed, content hash) as a number in [0, 1); it goes
to test when u < test_fraction, to val when u < test_fraction + val_fraction,
else to train. So the same data and seed always give the same split, adding
images never moves an existing one, and identical images always land together
(no leakage by duplication). The split is stratified: every class is cut at the
same thresholds, so each gets its fractions up to sampling noise.

A source with its own test set (CIFAR-10's test batch, a `test/` folder) keeps
it: those images stay in test, and val is drawn from the rest with the same rule.
"""

from __future__ import annotations

import hashlib

import numpy as np

SPLITS = ("train", "val", "test")


def draw(seed: int, content_hash: str) -> float:
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def assign(hashes: list[str], hints: list[str | None], seed: int,
           val_fraction: float, test_fraction: float) -> np.ndarray:
    """The split name of every image."""
    names = []
    for content_hash, hint in zip(hashes, hints):
        if hint in ("test", "val"):
            names.append(hint)
            continue
        u = draw(seed, content_hash)
        if hint == "train":  # the source fixed test: val is a share of the rest
            names.append("val" if u < val_fraction else "train")
        elif u < test_fraction:
            names.append("test")
        else:
            names.append("val" if u < test_fraction + val_fraction else "train")
    return np.array(names)
