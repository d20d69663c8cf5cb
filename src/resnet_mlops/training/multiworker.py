"""Make Keras 3's `fit` run under TensorFlow's MultiWorkerMirroredStrategy.

Keras 3.15 cannot `fit` under that strategy (keras-team/keras#20585): before the
first step it averages a batch *of data* across workers (`_maybe_symbolic_build`),
and after each step it reduces the scalar logs along an axis they do not have.
Both fail with "Attempt to convert a value (PerReplica...)" or "Invalid reduction
dimension". The shims below build the model from this worker's own batch and
report this worker's own logs. Gradients are still all-reduced by the strategy,
and batch normalization is synchronized across workers while training, so every
worker ends with the same weights, moving statistics included (the multi-worker
test checks it).
"""

from __future__ import annotations

import keras


def apply_shims(model: keras.Model, strategy) -> None:
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        with strategy.scope():
            model._symbolic_build(data_batch=tree.map_structure(local, data_batch))

    model._maybe_symbolic_build = symbolic_build
    tf_trainer.reduce_per_replica.__globals__["_collective_all_reduce_multi_worker"] = lambda _: False
    synchronize_batch_norm(model, True)


def synchronize_batch_norm(model: keras.Model, on: bool) -> None:
    """Batch statistics over the global batch (on), or back to the saved, portable config (off)."""
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = on
