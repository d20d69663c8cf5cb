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

from resnet_mlops.data.examples import hex_digests

SPLITS = ("train", "val", "test")
_BLOCK = 1 << 16  # hashes turned to hex at a time


def draw(seed: int, content_hash: str) -> float:
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def assign(hashes: np.ndarray, hints, seed: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """The split name of every image (an object array of the names in SPLITS), from the raw sha256
    digests (S32) and the splits the source fixed (None where it fixed none)."""
    names = np.empty(len(hashes), dtype=object)
    for start in range(0, len(hashes), _BLOCK):
        for i, content_hash in enumerate(hex_digests(hashes, start, start + _BLOCK), start):
            hint = hints[i]
            if hint in ("test", "val"):
                names[i] = hint
                continue
            u = draw(seed, content_hash)
            if hint == "train":  # the source fixed test: val is a share of the rest
                names[i] = "val" if u < val_fraction else "train"
            elif u < test_fraction:
                names[i] = "test"
            else:
                names[i] = "val" if u < test_fraction + val_fraction else "train"
    return names
