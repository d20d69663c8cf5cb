"""Input pipelines for training: arrays in memory (default), or TFRecord shards streamed with tf.data.

Both give every example of the split exactly once per epoch, in an order fixed by
the seed. The streaming pipeline reads shards in parallel (interleaved), parses
records in parallel, shuffles through a bounded buffer and prefetches, so memory
stays bounded by the buffer, not the dataset. It needs TensorFlow; the in-memory
path is plain numpy and works under any Keras backend.
"""

from __future__ import annotations

from pathlib import Path

from resnet_mlops.data import tfrecords
from resnet_mlops.data.prepared import read_summary

SHUFFLE_BUFFER = 10_000


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
