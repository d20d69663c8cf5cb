"""Residual blocks and the factory that gives every layer the same initialisation and decay.

Naming follows keras.applications (``<block>_1_conv``, ``<block>_0_conv`` for
a projection shortcut, ...) so its weights load by layer name, plus two
names every block has: the addition ``<block>_add`` and, for the original
(post-activation) blocks, the ReLU after it, ``<block>_out``. Pre-activation
blocks end at the addition.
"""

from __future__ import annotations

import keras
from keras import layers

from resnet_mlops.models.layers import BatchNormalization, ZeroPadShortcut

BN_EPSILON = 1.001e-5  # keras.applications' value, so transferred weights give identical outputs
# Keras' momentum is the weight of the old statistic: 0.9 is Torch's 0.1, which the papers' code used.
BN_MOMENTUM = 0.9


class LayerFactory:
    """Makes convolutions, batch norms and the classifier the same way everywhere.

    Convolution kernels are He-normal, the papers' initialisation for ReLU networks.
    ``weight_decay`` is the SGD-style decay coefficient of the papers (1e-4 in
    He et al.): each conv and dense kernel gets an L2 penalty of
    ``weight_decay / 2 * sum(w ** 2)``, whose gradient is ``weight_decay * w``.
    Biases and batch-norm parameters are not decayed. ``use_bias`` gives the
    convolutions biases where keras.applications has them; the papers' networks
    have none (batch norm makes them redundant).
    """

    def __init__(self, weight_decay=0.0, use_bias=False, zero_init_residual=False):
        self.regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
        self.use_bias = use_bias
        self.zero_init_residual = zero_init_residual

    def conv(self, filters, kernel_size, name, strides=1, padding="valid", use_bias=None, last_in_branch=False):
        zero = last_in_branch and self.zero_init_residual
        return layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding=padding,
            use_bias=self.use_bias if use_bias is None else use_bias,
            kernel_initializer="zeros" if zero else "he_normal",
            kernel_regularizer=self.regularizer,
            name=name,
        )

    def bn(self, name, last_in_branch=False):
        zero = last_in_branch and self.zero_init_residual
        return BatchNormalization(
            axis=-1,
            momentum=BN_MOMENTUM,
            epsilon=BN_EPSILON,
            gamma_initializer="zeros" if zero else "ones",
            name=name,
        )

    def dense(self, units, activation, name):
        # float32 even under a mixed-precision policy: logits and probabilities keep full precision.
        # Glorot (Keras' default) rather than He: no ReLU follows, and it starts near-uniform.
        return layers.Dense(
            units,
            activation=activation,
            kernel_initializer="glorot_uniform",
            kernel_regularizer=self.regularizer,
            dtype="float32",
            name=name,
        )


def basic_block(x, filters, stride, name, make: LayerFactory, shortcut="B"):
    """Two 3x3 convolutions (He et al. 2016, Fig. 2 left), post-activation.

    When the shape changes, ``shortcut`` "A" subsamples and zero-pads channels,
    "B" projects with a strided 1x1 convolution and batch norm.
    """
    if stride == 1 and x.shape[-1] == filters:
        skip = x
    elif shortcut == "A":
        skip = ZeroPadShortcut(stride, filters, name=f"{name}_0_pad")(x)
    else:
        skip = make.conv(filters, 1, f"{name}_0_conv", strides=stride)(x)
        skip = make.bn(f"{name}_0_bn")(skip)

    y = make.conv(filters, 3, f"{name}_1_conv", strides=stride, padding="same")(x)
    y = make.bn(f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = make.conv(filters, 3, f"{name}_2_conv", padding="same")(y)
    y = make.bn(f"{name}_2_bn", last_in_branch=True)(y)
    return _add_relu(skip, y, name)


def bottleneck_block(x, filters, stride, name, make: LayerFactory):
    """1x1 reduce, 3x3, 1x1 expand to ``4 * filters`` (Fig. 5 right), post-activation.

    Layer for layer keras.applications' ``residual_block_v1``: the stride sits
    on the first 1x1 convolution, and a shape change gets a projection shortcut.
    """
    if stride == 1 and x.shape[-1] == 4 * filters:
        skip = x
    else:
        skip = make.conv(4 * filters, 1, f"{name}_0_conv", strides=stride)(x)
        skip = make.bn(f"{name}_0_bn")(skip)

    y = make.conv(filters, 1, f"{name}_1_conv", strides=stride)(x)
    y = make.bn(f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = make.conv(filters, 3, f"{name}_2_conv", padding="same")(y)
    y = make.bn(f"{name}_2_bn")(y)
    y = layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = make.conv(4 * filters, 1, f"{name}_3_conv")(y)
    y = make.bn(f"{name}_3_bn", last_in_branch=True)(y)
    return _add_relu(skip, y, name)


def preact_bottleneck_block(x, filters, stride, name, make: LayerFactory):
    """Pre-activation bottleneck (He et al. 2016, "Identity Mappings", Fig. 4e).

    BN and ReLU come before each convolution and nothing follows the addition,
    so the shortcut path is a pure identity. A shape change projects the
    pre-activated input with a 1x1 convolution (as the paper's code does); a
    stride without a shape change subsamples the input. Layer for layer
    keras.applications' ``residual_block_v2``, with the stride on the 3x3
    (the paper's Torch code strides the first 1x1; the parameters are the same).
    With ``zero_init_residual`` the last convolution (no batch norm follows it)
    starts at zero.
    """
    preact = make.bn(f"{name}_preact_bn")(x)
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(preact)
    if x.shape[-1] != 4 * filters:
        skip = make.conv(4 * filters, 1, f"{name}_0_conv", strides=stride)(preact)
    elif stride > 1:
        skip = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    else:
        skip = x

    y = make.conv(filters, 1, f"{name}_1_conv", use_bias=False)(preact)
    y = make.bn(f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.ZeroPadding2D(1, name=f"{name}_2_pad")(y)
    y = make.conv(filters, 3, f"{name}_2_conv", strides=stride, use_bias=False)(y)
    y = make.bn(f"{name}_2_bn")(y)
    y = layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = make.conv(4 * filters, 1, f"{name}_3_conv", last_in_branch=True)(y)
    return layers.Add(name=f"{name}_add")([skip, y])


def _add_relu(skip, residual, name):
    x = layers.Add(name=f"{name}_add")([skip, residual])
    return layers.Activation("relu", name=f"{name}_out")(x)
