"""The very deep networks: ResNet-1202, the pre-activation ResNets, and that depth trains."""

import numpy as np
import pytest

from resnet_mlops.models import build_model, trainable_params
from support.residual_blocks import residual_blocks


@pytest.fixture(scope="module")
def resnet1202():
    return build_model("resnet1202", (32, 32, 3), 10)


@pytest.fixture(scope="module")
def preact_resnet1001():
    return build_model("preact_resnet1001", (32, 32, 3), 10)


@pytest.mark.slow
def test_resnet1202_has_19_4_million_parameters_in_600_blocks(resnet1202):
    assert round(trainable_params(resnet1202) / 1e6, 1) == 19.4  # He et al. 2016, Table 6
    assert len(residual_blocks(resnet1202)) == 3 * 200
    assert resnet1202.output_shape == (None, 10)


def test_preact_resnet164_has_1_7_million_parameters():
    model = build_model("preact_resnet164", (32, 32, 3), 10)
    assert trainable_params(model) == 1_703_258
    assert round(trainable_params(model) / 1e6, 1) == 1.7  # Identity Mappings, Table 3
    assert len(residual_blocks(model)) == 3 * 18


@pytest.mark.slow
def test_preact_resnet1001_is_the_faithful_bottleneck_build(preact_resnet1001):
    # The paper prints 10.2M, which leaves out batch norm; the convolutions and classifier alone are 10.2M.
    assert trainable_params(preact_resnet1001) == 10_327_706
    batch_norm = sum(
        int(np.prod(w.shape))
        for layer in preact_resnet1001.layers
        if type(layer).__name__ == "BatchNormalization"
        for w in layer.trainable_weights
    )
    assert round((trainable_params(preact_resnet1001) - batch_norm) / 1e6, 1) == 10.2
    assert len(residual_blocks(preact_resnet1001)) == 3 * 111


def test_generic_preact_depth_follows_9n_plus_2():
    model = build_model("preact_resnet_cifar", (32, 32, 3), 10, depth=29)
    assert len(residual_blocks(model)) == 3 * 3
    assert model.output_shape == (None, 10)


@pytest.mark.slow
def test_one_training_step_of_resnet110_reaches_the_first_convolution():
    import keras
    import tensorflow as tf

    model = build_model("resnet110", (32, 32, 3), 10)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3])
    first = model.get_layer("conv1_conv").kernel
    before = first.numpy().copy()
    with tf.GradientTape() as tape:
        loss = keras.losses.sparse_categorical_crossentropy(labels, model(pixels, training=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    first_gradient = gradients[[v.path for v in model.trainable_variables].index(first.path)].numpy()
    assert np.all(np.isfinite(first_gradient))
    assert np.abs(first_gradient).max() > 0
    keras.optimizers.SGD(0.1).apply_gradients(zip(gradients, model.trainable_variables))
    assert not np.array_equal(first.numpy(), before)
