"""The TFRecord shard format of data/prepared (`data.stream: true`): writing, and reading back.

One record per image: `image` (the raw uint8 pixels, row-major H x W x C) and
`label` (int64). The writer and the parser live together so the two cannot drift.
Writing needs no TensorFlow; reading imports it when a function here runs.
"""

from __future__ import annotations

from pathlib import Path

import functools

import google_crc32c
import numpy as np

SHARD_EXAMPLES = 10_000


def shard_names(name: str, count: int) -> list[str]:
    shards = max(1, -(-count // SHARD_EXAMPLES))
    return [f"{name}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def example(image: bytes, label: int) -> bytes:
    """The serialized `tf.train.Example` {image: bytes, label: int64}, the same on every run.

    Encoded here, without TensorFlow, so that prepare never imports it, and in a fixed order
    (image, then label): TensorFlow's own serializer orders the two map entries by a hash
    seeded per process, so the same data gave other shard bytes (another DVC hash) about
    every second run. tests/test_tfrecords.py checks the bytes parse back as written.
    """
    head, tail = _layout(len(image), label)
    return head + image + tail


@functools.lru_cache(maxsize=4096)
def _layout(length: int, label: int) -> tuple[bytes, bytes]:
    """The bytes before and after an image of `length` bytes with this label (one pair per shard)."""
    image_entry = _field(1, _field(1, b"image") + _field(2, _field(1, _field(1, b"\0" * length))))
    label_value = _field(3, _field(1, _varint(label & 0xFFFFFFFFFFFFFFFF)))  # int64_list, packed
    tail = _field(1, _field(1, b"label") + _field(2, label_value))
    whole = _field(1, image_entry + tail)                                       # Example.features
    return whole[:len(whole) - len(tail) - length], tail


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return (((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF).to_bytes(4, "little")


def frame(record: bytes) -> bytes:
    """One TFRecord: length, its masked CRC-32C, the record, the record's masked CRC-32C."""
    length = len(record).to_bytes(8, "little")
    return length + _masked_crc(length) + record + _masked_crc(record)


def shard(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The bytes of one shard file holding these images (uint8, N x H x W x C) and labels."""
    return b"".join(frame(example(image.tobytes(), int(label))) for image, label in zip(images, labels))


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
