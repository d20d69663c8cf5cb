"""Dataset sources: each returns raw uint8 images (N, H, W, C), integer labels and class names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resnet_mlops.config import DataSettings


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # uint8, (N, H, W, C)
    labels: np.ndarray  # int64, (N,)
    class_names: tuple[str, ...]


def load_digits() -> LabelledImages:
    """scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey images, offline.

    Their pixels are 0..16; they are rescaled to the full 0..255 range so that every
    source hands the model the same kind of input (raw uint8 pixels).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., np.newaxis]
    names = tuple(str(n) for n in bunch.target_names)
    return LabelledImages(images=images, labels=bunch.target.astype(np.int64), class_names=names)


_SOURCES = {"digits": load_digits}


def load_source(settings: DataSettings) -> LabelledImages:
    return _SOURCES[settings.source]()
