"""The catalogue and the CIFAR ResNets of He et al. (2016), sec. 4.2: validation, structure, published sizes.

Structure tests for every family live here too, since they share one check of what "residual" means.
"""

import subprocess
import sys

import numpy as np
import pytest

from resnet_mlops.models import (
    MODEL_NAMES,
    InvalidModelOption,
    build_model,
    trainable_params,
    validate,
)
from support.residual_blocks import residual_blocks


@pytest.fixture(scope="module")
def resnet20():
    return build_model("resnet20", (8, 8, 1), 10)


def test_importing_the_package_does_not_import_tensorflow():
    code = "import sys, resnet_mlops.models; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_every_cifar_name_is_in_the_catalogue():
    for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202", "resnet_cifar"):
        assert name in MODEL_NAMES


@pytest.mark.parametrize(
    ("name", "depth", "printed_millions", "digits"),
    [
        ("resnet20", None, 0.27, 2),
        ("resnet32", None, 0.46, 2),
        ("resnet44", None, 0.66, 2),
        ("resnet56", None, 0.85, 2),
        ("resnet110", None, 1.7, 1),
        ("resnet_cifar", 56, 0.85, 2),
    ],
)
def test_trainable_params_match_he_et_al_table_6(name, depth, printed_millions, digits):
    options = {"depth": depth} if depth else {}
    model = build_model(name, (32, 32, 3), 10, **options)
    assert round(trainable_params(model) / 1e6, digits) == printed_millions


def test_resnet56_counts_exactly():
    model = build_model("resnet56", (32, 32, 3), 10)
    assert trainable_params(model) == 853_018
    assert model.count_params() == 857_082  # plus the batch-norm moving statistics


def test_option_b_adds_only_the_projections():
    a = build_model("resnet20", (32, 32, 3), 10, shortcut="A")
    b = build_model("resnet20", (32, 32, 3), 10, shortcut="B")
    # two projections, 16->32 and 32->64: 1x1 kernels plus batch-norm gamma and beta
    assert trainable_params(b) - trainable_params(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


@pytest.mark.parametrize(
    ("shape", "classes"), [((8, 8, 1), 10), ((28, 28, 1), 10), ((32, 32, 3), 10), ((32, 32, 3), 100), ((224, 224, 3), 10)]
)
def test_output_shape_and_probabilities(shape, classes):
    model = build_model("resnet20", shape, classes)
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, *shape), dtype=np.uint8)
    probabilities = model.predict(pixels, verbose=0)
    assert model.output_shape == (None, classes)
    assert probabilities.shape == (2, classes)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_raw_uint8_and_float_pixels_give_the_same_prediction(resnet20):
    pixels = np.random.default_rng(1).integers(0, 256, size=(3, 8, 8, 1), dtype=np.uint8)
    np.testing.assert_array_equal(
        resnet20.predict(pixels, verbose=0), resnet20.predict(pixels.astype(np.float32), verbose=0)
    )


def test_scaling_and_normalisation_happen_inside_the_model():
    model = build_model("resnet20", (8, 8, 3), 10, mean=[0.5, 0.4, 0.3], std=[0.25, 0.2, 0.1])
    pixels = np.random.default_rng(2).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    scaled = model.get_layer("preprocess")(pixels.astype(np.float32))
    expected = (pixels / 255.0 - [0.5, 0.4, 0.3]) / [0.25, 0.2, 0.1]
    np.testing.assert_allclose(np.asarray(scaled), expected, rtol=1e-5, atol=1e-5)


# --- structure: the network really is residual ------------------------------------------------

STRUCTURES = {
    # id: (name, input shape, options, blocks, residual-branch kernel sizes, first block's input layer)
    "cifar-A": ("resnet20", (8, 8, 1), {"shortcut": "A"}, 9, [3, 3], "conv1_relu"),
    "cifar-B": ("resnet20", (8, 8, 1), {"shortcut": "B"}, 9, [3, 3], "conv1_relu"),
    "preact-cifar": ("preact_resnet_cifar", (8, 8, 1), {"depth": 20}, 6, [1, 3, 1], "conv1_conv"),
    "imagenet-basic": ("resnet18", (32, 32, 1), {}, 8, [3, 3], "pool1_pool"),
    "imagenet-bottleneck": ("resnet50", (32, 32, 3), {}, 16, [1, 3, 1], "pool1_pool"),
    "imagenet-v2": ("resnet50v2", (32, 32, 3), {}, 16, [1, 3, 1], "pool1_pool"),
}
SHORTCUT_KINDS = {
    (): "identity",
    ("ZeroPadShortcut",): "option A",
    ("Conv2D", "BatchNormalization"): "projection",
    ("Conv2D",): "pre-activated projection",
    ("MaxPooling2D",): "subsampling identity",
}


def _kind(block):
    return SHORTCUT_KINDS[tuple(type(layer).__name__ for layer in block.shortcut)]


@pytest.fixture(scope="module", params=list(STRUCTURES), ids=list(STRUCTURES))
def structure(request):
    name, shape, options, blocks, kernels, first_input = STRUCTURES[request.param]
    return build_model(name, shape, 10, **options), blocks, kernels, first_input


def test_every_block_adds_its_shortcut_and_its_residual_branch(structure):
    model, expected_blocks, kernels, first_input = structure
    blocks = residual_blocks(model)
    assert len(blocks) == expected_blocks
    previous = model.get_layer(first_input).output
    for block in blocks:
        assert block.input is previous, f"{block.name} does not start where the previous block ends"
        convs = [layer for layer in block.residual if type(layer).__name__ == "Conv2D"]
        assert [c.kernel_size[0] for c in convs] == kernels
        kind = _kind(block)
        assert kind != "option A" or block.shortcut[0].count_params() == 0
        assert all(layer.kernel_size == (1, 1) for layer in block.shortcut if type(layer).__name__ == "Conv2D")
        if kind == "identity":
            assert any(tensor is block.input for tensor in block.add.input)
        previous = block.output.output
    assert len(blocks) == len([layer for layer in model.layers if type(layer).__name__ == "Add"])


def test_shortcut_kinds_follow_the_papers():
    kinds = {
        key: sorted({_kind(block) for block in residual_blocks(build_model(name, shape, 10, **options))})
        for key, (name, shape, options, *_) in STRUCTURES.items()
    }
    assert kinds == {
        "cifar-A": ["identity", "option A"],
        "cifar-B": ["identity", "projection"],
        "preact-cifar": ["identity", "pre-activated projection"],
        "imagenet-basic": ["identity", "projection"],
        "imagenet-bottleneck": ["identity", "projection"],
        "imagenet-v2": ["identity", "pre-activated projection", "subsampling identity"],
    }


def test_original_blocks_end_with_relu_and_pre_activation_blocks_with_the_addition(structure):
    model = structure[0]
    preact = model.name.startswith("preact") or model.name.endswith("v2")
    for block in residual_blocks(model):
        if preact:
            assert block.output is block.add
            assert type(block.residual[-1]).__name__ == "Conv2D"  # nothing after the last convolution
            assert type((block.shared + block.residual)[0]).__name__ == "BatchNormalization"
        else:
            assert block.output.name == f"{block.name}_out"
            assert block.output.get_config()["activation"] == "relu"
            assert block.output.input is block.add.output


def test_a_block_with_its_residual_branch_zeroed_passes_its_input_through(structure):
    """Identity for pre-activation blocks, relu of the input for original ones (shortcut applied first)."""
    import keras

    model = structure[0]
    rng = np.random.default_rng(3)
    for block in residual_blocks(model):
        for layer in block.residual:
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        x = rng.normal(size=(2, *block.input.shape[1:])).astype(np.float32)  # negatives too
        if block.shortcut:
            skip = np.asarray(keras.Model(block.input, block.shortcut[-1].output)(x, training=False))
        else:
            skip = x
        out = np.asarray(keras.Model(block.input, block.output.output)(x, training=False))
        expected = skip if block.output is block.add else np.maximum(skip, 0.0)
        np.testing.assert_allclose(out, expected, atol=1e-5, err_msg=block.name)
        assert np.abs(out).sum() > 0


def test_a_plain_network_has_no_residual_blocks():
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="b1_conv")(inputs)
    x = keras.layers.Conv2D(4, 3, name="b2_conv")(x)
    assert residual_blocks(keras.Model(inputs, x)) == []


@pytest.mark.parametrize(("name", "options"), [("resnet20", {}), ("preact_resnet_cifar", {"depth": 11})])
def test_zero_init_residual_starts_each_branch_at_zero(name, options):
    """The last batch norm's gamma, or the last convolution where no batch norm ends the branch."""
    model = build_model(name, (8, 8, 1), 10, zero_init_residual=True, **options)
    for block in residual_blocks(model):
        last = block.residual[-1]
        zeroed = last.gamma if type(last).__name__ == "BatchNormalization" else last.kernel
        np.testing.assert_array_equal(zeroed.numpy(), 0.0)
    first = model.get_layer("conv1_conv").kernel.numpy()
    assert np.abs(first).sum() > 0


def test_weight_decay_is_an_l2_penalty_of_half_the_coefficient():
    model = build_model("resnet20", (8, 8, 1), 10, weight_decay=1e-4)
    conv = model.get_layer("conv2_block1_1_conv")
    assert conv.kernel_regularizer is not None
    kernel = conv.kernel.numpy()
    np.testing.assert_allclose(float(conv.kernel_regularizer(conv.kernel)), 0.5e-4 * np.sum(kernel**2), rtol=1e-5)
    assert model.get_layer("conv2_block1_1_bn").gamma_regularizer is None
    assert build_model("resnet20", (8, 8, 1), 10).get_layer("conv2_block1_1_conv").kernel_regularizer is None


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "option", "echoed"),
    [
        (lambda: build_model("resnet_cifar", (32, 32, 3), 10, depth=21), "depth", "21"),
        (lambda: build_model("resnet21x", (32, 32, 3), 10), "name", "resnet21x"),
        (lambda: build_model("resnet20", (32, 32, 3), 0), "num_classes", "0"),
        (lambda: build_model("resnet20", (32, 32, 3), 10, shortcut="C"), "shortcut", "'C'"),
        (lambda: build_model("resnet20", (2, 2, 3), 10), "input_shape", "(2, 2, 3)"),
        (lambda: build_model("resnet20", (32, 32), 10), "input_shape", "(32, 32)"),
        (lambda: build_model("resnet20", (32, 32, 3), 10, depth=32), "depth", "32"),
        (lambda: build_model("resnet20", (32, 32, 3), 10, widen=2), "widen", "widen"),
        (lambda: validate("resnet20", {"weight_decay": -1.0}), "weight_decay", "-1.0"),
        (lambda: validate("resnet20", {"weight_decay": "1e-4"}), "weight_decay", "'1e-4'"),
        (lambda: validate("resnet20", {"zero_init_residual": "yes"}), "zero_init_residual", "'yes'"),
        (lambda: validate("resnet_cifar", {"depth": True}), "depth", "True"),
        (lambda: validate("resnet_cifar", {}), "depth", "6n+2"),
        (lambda: validate("resnet20", {"std": [0.2, 0.0, 0.2]}), "std", "[0.2, 0.0, 0.2]"),
        (lambda: validate("resnet20", {"mean": [0.5]}, input_shape=(8, 8, 3)), None, None),
        (lambda: validate("resnet20", {"mean": [0.5, 0.5]}, input_shape=(8, 8, 3)), "mean", "[0.5, 0.5]"),
        (lambda: validate("resnet20", {"preprocessing": "tf", "mean": 0.5}), "mean", "0.5"),
        (lambda: validate("resnet20", {"pooling": "avg"}), "pooling", "'avg'"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(call, option, echoed):
    if option is None:  # the valid control case
        call()
        return
    with pytest.raises(ValueError) as caught:
        call()
    assert isinstance(caught.value, InvalidModelOption)
    assert caught.value.option == option
    assert echoed in str(caught.value)


def test_depth_messages_are_one_plain_sentence():
    with pytest.raises(InvalidModelOption, match=r"^CIFAR ResNet depth must be 6n\+2 \(8, 14, 20, 32, \.\.\.\), got 21$"):
        validate("resnet_cifar", {"depth": 21})
    with pytest.raises(InvalidModelOption, match=r"^unknown model name 'resnet21x'; choose one of: resnet20, "):
        validate("resnet21x", {})


def test_validate_accepts_every_name_with_defaults():
    for name in MODEL_NAMES:
        options = {"depth": 9 * 2 + 2} if name.endswith("_cifar") else {}
        validate(name, options, input_shape=(32, 32, 3), num_classes=10)
