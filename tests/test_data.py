"""The prepare stage on the bundled digits: the split rule and the prepared folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from resnet_mlops.config import load_params
from resnet_mlops.data.prepare import prepare
from resnet_mlops.dataset.prepared import read_split, read_summary
from resnet_mlops.data.sources import load_digits
from resnet_mlops.data.examples import SPLITS, split_codes, split_names
from resnet_mlops.data.split import assign
from support.project_repo import write_params


@pytest.fixture
def digits_settings(tmp_path, tiny_params):
    return load_params(write_params(tmp_path, tiny_params)).data


def test_digits_are_real_uint8_images_with_ten_classes(digits_settings):
    digits = load_digits(digits_settings)
    images = digits.pixels.images
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert np.bincount(digits.labels).min() >= 170


def test_split_is_stratified_and_complete(digits_settings):
    digits = load_digits(digits_settings)
    split_of = split_names(assign(digits.hashes, digits.split_hints, 3, 0.15, 0.2))
    assert set(split_of) == set(SPLITS) and len(split_of) == len(digits.labels)
    for label in range(10):
        in_class = digits.labels == label
        share = {name: float((split_of[in_class] == name).mean()) for name in SPLITS}
        # every class cut at the same thresholds: its shares are the fractions, up to sampling noise
        assert abs(share["test"] - 0.2) < 0.1 and abs(share["val"] - 0.15) < 0.1


def test_split_depends_on_seed_and_content_only(digits_settings):
    digits = load_digits(digits_settings)
    first = assign(digits.hashes, digits.split_hints, 3, 0.15, 0.2)
    again = assign(digits.hashes[::-1], digits.split_hints, 3, 0.15, 0.2)[::-1]
    other_seed = assign(digits.hashes, digits.split_hints, 4, 0.15, 0.2)
    assert np.array_equal(first, again)  # order of the files does not matter
    assert not np.array_equal(first, other_seed)


def test_adding_images_never_moves_existing_ones(digits_settings):
    digits = load_digits(digits_settings)
    before = assign(digits.hashes[:1000], split_codes([None] * 1000), 3, 0.15, 0.2)
    after = assign(digits.hashes, digits.split_hints, 3, 0.15, 0.2)
    assert np.array_equal(before, after[:1000])


def test_a_source_test_set_stays_test():
    hashes = np.array([i.to_bytes(32, "big") for i in range(400)], dtype="S32")
    split_of = split_names(assign(hashes, split_codes(["test"] * 100 + ["train"] * 300), 3, 0.15, 0.2))
    assert (split_of[:100] == "test").all()
    assert set(split_of[100:]) == {"train", "val"}
    assert 0.05 < (split_of[100:] == "val").mean() < 0.25


def test_prepare_writes_identical_bytes_for_identical_input(tmp_path, digits_settings):
    prepare(digits_settings, 3, tmp_path / "a", tmp_path / "a.json")
    summary = prepare(digits_settings, 3, tmp_path / "b", tmp_path / "b.json")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["manifest.parquet", "stats.json", "summary.json", "test_images.npy", "test_labels.npy",
                     "train_images.npy", "train_labels.npy", "val_images.npy", "val_labels.npy"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert summary["splits"]["test"]["count"] == len(read_split(tmp_path / "a", "test").labels)
    written = read_summary(tmp_path / "a")
    assert written == json.loads(json.dumps(summary))
    assert sum(written["splits"]["train"]["per_class"].values()) == written["splits"]["train"]["count"]
    assert written["image_shape"] == [8, 8, 1] and written["format"] == "arrays"

    manifest = pd.read_parquet(tmp_path / "a" / "manifest.parquet")
    assert len(manifest) == 1797
    assert list(manifest.columns) == ["path", "label", "label_index", "split", "sha256", "width", "height"]
    assert manifest.groupby("split").size().to_dict() == {n: written["splits"][n]["count"] for n in SPLITS}
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    train = read_split(tmp_path / "a", "train").images / 255.0
    assert stats["train_mean"] == pytest.approx([train.mean()], abs=1e-6)
    assert stats["train_std"] == pytest.approx([train.std()], abs=1e-6)


def test_a_failed_prepare_leaves_the_previous_output(tmp_path, digits_settings, monkeypatch):
    out = tmp_path / "prepared"
    prepare(digits_settings, 3, out, tmp_path / "report.json")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("resnet_mlops.data.prepare.write_split", broken)
    with pytest.raises(OSError):
        prepare(digits_settings, 4, out, tmp_path / "report.json")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "prepared", "report.json"]


def test_duplicates_are_told_apart_by_the_whole_hash_where_the_first_8_bytes_agree():
    """Validation sorts each hash's first 8 bytes; images whose hashes share only those are not duplicates."""
    from resnet_mlops.data.examples import NO_HINT, ArrayPixels, Examples, Paths
    from resnet_mlops.data.validate import validate

    shared = b"\x00" * 8
    hashes = np.array([shared + b"\x01" * 24, shared + b"\x02" * 24, shared + b"\x01" * 24,
                       b"\x05" * 32, b"\x06" * 32, shared + b"\x02" * 23 + b"\x00"], "S32")
    count = len(hashes)
    examples = Examples(ArrayPixels(np.zeros((count, 1, 1, 1), np.uint8)), np.array([0, 1, 0, 1, 0, 1]), ("a", "b"),
                        Paths.of(f"{'ab'[i % 2]}/{i}.png" for i in range(count)), hashes,
                        np.ones((count, 2), np.int32), np.full(count, NO_HINT, np.int8))
    clean, report, problems = validate(examples, max_imbalance=10.0)
    assert [(p.kind, p.path, p.detail) for p in problems] == [("duplicate", "a/2.png", "same content as a/0.png")]
    assert list(clean.paths) == ["a/0.png", "b/1.png", "b/3.png", "a/4.png", "b/5.png"]
    assert report["problem_counts"] == {"duplicate": 1}
