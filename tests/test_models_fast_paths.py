"""The training fast paths of issue 5 compute what the plain Keras code computes."""

import os

import numpy as np
import pytest

from resnet_mlops.models import build_model
from resnet_mlops.models import layers as model_layers


# The fused kernel is TensorFlow's; these tests look into its graphs. Under other backends the
# layer is Keras' own, which the whole-model test below still compares.
tensorflow_only = pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
                                     reason="TensorFlow's fused batch norm kernel")


def _graph_ops(function, *args):
    import tensorflow as tf

    return {op.type for op in tf.function(function).get_concrete_function(*args).graph.get_operations()}


@pytest.mark.parametrize(("shape", "stride"),
                         [((2, 8, 8, 3), 2), ((2, 7, 9, 3), 2), ((2, 9, 6, 4), 3), ((1, 4, 4, 2), 1)])
def test_option_a_subsampling_equals_strided_slicing(shape, stride):
    from keras import ops

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    got = ops.convert_to_numpy(model_layers._subsample(ops.convert_to_tensor(x), stride))
    np.testing.assert_array_equal(got, x[:, ::stride, ::stride, :])


def _bn_pair(channels):
    """Our layer and Keras' own, with the same (non-trivial) weights."""
    import keras

    ours = model_layers.BatchNormalization(momentum=0.9, epsilon=1.001e-5)
    stock = keras.layers.BatchNormalization(momentum=0.9, epsilon=1.001e-5)
    rng = np.random.default_rng(1)
    weights = [rng.random(channels, dtype=np.float32) + 0.5 for _ in range(4)]  # gamma, beta, mean, variance
    for layer in (ours, stock):
        layer.build((None, 5, 5, channels))
        layer.set_weights(weights)
    return ours, stock


@tensorflow_only
def test_fused_batch_norm_trains_like_keras_batch_norm():
    import tensorflow as tf

    ours, stock = _bn_pair(4)
    x = tf.constant(np.random.default_rng(2).normal(3.0, 2.0, (8, 5, 5, 4)).astype(np.float32))
    assert "FusedBatchNormV3" in _graph_ops(lambda t: ours(t, training=True), tf.TensorSpec(x.shape, tf.float32))

    upstream = tf.constant(np.random.default_rng(3).normal(size=x.shape).astype(np.float32))
    results = []
    for layer in (ours, stock):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)  # any gradient flowing back into the layer
        grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
        results.append([y, *grads, layer.moving_mean, layer.moving_variance])
    for got, expected in zip(*results):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-5)


@tensorflow_only
def test_inference_and_other_layouts_run_keras_code():
    import keras
    import tensorflow as tf

    ours, stock = _bn_pair(4)
    spec = tf.TensorSpec((8, 5, 5, 4), tf.float32)
    assert "FusedBatchNormV3" not in _graph_ops(lambda t: ours(t, training=False), spec)
    x = np.random.default_rng(3).random((8, 5, 5, 4), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(ours(x, training=False)), np.asarray(stock(x, training=False)))

    channels_first = model_layers.BatchNormalization(axis=1)
    channels_first.build((None, 4, 5, 5))
    spec_first = tf.TensorSpec((8, 4, 5, 5), tf.float32)
    assert "FusedBatchNormV3" not in _graph_ops(lambda t: channels_first(t, training=True), spec_first)
    assert isinstance(ours, keras.layers.BatchNormalization)


def test_resnet20_trains_the_same_with_and_without_the_fast_paths(monkeypatch):
    import keras

    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    labels = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]
    outcomes = []
    for fast in (True, False):
        if not fast:  # Keras' own batch norm code and the strided slice, as before issue 5
            monkeypatch.setattr(model_layers.BatchNormalization, "_fusable", lambda self, *args: False)
            monkeypatch.setattr(model_layers, "_subsample", lambda x, stride: x[:, ::stride, ::stride, :])
        keras.utils.set_random_seed(0)
        model = build_model("resnet20", (8, 8, 1), 10, shortcut="A")
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="categorical_crossentropy")
        loss = model.train_on_batch(pixels, labels)
        outcomes.append((loss, model.predict(pixels, verbose=0), [w.numpy() for w in model.weights]))
    (fast_loss, fast_out, fast_weights), (slow_loss, slow_out, slow_weights) = outcomes
    assert fast_loss == pytest.approx(slow_loss, rel=1e-5)
    np.testing.assert_allclose(fast_out, slow_out, atol=1e-5)
    for fast_w, slow_w in zip(fast_weights, slow_weights):
        np.testing.assert_allclose(fast_w, slow_w, rtol=1e-4, atol=1e-6)
