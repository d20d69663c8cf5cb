"""The training input pipeline (training/inputs.py): seeded batches from arrays, resumable mid-stream,
and streamed TFRecord shards that hold the same examples as the arrays.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from resnet_mlops.config import load_params
from resnet_mlops.training.inputs import streaming_dataset
from resnet_mlops.data.prepare import prepare
from resnet_mlops.dataset.prepared import read_split, read_summary
from support.project_repo import write_params


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


def test_batches_depend_only_on_seed_and_epoch_and_resume_mid_stream():
    from itertools import islice

    from resnet_mlops.dataset.prepared import Split
    from resnet_mlops.training.inputs import endless_batches, epoch_batches

    split = Split(images=np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1), labels=np.arange(100) % 10)

    def epoch(seed, number):
        return np.concatenate([images.ravel() for images, _ in epoch_batches(split, 10, 32, seed, number)])

    assert len(list(epoch_batches(split, 10, 32, 0, 0))) == 4
    assert sorted(epoch(1, 0)) == list(range(100))  # every example once
    assert np.array_equal(epoch(1, 3), epoch(1, 3))
    assert not np.array_equal(epoch(1, 3), epoch(1, 4)) and not np.array_equal(epoch(1, 3), epoch(2, 3))
    from_start = [images for images, _ in islice(endless_batches(split, 10, 32, 1, 0, 0.2), 12)]
    resumed = [images for images, _ in islice(endless_batches(split, 10, 32, 1, 2, 0.2), 4)]
    assert all(np.array_equal(a, b) for a, b in zip(from_start[8:], resumed))
