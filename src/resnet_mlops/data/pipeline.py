"""Input pipelines for training: arrays in memory (default), or TFRecord shards streamed with tf.data.

Both give every example of the split exactly once per epoch, in an order fixed by
the seed. The streaming pipeline reads shards in parallel (interleaved), parses
records in parallel, shuffles through a bounded buffer and prefetches, so memory
stays bounded by the buffer, not the dataset. It needs TensorFlow; the in-memory
path is plain numpy and works under any Keras backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resnet_mlops.data.prepared import Split, read_split, read_summary

SHUFFLE_BUFFER = 10_000


def _parser(shape: tuple[int, ...]):
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
        image = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), shape)
        return image, example["label"]
    return parse


def _records(files: list[Path]):
    import tensorflow as tf

    names = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    return names.interleave(tf.data.TFRecordDataset, cycle_length=max(1, len(files)),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def read_tfrecords(files: list[Path], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """All records of some shards as (images, labels) arrays, in shard order."""
    import tensorflow as tf

    images, labels = [], []
    dataset = _records(files).map(_parser(shape), num_parallel_calls=tf.data.AUTOTUNE).batch(4096)
    for image_batch, label_batch in dataset.as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    if not images:
        return np.zeros((0, *shape), np.uint8), np.zeros((0,), np.int64)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def streaming_dataset(folder: str | Path, split: str, batch_size: int, seed: int):
    """A shuffled, batched tf.data pipeline over one split's shards (reshuffled every epoch)."""
    import tensorflow as tf

    summary = read_summary(folder)
    files = [Path(folder) / f for f in summary["splits"][split]["files"]]
    count = summary["splits"][split]["count"]
    return (_records(files)
            .shuffle(min(count, SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
            .map(_parser(tuple(summary["image_shape"])), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def training_data(folder: str | Path, split: str, batch_size: int, seed: int):
    """What `model.fit` takes for `split`: a tf.data pipeline for shards, else the arrays themselves."""
    if read_summary(folder)["format"] == "tfrecord":
        return streaming_dataset(folder, split, batch_size, seed)
    return read_split(folder, split)

