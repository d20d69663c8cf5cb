"""The evaluate stage's figures against values worked out by hand (and ECE against a plain reference)."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_mlops.evaluation.metrics import classification_metrics, expected_calibration_error, per_class

# Confidences 0.95, 0.85, 0.65, 0.75 (off every bin edge); right, wrong, right, wrong.
PROBABILITIES = np.array([[0.95, 0.05], [0.85, 0.15], [0.35, 0.65], [0.25, 0.75]])
LABELS = np.array([0, 1, 1, 0])


def reference_ece(probabilities, labels, bins):
    """ECE as its definition reads: over bins (lower, upper], the share of images times the gap."""
    confidence, correct = probabilities.max(1), probabilities.argmax(1) == labels
    total = 0.0
    for lower, upper in zip(np.arange(bins) / bins, np.arange(1, bins + 1) / bins):
        members = (confidence > lower) & (confidence <= upper)
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return total


def test_ece_in_two_bins_is_the_gap_of_the_one_bin_all_fall_in():
    # all four in (0.5, 1]: accuracy 0.5, mean confidence 0.8
    assert expected_calibration_error(PROBABILITIES, LABELS, 2) == pytest.approx(0.3)


def test_ece_in_ten_bins_averages_each_images_own_gap():
    # one image a bin: |1-0.95| + |0-0.85| + |1-0.65| + |0-0.75| = 2.0, over 4 images
    assert expected_calibration_error(PROBABILITIES, LABELS, 10) == pytest.approx(0.5)


def test_ece_agrees_with_the_reference_on_random_predictions():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(500, 10)) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 10, 500)
    for bins in (1, 5, 15, 40):
        assert expected_calibration_error(probabilities, labels, bins) == pytest.approx(
            reference_ece(probabilities, labels, bins))


def test_a_perfectly_confident_right_model_is_calibrated():
    assert expected_calibration_error(np.eye(3), np.arange(3), 15) == 0.0


def test_per_class_precision_recall_f1_and_support():
    labels, predictions = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 0])
    rows = per_class(labels, predictions, 3)
    assert rows[0] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert rows[1] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert rows[2] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}  # never predicted


def test_the_headline_figures():
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = np.array([0, 2, 2, 1])  # argmax right on images 0 and 2; the truth 2nd-most probable on 1 and 3
    metrics = classification_metrics(probabilities, labels, top_k=2, calibration_bins=10)
    assert metrics["test_accuracy"] == 0.5 and metrics["test_top_k_accuracy"] == 1.0
    assert metrics["test_loss"] == pytest.approx(-np.mean(np.log([0.5, 0.3, 0.5, 0.3])))
    # per class: 0 (P 1/2, R 1), 1 (P 0, R 0), 2 (P 1, R 1/2) -> F1 2/3, 0, 2/3
    assert metrics["test_macro_f1"] == pytest.approx(4 / 9)
    assert metrics["test_ece"] == pytest.approx(reference_ece(probabilities, labels, 10))
    assert metrics["test_examples"] == 4
    assert classification_metrics(probabilities, labels, top_k=9)["test_top_k_accuracy"] == 1.0  # k <= classes
    assert classification_metrics(probabilities, labels, top_k=1)["test_top_k_accuracy"] == 0.5
