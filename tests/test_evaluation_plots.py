"""The evaluate stage's figures: the tables behind them on inputs worked out by hand, and the PNG files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from resnet_mlops.evaluation.metrics import (calibration_error, confusion_matrix, expected_calibration_error,
                                             reliability_table, row_normalised)
from resnet_mlops.evaluation.plots import (RELIABILITY_COLUMNS, most_confident_mistakes, write_confusion_png,
                                           write_mistakes_png, write_reliability_csv, write_reliability_png)

# Top-label confidences 0.95 (right), 0.85 (wrong), 0.65 (right), 0.75 (wrong: on the edge 3/4)
# and 0.5 (wrong: on the edge 2/4).
PROBABILITIES = np.array([[0.95, 0.05, 0.0], [0.15, 0.85, 0.0], [0.65, 0.35, 0.0], [0.25, 0.75, 0.0],
                          [0.5, 0.25, 0.25]])
LABELS = np.array([0, 0, 0, 0, 2])


def random_predictions(seed: int, images: int = 400, classes: int = 10):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(images, classes)) * 3
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True), rng.integers(0, classes, images)


def test_reliability_table_in_four_bins_holds_the_non_empty_bins_with_upper_edges_inclusive():
    table = reliability_table(PROBABILITIES, LABELS, 4)
    # (0, 1/4] is empty; 0.5 falls in (1/4, 2/4], 0.75 in (2/4, 3/4]
    assert [(row["lower"], row["upper"], row["count"]) for row in table] == [(0.25, 0.5, 1), (0.5, 0.75, 2),
                                                                             (0.75, 1.0, 2)]
    assert [row["confidence"] for row in table] == pytest.approx([0.5, 0.7, 0.9])
    assert [row["accuracy"] for row in table] == pytest.approx([0.0, 0.5, 0.5])
    # (1 * 0.5 + 2 * 0.2 + 2 * 0.4) / 5
    assert expected_calibration_error(PROBABILITIES, LABELS, 4) == pytest.approx(0.34)


@pytest.mark.parametrize("bins", [1, 4, 15, 40])
def test_reliability_table_weighted_gaps_are_the_ece(bins):
    probabilities, labels = random_predictions(bins)
    table = reliability_table(probabilities, labels, bins)
    assert sum(row["count"] for row in table) == len(labels) and all(row["count"] > 0 for row in table)
    assert all(row["lower"] < row["confidence"] <= row["upper"] for row in table)
    assert {round(row["upper"] - row["lower"], 12) for row in table} == {round(1 / bins, 12)}
    weighted = sum(row["count"] * abs(row["accuracy"] - row["confidence"]) for row in table) / len(labels)
    assert weighted == pytest.approx(expected_calibration_error(probabilities, labels, bins))
    assert calibration_error(table) == expected_calibration_error(probabilities, labels, bins)


def test_no_images_make_an_empty_table_and_no_calibration_error():
    assert reliability_table(np.zeros((0, 3)), np.zeros(0, dtype=int), 15) == []
    assert calibration_error([]) == 0.0


def test_reliability_csv_has_one_row_per_bin(tmp_path):
    table = reliability_table(PROBABILITIES, LABELS, 4)
    write_reliability_csv(tmp_path / "reliability.csv", table)
    with (tmp_path / "reliability.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == RELIABILITY_COLUMNS
    assert [int(row["count"]) for row in rows] == [1, 2, 2]
    assert [float(row["confidence"]) for row in rows] == pytest.approx([0.5, 0.7, 0.9])
    assert [float(row["lower"]) for row in rows] == [0.25, 0.5, 0.75]


def test_normalised_confusion_rows_are_each_actual_class_s_shares():
    labels, predictions = np.array([0, 0, 0, 1, 1, 3]), np.array([0, 1, 2, 1, 1, 0])
    shares = row_normalised(confusion_matrix(labels, predictions, 4))
    assert shares.sum(axis=1) == pytest.approx([1, 1, 0, 1])  # class 2 has no images
    assert shares[0] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    assert shares[1].tolist() == [0, 1, 0, 0] and shares[2].tolist() == [0, 0, 0, 0]


def test_most_confident_mistakes_are_the_wrong_predictions_by_predicted_probability():
    probabilities = np.array([
        [0.99, 0.01],  # right, the most confident of all: never a mistake
        [0.30, 0.70],  # wrong at 0.70
        [0.10, 0.90],  # wrong at 0.90
        [0.40, 0.60],  # wrong at 0.60
        [0.20, 0.80],  # right
        [0.45, 0.55],  # wrong at 0.55
    ])
    labels = np.array([0, 0, 0, 0, 1, 0])
    assert most_confident_mistakes(probabilities, labels, 16).tolist() == [2, 1, 3, 5]
    assert most_confident_mistakes(probabilities, labels, 2).tolist() == [2, 1]
    assert most_confident_mistakes(probabilities, probabilities.argmax(1), 16).tolist() == []


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_confusion_pngs_counts_and_normalised(tmp_path):
    probabilities, labels = random_predictions(0)
    matrix = confusion_matrix(labels, probabilities.argmax(1), 10)
    names = [f"class {i}" for i in range(10)]
    write_confusion_png(tmp_path / "counts.png", matrix, names, "counts")
    write_confusion_png(tmp_path / "shares.png", row_normalised(matrix), names, "shares", cell_format="{:.2f}")
    assert png_size(tmp_path / "counts.png") == png_size(tmp_path / "shares.png") == (700, 700)


def test_reliability_png(tmp_path):
    probabilities, labels = random_predictions(1)
    table = reliability_table(probabilities, labels, 15)
    write_reliability_png(tmp_path / "reliability.png", table, calibration_error(table))
    assert png_size(tmp_path / "reliability.png") == (500, 500)


def test_mistakes_grid_of_grey_images_holds_up_to_sixteen(tmp_path):
    probabilities, labels = random_predictions(2)
    images = np.zeros((len(labels), 8, 8, 1), dtype=np.uint8)  # black: drawn as black, not as a colour map
    write_mistakes_png(tmp_path / "mistakes.png", images, labels, probabilities, [str(i) for i in range(10)])
    assert png_size(tmp_path / "mistakes.png") == (4 * 260, 4 * 280)
    with Image.open(tmp_path / "mistakes.png") as png:
        pixels = np.asarray(png.convert("RGB"))
    assert (pixels == 0).all(axis=-1).sum() > 16 * 100 * 100


def test_mistakes_grid_of_rgb_images_shows_their_colours(tmp_path):
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    labels = np.array([0, 0, 1])  # one mistake: image 1
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    images[1, ..., 0] = 255  # pure red
    write_mistakes_png(tmp_path / "mistakes.png", images, labels, probabilities, ["cat", "dog"])
    assert png_size(tmp_path / "mistakes.png") == (260, 280)
    with Image.open(tmp_path / "mistakes.png") as png:
        pixels = np.asarray(png.convert("RGB"))
    assert (pixels == [255, 0, 0]).all(axis=-1).sum() > 100 * 100


def test_no_mistakes_still_writes_a_png(tmp_path):
    probabilities = np.eye(3)
    write_mistakes_png(tmp_path / "mistakes.png", np.zeros((3, 8, 8, 1), dtype=np.uint8), np.arange(3),
                       probabilities, ["a", "b", "c"])
    assert png_size(tmp_path / "mistakes.png") == (500, 150)
