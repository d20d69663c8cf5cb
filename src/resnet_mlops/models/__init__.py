"""The ResNet family: ``build_model(name, input_shape, num_classes, **options)``.

Importing this package does not import Keras or TensorFlow (config validation
uses :func:`validate`); :func:`build_model` imports them when first called.
See ``docs/MODELS.md`` for the names, their options and their sizes.
"""

from __future__ import annotations

from resnet_mlops.models.catalog import KERAS_APPLICATIONS, MODEL_NAMES, InvalidModelOption, validate
from resnet_mlops.models.saving import load_model
from resnet_mlops.models.summary import count_macs, describe, trainable_params
from resnet_mlops.models.transfer import copy_weights, load_keras_applications_weights

__all__ = [
    "MODEL_NAMES",
    "InvalidModelOption",
    "KERAS_APPLICATIONS",
    "build_model",
    "copy_weights",
    "count_macs",
    "describe",
    "load_keras_applications_weights",
    "load_model",
    "trainable_params",
    "validate",
]


def build_model(name, input_shape, num_classes, **options):
    """Build the network ``name`` for ``input_shape`` (height, width, channels) and ``num_classes``.

    The model takes raw pixels (0..255, uint8 or float) and scales them inside.
    Options (all optional unless noted):

    - ``depth``: required for ``resnet_cifar`` (6n+2) and ``preact_resnet_cifar`` (9n+2).
    - ``shortcut``: "A" (zero-padded identity, CIFAR default) or "B" (1x1
      projection, ImageNet default); basic-block networks only.
    - ``zero_init_residual``: start each residual branch at zero (its last
      batch-norm gamma, or last convolution in pre-activation blocks).
    - ``weight_decay``: SGD-style decay; L2 penalty ``weight_decay / 2 * sum(w**2)``
      on conv and dense kernels.
    - ``preprocessing``: "scale" (x/255, then optional ``mean``/``std``),
      "caffe" or "tf" (keras.applications' ResNet v1 / v2 input scaling).
    - ``include_top``, ``pooling``, ``classifier_activation``: as in keras.applications.

    Raises :class:`InvalidModelOption` (a ``ValueError``) naming a bad argument.
    """
    from resnet_mlops.models.catalog import resolve
    from resnet_mlops.models.resnet import build

    config = resolve(name, options, input_shape=input_shape, num_classes=num_classes, building=True)
    return build(config)

