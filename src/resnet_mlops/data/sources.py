"""Dataset sources by `data.source`; each returns `Examples` in the image policy's shape."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from resnet_mlops.config import DataSettings
from resnet_mlops.data.examples import Examples
from resnet_mlops.data.images import to_pixels


def load_digits(settings: DataSettings) -> Examples:
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey images, offline.

    Their pixels are 0..16; they are rescaled to the full 0..255 range so that every
    source hands the model the same kind of input (raw uint8 pixels).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    if (settings.image_size, settings.channels) == (8, 1):
        images = images[..., np.newaxis]
    else:
        images = np.stack([to_pixels(Image.fromarray(x), settings.image_size, settings.channels) for x in images])
    count = len(images)
    return Examples(
        images=images, labels=bunch.target.astype(np.int64),
        class_names=tuple(str(n) for n in bunch.target_names),
        paths=[f"sklearn-digits#{i}" for i in range(count)],
        hashes=[hashlib.sha256(x.tobytes()).hexdigest() for x in images],
        sizes=[(8, 8)] * count, split_hints=[None] * count,
    )


def load_source(settings: DataSettings) -> Examples:
    if settings.source == "cifar10":
        from resnet_mlops.data.cifar10 import load_cifar10

        return load_cifar10(settings)
    if settings.source == "folder":
        from resnet_mlops.data.folder import load_folder

        return load_folder(settings)
    return load_digits(settings)
