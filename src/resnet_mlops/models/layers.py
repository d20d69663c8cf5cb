"""The two custom layers the models need, registered so ``.keras`` files load without extra code."""

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
        x = inputs[:, :: self.strides, :: self.strides, :]
        extra = self.channels - inputs.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, _ceil_div(height, self.strides), _ceil_div(width, self.strides), self.channels)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides, "channels": self.channels}


def _ceil_div(size, stride):
    return None if size is None else -(-size // stride)
