"""The evaluate stage's figures as PNGs, and their DVC plot data: the confusion matrix (counts and
row-normalised), the reliability diagram and the most confident mistakes."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from resnet_mlops import atomic

RELIABILITY_COLUMNS = ("lower", "upper", "confidence", "accuracy", "count")


def write_confusion_csv(path: Path, labels: np.ndarray, predictions: np.ndarray,
                        class_names: list[str]) -> None:
    """One row per test example, as DVC's `confusion` template expects."""
    with atomic.atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["actual", "predicted"])
        writer.writerows((class_names[a], class_names[p]) for a, p in zip(labels, predictions))


def write_confusion_png(path: Path, matrix: np.ndarray, class_names: list[str], title: str,
                        cell_format: str = "{}") -> None:
    """The matrix as a grid of cells, each printed with `cell_format` ("{:.2f}" for fractions)."""
    plt = _pyplot()
    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=90)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), value in np.ndenumerate(matrix):
        ax.text(col, row, cell_format.format(value), ha="center", va="center", fontsize=8,
                color="white" if value > threshold else "black")
    _save(fig, path)


def write_reliability_csv(path: Path, table: list[dict]) -> None:
    """The rows of `metrics.reliability_table`, one per non-empty confidence bin."""
    with atomic.atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(RELIABILITY_COLUMNS)
        for row in table:
            writer.writerow([f"{row[column]:.6f}" for column in RELIABILITY_COLUMNS[:-1]] + [row["count"]])


def write_reliability_png(path: Path, table: list[dict], ece: float) -> None:
    """Each bin's accuracy as a bar over its confidence range, against the diagonal a perfectly
    calibrated model would follow; each bar's mean confidence marked on it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    lower = [row["lower"] for row in table]
    ax.bar(lower, [row["accuracy"] for row in table], width=[row["upper"] - row["lower"] for row in table],
           align="edge", color="tab:blue", edgecolor="white", label="accuracy")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot([row["confidence"] for row in table], [row["accuracy"] for row in table], "o", color="tab:red",
            markersize=4, label="mean confidence")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top label)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability: ECE {ece:.3f} ({sum(row['count'] for row in table)} test images)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3, fontsize=8)  # clear of the bars
    _save(fig, path)


def most_confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """The indices of up to `count` wrong predictions, the most probable predicted class first."""
    wrong = np.flatnonzero(probabilities.argmax(axis=1) != labels)
    confidence = probabilities[wrong].max(axis=1)
    return wrong[np.argsort(-confidence, kind="stable")[:count]]


def write_mistakes_png(path: Path, images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                       class_names: list[str], count: int = 16) -> None:
    """A grid of the `count` most confident mistakes (uint8 images, N x H x W x 1 or 3), each titled
    with its true and predicted class; a PNG saying there are none when the model made none."""
    plt = _pyplot()
    chosen = most_confident_mistakes(probabilities, labels, count)
    if not len(chosen):
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.text(0.5, 0.5, f"no mistakes on the {len(labels)} test images", ha="center", va="center")
        ax.axis("off")
        _save(fig, path)
        return
    columns = min(4, len(chosen))
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, chosen):
        image = images[index]
        grey = image.shape[-1] == 1
        ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=255,
                  interpolation="nearest")
        predicted = probabilities[index].argmax()
        ax.set_title(f"true {class_names[labels[index]]} / predicted {class_names[predicted]}\n"
                     f"(p={probabilities[index, predicted]:.2f})", fontsize=8)
    fig.suptitle(f"the {len(chosen)} most confident mistakes on the test split")
    _save(fig, path)


def _pyplot():
    """matplotlib's pyplot on the Agg backend: a stage has no display."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save(fig, path: Path) -> None:
    """Write `fig` to `path` as a PNG, atomically, and free it."""
    from matplotlib import pyplot

    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    pyplot.close(fig)
