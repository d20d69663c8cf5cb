"""Data augmentation, a whole batch at a time.

Pad-and-crop, flip and cutout are one Keras layer placed in front of the network
in the *training* model only: they run inside the compiled train step, on the
accelerator, in backend-neutral keras.ops, and the saved model never sees them.
Mixup also changes the labels, which a layer cannot, so it is a vectorised
NumPy step of the input pipeline (`mixup`), one call per batch.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from resnet_mlops.config import AugmentSettings


@keras.saving.register_keras_serializable(package="resnet_mlops")
class Augment(keras.layers.Layer):
    """Random crop after zero padding, horizontal flip and cutout; identity when not training.

    Its random state is one of the model's variables, so checkpoints resume the same stream.
    """

    def __init__(self, crop: int = 0, flip: bool = False, cutout: int = 0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("crop", crop), ("cutout", cutout)):
            if value < 0:
                raise ValueError(f"Augment {name} must be >= 0, got {value}")
        self.crop, self.flip, self.cutout, self.seed = int(crop), bool(flip), int(cutout), seed
        self.generator = keras.random.SeedGenerator(seed)

    @property
    def active(self) -> bool:
        return bool(self.crop or self.flip or self.cutout)

    def call(self, images, training=None):
        if not training or not self.active:
            return images
        x = ops.cast(images, self.compute_dtype)
        batch, height, width = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2]
        if self.crop:
            x = self._random_crop(x, batch, height, width)
        if self.flip:
            flipped = keras.random.randint((batch, 1, 1, 1), 0, 2, seed=self.generator)
            x = ops.where(flipped == 1, ops.flip(x, axis=2), x)
        if self.cutout:
            x = x * self._cutout_mask(batch, height, width)
        return x

    def _random_crop(self, x, batch, height, width):
        pad = self.crop
        padded = ops.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        offsets = keras.random.randint((2, batch), 0, 2 * pad + 1, seed=self.generator)
        rows = offsets[0][:, None] + ops.arange(height)[None, :]
        cols = offsets[1][:, None] + ops.arange(width)[None, :]
        channels = ops.shape(x)[3]
        rows = ops.broadcast_to(rows[:, :, None, None], (batch, height, width + 2 * pad, channels))
        x = ops.take_along_axis(padded, rows, axis=1)
        cols = ops.broadcast_to(cols[:, None, :, None], (batch, height, width, channels))
        return ops.take_along_axis(x, cols, axis=2)

    def _cutout_mask(self, batch, height, width):
        centres = keras.random.uniform((2, batch), seed=self.generator)
        cy = ops.cast(centres[0] * ops.cast(height, "float32"), "int32")[:, None, None, None]
        cx = ops.cast(centres[1] * ops.cast(width, "float32"), "int32")[:, None, None, None]
        rows = ops.arange(height)[None, :, None, None]
        cols = ops.arange(width)[None, None, :, None]
        half = self.cutout // 2
        inside = ((rows >= cy - half) & (rows < cy - half + self.cutout)
                  & (cols >= cx - half) & (cols < cx - half + self.cutout))
        return ops.cast(ops.logical_not(inside), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "crop": self.crop, "flip": self.flip, "cutout": self.cutout,
                "seed": self.seed}


def augment_layer(settings: AugmentSettings, seed: int) -> Augment:
    return Augment(settings.crop, settings.flip, settings.cutout, seed=seed, name="augment")


def mixup(images: np.ndarray, labels: np.ndarray, alpha: float, rng: np.random.Generator):
    """Blend each example with another of the batch (the batch reversed), labels alike.

    One mixing weight per batch drawn from Beta(alpha, alpha); labels must be one-hot.
    """
    weight = np.float32(rng.beta(alpha, alpha))
    images = images.astype(np.float32)
    return (weight * images + (1 - weight) * images[::-1],
            weight * labels + (1 - weight) * labels[::-1])
