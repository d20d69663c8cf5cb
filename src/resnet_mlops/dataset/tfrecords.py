"""The TFRecord shard format of data/prepared (`data.stream: true`): writing, and reading back.

One record per image: `image` (the raw uint8 pixels, row-major H x W x C) and
`label` (int64). The writer and the parser live together so the two cannot drift.
TensorFlow is imported only when a function here runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARD_EXAMPLES = 10_000


def shard_names(name: str, count: int) -> list[str]:
    shards = max(1, -(-count // SHARD_EXAMPLES))
    return [f"{name}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]


def write_tfrecords(folder: Path, name: str, split) -> list[str]:
    """Write a split (anything with `.images` and `.labels`) as shards; return their file names."""
    import tensorflow as tf

    files = shard_names(name, len(split.labels))
    for index, file in enumerate(files):
        part = slice(index * SHARD_EXAMPLES, (index + 1) * SHARD_EXAMPLES)
        with tf.io.TFRecordWriter(str(folder / file)) as writer:
            for image, label in zip(split.images[part], split.labels[part]):
                features = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
                            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return files


def parser(shape: tuple[int, ...]):
    """A tf.data map function: serialized record -> (uint8 image of `shape`, int64 label)."""
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
        image = tf.reshape(tf.io.decode_raw(example["image"], tf.uint8), shape)
        return image, example["label"]
    return parse


def records(files: list[Path]):
    """The shards' serialized records, read in parallel but in a deterministic order."""
    import tensorflow as tf

    names = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    return names.interleave(tf.data.TFRecordDataset, cycle_length=max(1, len(files)),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def read_tfrecords(files: list[Path], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """All records of some shards as (images, labels) arrays, in the order they were written.

    One shard after another (not `records`, whose interleave takes a record from each shard
    in turn), so that a split read back hashes to the sha256 its summary.json records.
    """
    import tensorflow as tf

    images, labels = [], []
    dataset = (tf.data.TFRecordDataset([str(f) for f in files])
               .map(parser(shape), num_parallel_calls=tf.data.AUTOTUNE).batch(4096))
    for image_batch, label_batch in dataset.as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    if not images:
        return np.zeros((0, *shape), np.uint8), np.zeros((0,), np.int64)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)
