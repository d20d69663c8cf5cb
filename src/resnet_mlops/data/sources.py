"""Dataset sources by `data.source`; each returns `Examples` in the image policy's shape."""

from __future__ import annotations

import numpy as np

from resnet_mlops.config import DataSettings
from resnet_mlops.data.cache import DecodeCache
from resnet_mlops.data.examples import Examples, from_arrays


def load_digits(settings: DataSettings) -> Examples:
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey images, offline.

    Their pixels are 0..16; they are rescaled to the full 0..255 range so that every
    source hands the model the same kind of input (raw uint8 pixels).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return from_arrays(images, bunch.target, tuple(str(n) for n in bunch.target_names),
                       paths=[f"sklearn-digits#{i}" for i in range(len(images))], split_hints=[None] * len(images),
                       size=settings.image_size, channels=settings.channels)


def load_source(settings: DataSettings, cache: DecodeCache, pool, slots: int) -> Examples:
    """The source's examples; the folder source decodes through `cache` on `pool` (data/executors.py),
    the others hold their few pixels."""
    if settings.source == "cifar10":
        from resnet_mlops.data.cifar10 import load_cifar10

        return load_cifar10(settings)
    if settings.source == "folder":
        from resnet_mlops.data.folder import load_folder

        return load_folder(settings, cache, pool, slots)
    return load_digits(settings)
