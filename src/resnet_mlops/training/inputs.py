"""The trainer's input pipeline: batches with one-hot labels, from arrays in memory or TFRecord shards.

In memory (the default) the batches come from a plain Python generator, which
every Keras backend accepts. Each epoch's order and mixup draws depend only on
the seed and the epoch number, so a run resumed at epoch k sees exactly the
batches an uninterrupted run would.

TFRecord shards (data.stream: true) are streamed with tf.data (TensorFlow only):
shards read in parallel (interleaved), records parsed in parallel, shuffled
through a bounded buffer and prefetched, so memory stays bounded by the buffer,
not the dataset; the same label and mixup steps are mapped over it. Both give
every example of the split exactly once per epoch, in an order fixed by the seed.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import numpy as np

from resnet_mlops.dataset import tfrecords
from resnet_mlops.dataset.prepared import Split, read_summary
from resnet_mlops.training.augment import mixup

SHUFFLE_BUFFER = 10_000


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


def epoch_batches(split: Split, num_classes: int, batch_size: int, seed: int, epoch: int,
                  mixup_alpha: float = 0.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of shuffled batches; the order and the mixup draws depend only on (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(split.labels))
    for index, start in enumerate(range(0, len(order), batch_size)):
        rows = np.sort(order[start:start + batch_size])
        images, labels = split.images[rows], one_hot(split.labels[rows], num_classes)
        if mixup_alpha:
            images, labels = mixup(images, labels, mixup_alpha, np.random.default_rng([seed, epoch, index]))
        yield images, labels


def endless_batches(split: Split, num_classes: int, batch_size: int, seed: int, first_epoch: int,
                    mixup_alpha: float = 0.0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Epoch after epoch from `first_epoch`, for `fit(..., steps_per_epoch=...)`.

    One endless stream, rather than a dataset re-read each epoch, so no prefetching
    across an epoch boundary can mix two epochs' orders: the batches are the same
    whether a run started at epoch 0 or resumed at epoch k.
    """
    for epoch in itertools.count(first_epoch):
        yield from epoch_batches(split, num_classes, batch_size, seed, epoch, mixup_alpha)


def streaming_dataset(folder: str | Path, split: str, batch_size: int, seed: int):
    """A shuffled, batched tf.data pipeline over one split's shards (reshuffled every epoch)."""
    import tensorflow as tf

    summary = read_summary(folder)
    files = [Path(folder) / f for f in summary["splits"][split]["files"]]
    count = summary["splits"][split]["count"]
    parse = tfrecords.parser(tuple(summary["image_shape"]))
    return (tfrecords.records(files)
            .shuffle(min(count, SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE))


def streamed(dataset, num_classes: int, mixup_alpha: float, seed: int):
    """The tf.data pipeline of TFRecord shards with one-hot labels (and mixup)."""
    import tensorflow as tf

    dataset = dataset.map(lambda images, labels: (images, tf.one_hot(labels, num_classes)))
    if not mixup_alpha:
        return dataset
    rng = np.random.default_rng(seed)

    def mix(images, labels):
        mixed = tf.numpy_function(lambda x, y: mixup(x, y, mixup_alpha, rng), [images, labels],
                                  [tf.float32, tf.float32], stateful=True)
        mixed[0].set_shape(images.shape)
        mixed[1].set_shape(labels.shape)
        return tuple(mixed)

    return dataset.map(mix)
