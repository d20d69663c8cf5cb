"""The prepare stage's pieces: the digits source, the split, the atomic prepared folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnet_mlops.config import DataSettings
from resnet_mlops.data.prepare import prepare
from resnet_mlops.data.prepared import read_split, read_summary
from resnet_mlops.data.sources import load_digits
from resnet_mlops.data.split import SPLITS, example_hashes, stratified_split

SETTINGS = DataSettings(source="digits", path=None, val_fraction=0.15, test_fraction=0.2)


def test_digits_are_real_uint8_images_with_ten_classes():
    digits = load_digits()
    assert digits.images.shape == (1797, 8, 8, 1) and digits.images.dtype == np.uint8
    assert digits.images.max() == 255 and digits.images.min() == 0
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert np.bincount(digits.labels).min() >= 170


def test_split_is_stratified_disjoint_and_complete():
    digits = load_digits()
    parts = stratified_split(digits.labels, example_hashes(digits.images), 3, 0.15, 0.2)
    everything = np.concatenate([parts[name] for name in SPLITS])
    assert sorted(everything.tolist()) == list(range(len(digits.labels)))
    for label in range(10):
        in_class = int((digits.labels == label).sum())
        test = int((digits.labels[parts["test"]] == label).sum())
        val = int((digits.labels[parts["val"]] == label).sum())
        assert test == round(in_class * 0.2) and val == round(in_class * 0.15)


def test_split_depends_on_seed_and_content_only():
    digits = load_digits()
    hashes = example_hashes(digits.images)
    first = stratified_split(digits.labels, hashes, 3, 0.15, 0.2)
    again = stratified_split(digits.labels, hashes, 3, 0.15, 0.2)
    other_seed = stratified_split(digits.labels, hashes, 4, 0.15, 0.2)
    assert all(np.array_equal(first[n], again[n]) for n in SPLITS)
    assert not np.array_equal(first["test"], other_seed["test"])


def test_prepare_writes_identical_bytes_for_identical_input(tmp_path):
    prepare(SETTINGS, 3, tmp_path / "a")
    summary = prepare(SETTINGS, 3, tmp_path / "b")
    for file in sorted(p.name for p in (tmp_path / "a").iterdir()):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
    assert summary["splits"]["test"]["count"] == len(read_split(tmp_path / "a", "test").labels)
    written = read_summary(tmp_path / "a")
    assert written == json.loads(json.dumps(summary))
    assert sum(written["splits"]["train"]["per_class"].values()) == written["splits"]["train"]["count"]
    assert written["image_shape"] == [8, 8, 1]


def test_a_failed_prepare_leaves_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "prepared"
    prepare(SETTINGS, 3, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("resnet_mlops.data.prepare.write_split", broken)
    with pytest.raises(OSError):
        prepare(SETTINGS, 4, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]  # no temporary folder left
