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

from resnet_mlops.data.examples import TEST, TRAIN, VAL, hex_digests
_BLOCK = 1 << 16  # hashes turned to hex at a time


def draw(seed: int, content_hash: str) -> float:
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def assign(hashes: np.ndarray, hints: np.ndarray, seed: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """The split of every image as an int8 code (its index in SPLITS), from the raw sha256 digests
    (S32) and the codes of the splits the source fixed (examples.split_codes: NO_HINT where none)."""
    codes = np.empty(len(hashes), dtype=np.int8)
    for start in range(0, len(hashes), _BLOCK):
        block_hints = hints[start:start + _BLOCK].tolist()
        for i, (content_hash, hint) in enumerate(zip(hex_digests(hashes, start, start + _BLOCK), block_hints), start):
            if hint in (TEST, VAL):
                codes[i] = hint
                continue
            u = draw(seed, content_hash)
            if hint == TRAIN:  # the source fixed test: val is a share of the rest
                codes[i] = VAL if u < val_fraction else TRAIN
            elif u < test_fraction:
                codes[i] = TEST
            else:
                codes[i] = VAL if u < test_fraction + val_fraction else TRAIN
    return codes
