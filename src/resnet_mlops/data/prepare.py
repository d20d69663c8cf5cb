"""The `prepare` stage: load the source, split it, write data/prepared/ atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from resnet_mlops import atomic
from resnet_mlops.config import DataSettings
from resnet_mlops.data.prepared import Split, write_split
from resnet_mlops.data.sources import load_source
from resnet_mlops.data.split import SPLITS, example_hashes, stratified_split


def prepare(settings: DataSettings, seed: int, out_dir: str | Path) -> dict:
    """Write the train/val/test arrays and summary.json to `out_dir`; return the summary."""
    source = load_source(settings)
    indices = stratified_split(source.labels, example_hashes(source.images), seed,
                               settings.val_fraction, settings.test_fraction)
    splits = {name: Split(source.images[idx], source.labels[idx]) for name, idx in indices.items()}
    summary = {
        "source": settings.source,
        "class_names": list(source.class_names),
        "image_shape": list(source.images.shape[1:]),
        "splits": {name: _describe(splits[name], source.class_names) for name in SPLITS},
    }
    summary["content_hash"] = _combined_hash(summary["splits"])
    with atomic.atomic_directory(out_dir) as tmp:
        for name in SPLITS:
            write_split(tmp, name, splits[name])
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _describe(split: Split, class_names: tuple[str, ...]) -> dict:
    counts = np.bincount(split.labels, minlength=len(class_names))
    return {
        "count": int(len(split.labels)),
        "per_class": {name: int(n) for name, n in zip(class_names, counts)},
        "sha256": split.sha256(),
    }


def _combined_hash(splits: dict) -> str:
    return hashlib.sha256("".join(splits[name]["sha256"] for name in SPLITS).encode()).hexdigest()
