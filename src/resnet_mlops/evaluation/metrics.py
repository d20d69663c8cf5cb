"""Test-set metrics from a model's class probabilities."""

from __future__ import annotations

import numpy as np


def classification_metrics(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean cross-entropy and accuracy, as Keras reports them."""
    eps = np.finfo(np.float32).eps
    picked = np.clip(probabilities[np.arange(len(labels)), labels], eps, 1.0)
    predictions = probabilities.argmax(axis=1)
    return {
        "test_loss": float(-np.log(picked).mean()),
        "test_accuracy": float((predictions == labels).mean()),
        "test_examples": int(len(labels)),
    }


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """matrix[actual, predicted] = count."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix
