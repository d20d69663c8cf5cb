"""In-memory arrays and streamed TFRecord shards give the same examples; streaming is seeded."""

from __future__ import annotations

from collections import Counter

import numpy as np

from resnet_mlops.config import load_params
from resnet_mlops.data.pipeline import streaming_dataset
from resnet_mlops.data.prepare import prepare
from resnet_mlops.data.prepared import read_split, read_summary
from conftest import write_params


def examples(images, labels) -> Counter:
    return Counter((image.tobytes(), int(label)) for image, label in zip(images, labels))


def epoch(dataset) -> tuple[np.ndarray, np.ndarray]:
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_streamed_shards_hold_the_same_examples_as_arrays(tmp_path, tiny_params):
    arrays = load_params(write_params(tmp_path, tiny_params)).data
    tiny_params["data"]["stream"] = True
    stream = load_params(write_params(tmp_path, tiny_params)).data
    prepare(arrays, 3, tmp_path / "arrays", tmp_path / "a.json")
    prepare(stream, 3, tmp_path / "shards", tmp_path / "s.json")
    summary = read_summary(tmp_path / "shards")
    assert summary["format"] == "tfrecord"
    assert summary["splits"]["train"]["files"] == ["train-00000-of-00001.tfrecord"]

    in_memory = read_split(tmp_path / "arrays", "train")
    first_images, first_labels = epoch(streaming_dataset(tmp_path / "shards", "train", 64, seed=5))
    assert examples(first_images, first_labels) == examples(in_memory.images, in_memory.labels)
    assert first_images.dtype == np.uint8 and first_images.shape[1:] == (8, 8, 1)

    again_images, _ = epoch(streaming_dataset(tmp_path / "shards", "train", 64, seed=5))
    other_seed, _ = epoch(streaming_dataset(tmp_path / "shards", "train", 64, seed=6))
    assert np.array_equal(first_images, again_images)  # same seed, same order
    assert not np.array_equal(first_images, other_seed)

    whole = read_split(tmp_path / "shards", "test")  # evaluation reads a split whole, from either format
    reference = read_split(tmp_path / "arrays", "test")
    assert np.array_equal(whole.images, reference.images) and np.array_equal(whole.labels, reference.labels)
