"""The custom layers the models need, registered so ``.keras`` files load without extra code."""

from __future__ import annotations

import keras
from keras import ops

# keras.applications' "caffe" mode: BGR channel means of ImageNet, subtracted without scaling.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="resnet_mlops")
class Preprocess(keras.layers.Layer):
    """Turn raw pixels (0..255, uint8 or float) into the network's input scale.

    Living inside the model means a saved or served model needs no outside
    preprocessing. Modes:

    - ``"scale"``: ``x / 255``, then ``(x - mean) / std`` when ``mean``/``std``
      (a number or one per channel) are given.
    - ``"caffe"``: RGB to BGR and subtract the ImageNet BGR means, unscaled:
      ``keras.applications.resnet.preprocess_input``.
    - ``"tf"``: ``x / 127.5 - 1``: ``keras.applications.resnet_v2.preprocess_input``.
    """

    def __init__(self, mode="scale", mean=None, std=None, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.mean = mean
        self.std = std

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "caffe":
            return x[..., ::-1] - ops.convert_to_tensor(CAFFE_BGR_MEAN, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        x = x / 255.0
        if self.mean is not None:
            x = x - ops.convert_to_tensor(self.mean, self.compute_dtype)
        if self.std is not None:
            x = x / ops.convert_to_tensor(self.std, self.compute_dtype)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="resnet_mlops")
class ZeroPadShortcut(keras.layers.Layer):
    """Shortcut option A of He et al. (2016): parameter-free.

    Subsamples with ``strides`` (keeping every ``strides``-th pixel, the grid a
    'same'-padded strided convolution samples) and appends zero channels up to
    ``channels``.
    """

    def __init__(self, strides, channels, **kwargs):
        super().__init__(**kwargs)
        self.strides = strides
        self.channels = channels

    def call(self, inputs):
        x = _subsample(inputs, self.strides)
        extra = self.channels - inputs.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, _ceil_div(height, self.strides), _ceil_div(width, self.strides), self.channels)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides, "channels": self.channels}


def _subsample(x, stride):
    """``x[:, ::stride, ::stride, :]``, as a reshape and a plain slice when the size allows.

    Same values; the point is the gradient. On TensorFlow a strided slice's
    gradient (StridedSliceGrad) is a slow scatter: forward and backward took
    10 ms a step on ResNet-20's first shortcut at batch 128 on 2 CPU cores,
    against 2 ms for this form, whose gradient is a Pad.
    """
    _, height, width, channels = x.shape
    if stride == 1:
        return x
    if height is None or width is None or height % stride or width % stride:
        return x[:, ::stride, ::stride, :]
    rows, cols = height // stride, width // stride
    x = ops.reshape(x, (-1, rows, stride, cols, stride * channels))  # (row, row phase, col, col phase, channel)
    x = ops.slice(x, (0, 0, 0, 0, 0), (ops.shape(x)[0], rows, 1, cols, channels))  # phase 0 of both
    return ops.reshape(x, (-1, rows, cols, channels))


def _ceil_div(size, stride):
    return None if size is None else -(-size // stride)


@keras.saving.register_keras_serializable(package="resnet_mlops")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that trains with TensorFlow's fused kernel.

    Keras 3 normalises a training batch on TensorFlow with ``moments`` and
    ``batch_normalization``: some ten element-wise ops and reductions forward,
    and their gradients backward, each a pass over the activations. TensorFlow's
    ``FusedBatchNormV3`` (oneDNN on CPU, cuDNN on GPU) does it in one pass each
    way, and TensorFlow's graph optimizer then fuses it with a following ReLU.
    On ResNet-20 at batch 128 on 2 CPU cores that made training ~1.3x faster
    (bench/RESULTS.md, issue 5).

    The result is the same layer: same weights, same config, same outputs up to
    float rounding. A training step normalises with the biased batch variance,
    as Keras does, and updates the moving averages with Keras' formula; the
    kernel's variance is Bessel-corrected, so it is scaled back by (n - 1) / n.
    Inference, other backends and whatever the kernel does not cover (masks,
    renorm, synchronized, not 4-D or not channels-last, float64, epsilon below
    the kernel's minimum) run Keras' own code. The class keeps Keras' name, so
    the tests and tools that look for "BatchNormalization" find it.
    """

    fused = True  # class-wide switch; bench/cpu_throughput_bench.py turns it off to time stock Keras
    _MIN_FUSED_EPSILON = 1.001e-5  # tf.nn.fused_batch_norm raises smaller values to this (cuDNN's minimum)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")
        channels = x.shape[-1]
        scale = self.gamma if self.scale else tf.ones((channels,), "float32")
        offset = self.beta if self.center else tf.zeros((channels,), "float32")
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )[:3]
        count = tf.cast(tf.size(x, out_type=tf.int64) // channels, "float32")
        variance = variance * tf.maximum(count - 1.0, 0.0) / count  # unbiased -> biased, as Keras keeps it
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs, training, mask) -> bool:
        return (
            type(self).fused
            and keras.backend.backend() == "tensorflow"
            and training is True
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.standardize_dtype(inputs.dtype) in ("float16", "bfloat16", "float32")
            and self.epsilon >= self._MIN_FUSED_EPSILON
        )
