"""The custom layers the models train with, and the built-in Keras layers each one is saved as.

The layers are registered with Keras, but that only helps a process that has
imported this module. So each layer also knows how to express itself with
Keras' built-in layers, giving the same outputs (``builtin_equivalent``):
:func:`resnet_mlops.models.saving.save_model` saves models that way, and the
files load with a plain ``keras.saving.load_model`` or ``mlflow.keras.load_model``
in any process that has Keras.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

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

    def builtin_equivalent(self, inputs):
        """This layer applied to ``inputs``, made of built-in Keras layers; the last one takes its name.

        Bit for bit the same arithmetic in float32: a ``Normalization`` layer
        computes ``(x - mean) / sqrt(variance)``, and ``variance = std ** 2`` in
        float32 gives back ``std`` exactly (``sqrt(x * x) == x`` in IEEE
        arithmetic), so ``x / 255`` and ``(x - mean) / std`` are the same
        divisions as in :meth:`call`. The caffe channel flip moves values
        without arithmetic; adding ``-mean`` is subtracting ``mean``.
        """
        name, dtype = self.name, self.dtype_policy
        if self.mode == "caffe":
            x = _reverse_channels(inputs, f"{name}_bgr", dtype)
            return layers.Rescaling(1.0, [-m for m in CAFFE_BGR_MEAN], name=name, dtype=dtype)(x)
        if self.mode == "tf":
            x = _divide(inputs, 127.5, f"{name}_divide", dtype)
            return layers.Rescaling(1.0, -1.0, name=name, dtype=dtype)(x)
        if self.mean is None and self.std is None:
            return _divide(inputs, 255.0, name, dtype)
        x = _divide(inputs, 255.0, f"{name}_divide", dtype)
        mean, std = np.broadcast_arrays(np.asarray(0.0 if self.mean is None else self.mean, np.float32),
                                        np.asarray(1.0 if self.std is None else self.std, np.float32))
        variance = np.square(std.astype(np.float64))  # exact; float32 rounds it once, as a float32 product would
        return layers.Normalization(axis=-1, mean=mean.tolist(), variance=variance.tolist(), name=name,
                                    dtype=dtype)(x)


def _divide(x, divisor, name, dtype):
    """``x / divisor`` as a built-in layer (a ``Rescaling`` by ``1 / divisor`` would round differently)."""
    return layers.Normalization(axis=None, mean=0.0, variance=float(divisor) ** 2, name=name, dtype=dtype)(x)


def _reverse_channels(x, name, dtype):
    """``x[..., ::-1]`` with built-in layers: channels as a third spatial axis, cropped out one by one, rejoined."""
    height, width, channels = x.shape[1:]
    x = layers.Reshape((height, width, channels, 1), name=f"{name}_split", dtype=dtype)(x)
    parts = [layers.Cropping3D(((0, 0), (0, 0), (c, channels - 1 - c)), name=f"{name}_{c}", dtype=dtype)(x)
             for c in reversed(range(channels))]
    x = layers.Concatenate(axis=3, name=f"{name}_join", dtype=dtype)(parts)
    return layers.Reshape((height, width, channels), name=f"{name}_merge", dtype=dtype)(x)


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

    def builtin_equivalent(self, inputs):
        """This layer applied to ``inputs``, made of built-in Keras layers; the last one takes its name.

        A 1x1 max pooling with ``strides`` keeps the same pixels (its windows
        start at 0, ``strides``, ...); the zero channels are a ``ZeroPadding3D``
        with the channels seen as a third spatial axis. No arithmetic, so the
        values are exactly this layer's. (Its gradient is the slow strided one
        :func:`_subsample` avoids; the saved model is not trained.)
        """
        name, dtype = self.name, self.dtype_policy
        x = inputs
        if self.strides > 1:
            x = layers.MaxPooling2D(1, strides=self.strides, name=f"{name}_subsample", dtype=dtype)(x)
        height, width, channels = x.shape[1:]
        x = layers.Reshape((height, width, channels, 1), name=f"{name}_split", dtype=dtype)(x)
        x = layers.ZeroPadding3D(((0, 0), (0, 0), (0, self.channels - channels)), name=f"{name}_zeros",
                                 dtype=dtype)(x)
        return layers.Reshape((height, width, self.channels), name=name, dtype=dtype)(x)


def _subsample(x, stride):
    """``x[:, ::stride, ::stride, :]``, as a reshape and a plain slice when the size allows.

    Same values; the point is the gradient. On TensorFlow a strided slice's
    gradient (StridedSliceGrad) is a slow scatter; this form's gradient is a
    Pad, much cheaper (figures: bench/RESULTS.md, issue 5).
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
    On a CPU those passes were a large share of a ResNet-20 training step: this
    kernel bought most of issue 5's CPU speedup (figures: bench/RESULTS.md).

    The result is the same layer: same weights, same config, same outputs up to
    float rounding. A training step normalises with the biased batch variance,
    as Keras does, and updates the moving averages with Keras' formula; the
    kernel's variance is Bessel-corrected, so it is scaled back by (n - 1) / n.
    Inference, other backends and whatever the kernel does not cover (masks,
    renorm, synchronized, not 4-D or not channels-last, float64, epsilon below
    the kernel's minimum) run Keras' own code. The class keeps Keras' name, so
    the tests and tools that look for "BatchNormalization" find it.
    """

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
            keras.backend.backend() == "tensorflow"
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

    def builtin_equivalent(self):
        """A ``keras.layers.BatchNormalization`` with this layer's config (weights not copied)."""
        return keras.layers.BatchNormalization.from_config(self.get_config())
