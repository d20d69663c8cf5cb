"""The models benches train: the trainer's own, and ResNet-20 without the CPU speedups of issue 5.

`trainer_model` is the trainer's training model (augmentation + network, compiled with the
recipe; `resnet_mlops.training.model.training_model`) on the device plan the trainer makes
(dtype policy, seed, XLA on or off): what `resnet-mlops train` fits, without the stage around it.

`resnet20(without=...)` is the network of `build_model("resnet20", ..., shortcut="A")`, with any
of the speedups of issue 5 (`SPEEDUPS`) taken out again, so a bench can time what each bought.
They are taken out here, on a copy of the built model, and never by a switch in the shipped layers:
- "fused-bn": every batch norm becomes Keras' own `keras.layers.BatchNormalization` (the same
  config and weights, Keras' unfused training code);
- "slice-shortcut": option A shortcuts subsample with a strided slice (`x[:, ::s, ::s, :]`), as
  before; the shipped layer reshapes and slices, whose gradient is cheaper on TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import ops

from resnet_mlops.models import build_model
from resnet_mlops.models import layers as model_layers

SPEEDUPS = ("fused-bn", "slice-shortcut")


def trainer_model(project: Path, image_shape: tuple[int, ...], num_classes: int, steps_per_epoch: int):
    """(compiled training model, classifier, device plan) for `project`'s params.yaml, as the trainer builds them."""
    from resnet_mlops.config import load_params
    from resnet_mlops.training import devices
    from resnet_mlops.training.model import training_model

    params = load_params(Path(project) / "params.yaml")
    device = devices.plan(params.train, params.seed)
    with device.scope():
        model, classifier = training_model(params, tuple(image_shape), num_classes, steps_per_epoch,
                                           device.jit_compile)
    return model, classifier, device


class StridedSliceShortcut(model_layers.ZeroPadShortcut):
    """Option A as it was before issue 5: subsampled by a strided slice (bench only)."""

    def call(self, inputs):
        x = inputs[:, ::self.strides, ::self.strides, :]
        extra = self.channels - inputs.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])


def resnet20(input_shape=(32, 32, 3), num_classes=10, without=()) -> keras.Model:
    """ResNet-20 with option A shortcuts; the speedups named in `without` taken out (see the docstring)."""
    unknown = set(without) - set(SPEEDUPS)
    if unknown:
        raise ValueError(f"unknown speedups {sorted(unknown)}; choose from {', '.join(SPEEDUPS)}")
    model = build_model("resnet20", input_shape, num_classes, shortcut="A")
    if not without:
        return model

    def clone(layer):
        if "fused-bn" in without and isinstance(layer, model_layers.BatchNormalization):
            return layer.builtin_equivalent()
        if "slice-shortcut" in without and isinstance(layer, model_layers.ZeroPadShortcut):
            return StridedSliceShortcut.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
