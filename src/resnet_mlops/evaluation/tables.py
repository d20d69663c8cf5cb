"""The evaluate stage's tables: metrics per class (CSV) and the prediction of each test image (parquet)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_mlops import atomic
from resnet_mlops.errors import UserError


def write_per_class_csv(path: Path, rows: list[dict], class_names: list[str]) -> None:
    """One row per class: precision, recall, F1 and support."""
    with atomic.atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for name, row in zip(class_names, rows, strict=True):
            writer.writerow([name, f"{row['precision']:.6f}", f"{row['recall']:.6f}", f"{row['f1']:.6f}",
                             row["support"]])


def test_hashes(prepared: Path) -> list[str]:
    """The content hash of each test image, in the test split's order (the manifest's)."""
    manifest = pd.read_parquet(Path(prepared) / "manifest.parquet", columns=["split", "sha256"])
    return manifest.loc[manifest["split"] == "test", "sha256"].tolist()


def write_predictions(path: Path, hashes: list[str], labels: np.ndarray, probabilities: np.ndarray,
                      class_names: list[str]) -> None:
    """Per test image: its content hash, true and predicted class, and every class's probability,
    so that two models scored on one test set can be compared image by image."""
    predictions = probabilities.argmax(axis=1)
    frame = pd.DataFrame({
        "sha256": hashes,
        "label": labels.astype(np.int64),
        "label_name": [class_names[i] for i in labels],
        "predicted": predictions.astype(np.int64),
        "predicted_name": [class_names[i] for i in predictions],
        "probabilities": list(probabilities.astype(np.float32)),
    })
    with atomic.atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_probabilities(path: Path, hashes: list[str]) -> np.ndarray:
    """The class probabilities `write_predictions` wrote, in the order of `hashes` (the current test
    split's); a file scored on another test set is refused, naming the stage that rewrites it."""
    try:
        frame = pd.read_parquet(path, columns=["sha256", "probabilities"])
    except OSError:
        raise UserError(f"{path} is missing; run the evaluate stage first") from None
    if frame["sha256"].tolist() != list(hashes):
        raise UserError(f"{path} holds the predictions for another test set than data/prepared's; "
                        f"run the evaluate stage again (dvc repro)")
    return np.stack(frame["probabilities"].to_numpy()) if len(frame) else np.zeros((0, 0), np.float32)
