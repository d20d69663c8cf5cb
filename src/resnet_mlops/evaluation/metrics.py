"""Test-set metrics from a model's class probabilities: the headline figures, per class, calibration."""

from __future__ import annotations

import numpy as np


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray, top_k: int = 5,
                           calibration_bins: int = 15) -> dict[str, float]:
    """The flat figures of reports/metrics.json: loss and accuracy as Keras reports them, top-k
    accuracy (k at most the number of classes), macro-F1 and the expected calibration error."""
    eps = np.finfo(np.float32).eps
    picked = np.clip(probabilities[np.arange(len(labels)), labels], eps, 1.0)
    predictions = probabilities.argmax(axis=1)
    k = min(top_k, probabilities.shape[1])
    best_k = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return {
        "test_loss": float(-np.log(picked).mean()),
        "test_accuracy": float((predictions == labels).mean()),
        "test_top_k_accuracy": float((best_k == labels[:, None]).any(axis=1).mean()),
        "test_macro_f1": float(np.mean([row["f1"] for row in per_class(labels, predictions, probabilities.shape[1])])),
        "test_ece": expected_calibration_error(probabilities, labels, calibration_bins),
        "test_examples": int(len(labels)),
    }


def per_class(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> list[dict]:
    """Precision, recall, F1 and support of each class (0 where a ratio has nothing to count)."""
    matrix = confusion_matrix(labels, predictions, num_classes)
    rows = []
    for index in range(num_classes):
        hits, predicted, actual = matrix[index, index], matrix[:, index].sum(), matrix[index].sum()
        precision = hits / predicted if predicted else 0.0
        recall = hits / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"precision": float(precision), "recall": float(recall), "f1": float(f1),
                     "support": int(actual)})
    return rows


def reliability_table(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> list[dict]:
    """The reliability diagram's rows, one per non-empty equal-width confidence bin
    (i/bins, (i+1)/bins] of the top label, in order: its edges, the mean confidence and the
    accuracy of the images in it, and their count. The ECE is computed from these same rows."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (i/bins, (i+1)/bins]
    rows = []
    for index in np.unique(which):
        members = which == index
        rows.append({"lower": float(index / bins), "upper": float((index + 1) / bins),
                     "confidence": float(confidence[members].mean()), "accuracy": float(correct[members].mean()),
                     "count": int(members.sum())})
    return rows


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Top-label ECE with `bins` equal-width confidence bins over (0, 1] (Guo et al. 2017):
    the mean over images of |accuracy - confidence| of the bin each image's confidence falls in."""
    return calibration_error(reliability_table(probabilities, labels, bins))


def calibration_error(table: list[dict]) -> float:
    """The ECE of a `reliability_table`: its bins' |accuracy - confidence|, weighted by count."""
    images = sum(row["count"] for row in table)
    total = sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table)
    return float(total / images) if images else 0.0


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """A confusion matrix with each actual class's row divided by its count (recall on the
    diagonal); the row of a class with no images stays zeros."""
    counts = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, counts, out=np.zeros(matrix.shape), where=counts > 0)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """matrix[actual, predicted] = count."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix
