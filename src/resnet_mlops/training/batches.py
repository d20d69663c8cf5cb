"""Training batches: one-hot labels, an order fixed by (seed, epoch), optional mixup.

In memory (the default) the batches come from a plain Python generator, which
every Keras backend accepts. Each epoch's order and mixup draws depend only on
the seed and the epoch number, so a run resumed at epoch k sees exactly the
batches an uninterrupted run would. TFRecord shards keep their tf.data pipeline
(TensorFlow only), with the same label and mixup steps mapped over it.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import numpy as np

from resnet_mlops.data.prepared import Split
from resnet_mlops.training.augment import mixup


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
