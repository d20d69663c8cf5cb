"""One generic ResNet builder; every catalogue name is a choice of stem, block and stages.

Shaped after keras.applications' ``resnet.py``: a stem, stacks of residual
blocks, an optional pre-activation tail, then the top or pooling.
"""

from __future__ import annotations

import sys
from functools import partial

import keras
from keras import layers

from resnet_mlops.models.blocks import LayerFactory, basic_block, bottleneck_block, preact_bottleneck_block
from resnet_mlops.models.catalog import ModelConfig
from resnet_mlops.models.layers import Preprocess

CIFAR_WIDTHS = (16, 32, 64)
IMAGENET_WIDTHS = (64, 128, 256, 512)


def allow_deep_graph(layer_count: int) -> None:
    """Raise Python's recursion limit (never lower it) so Keras can map a graph of ``layer_count`` layers.

    Keras maps a functional graph recursively, about one Python frame per
    layer, when it builds or loads a model: resnet1202 has some 4,200 layers,
    far past Python's default limit of 1,000. The limit stays raised so that
    later sub-models or clones of the same graph work too.
    """
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 2 * layer_count + 1000))


def build(config: ModelConfig) -> keras.Model:
    """Build the validated ``config`` (see :func:`resnet_mlops.models.build_model`)."""
    arch, options = config.arch, config.options
    allow_deep_graph(4 * config.depth)  # every block has fewer than 4 layers per unit of depth
    # keras.applications' bottleneck networks have conv biases; matching them lets its weights load.
    make = LayerFactory(
        weight_decay=options["weight_decay"],
        use_bias=arch.family == "imagenet" and arch.block == "bottleneck",
        zero_init_residual=options["zero_init_residual"],
    )
    inputs = keras.Input(config.input_shape, name="pixels")
    x = Preprocess(options["preprocessing"], options["mean"], options["std"], name="preprocess")(inputs)
    block, widths, strides, stride_last = _stage_plan(config)
    if arch.family == "imagenet" and options["stem"] == "imagenet":
        x = _imagenet_stem(x, make, arch.preact, widths[0])
    else:
        x = _cifar_stem(x, make, arch.preact, widths[0])

    for index, (width, stride, blocks) in enumerate(zip(widths, strides, config.blocks_per_stage())):
        x = _stack(x, block, width, blocks, stride, stride_last, name=f"conv{index + 2}", make=make)

    if arch.preact:
        x = make.bn("post_bn")(x)
        x = layers.Activation("relu", name="post_relu")(x)
    x = _head(x, config, make)
    return keras.Model(inputs, x, name=config.name)


def _cifar_stem(x, make, preact, width):
    x = make.conv(width, 3, "conv1_conv", padding="same")(x)
    if not preact:  # a pre-activation network's first block normalises the stem's output itself
        x = make.bn("conv1_bn")(x)
        x = layers.Activation("relu", name="conv1_relu")(x)
    return x


def _imagenet_stem(x, make, preact, width):
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = make.conv(width, 7, "conv1_conv", strides=2)(x)
    if not preact:
        x = make.bn("conv1_bn")(x)
        x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _stage_plan(config: ModelConfig):
    """(block function, widths, stage strides, stride on the stage's last block?).

    Strides normally sit on a stage's first block. keras.applications' v2
    networks downsample in the last block of each stage instead (so the first
    three stages end with stride 2 and the fourth has none); ours follow it
    so its weights and outputs carry over.
    """
    arch, options = config.arch, config.options
    if arch.family == "cifar":
        return partial(basic_block, shortcut=options["shortcut"]), CIFAR_WIDTHS, (1, 2, 2), False
    if arch.family == "preact_cifar":
        return preact_bottleneck_block, CIFAR_WIDTHS, (1, 2, 2), False
    if arch.preact:
        return preact_bottleneck_block, IMAGENET_WIDTHS, (2, 2, 2, 1), True
    if arch.block == "basic":
        return partial(basic_block, shortcut=options["shortcut"]), IMAGENET_WIDTHS, (1, 2, 2, 2), False
    return bottleneck_block, IMAGENET_WIDTHS, (1, 2, 2, 2), False


def _stack(x, block, width, blocks, stride, stride_last, name, make):
    strided = blocks if stride_last else 1
    for index in range(1, blocks + 1):
        x = block(x, width, stride if index == strided else 1, name=f"{name}_block{index}", make=make)
    return x


def _head(x, config: ModelConfig, make):
    options = config.options
    if options["include_top"]:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return make.dense(config.num_classes, options["classifier_activation"], name="predictions")(x)
    if options["pooling"] == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if options["pooling"] == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x
