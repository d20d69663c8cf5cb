"""The CIFAR ResNets of He et al. (2016), sec. 4.2: names, validation, structure, published sizes."""

import subprocess
import sys

import numpy as np
import pytest

from resnet_mlops.models import MODEL_NAMES, InvalidModelOption, build_model, residual_blocks, validate


def trainable_params(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


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


@pytest.mark.parametrize(("shape", "classes"), [((8, 8, 1), 10), ((32, 32, 3), 10), ((32, 32, 3), 100)])
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


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_every_block_adds_its_shortcut_and_its_residual_branch(shortcut):
    model = build_model("resnet20", (8, 8, 1), 10, shortcut=shortcut)
    blocks = residual_blocks(model)
    assert len(blocks) == 9  # 3 stages of n = (20 - 2) / 6 blocks
    previous = model.get_layer("conv1_relu").output
    for block in blocks:
        assert block.input is previous, f"{block.name} does not start where the previous block ends"
        convs = [layer for layer in block.residual if type(layer).__name__ == "Conv2D"]
        assert [c.kernel_size for c in convs] == [(3, 3), (3, 3)]
        assert block.shared == ()
        if not block.shortcut:
            assert block.add.input[0] is block.input  # identity: the input itself is added
        elif shortcut == "A":
            assert [type(layer).__name__ for layer in block.shortcut] == ["ZeroPadShortcut"]
            assert block.shortcut[0].count_params() == 0
        else:
            assert [type(layer).__name__ for layer in block.shortcut] == ["Conv2D", "BatchNormalization"]
            assert block.shortcut[0].kernel_size == (1, 1)
        assert block.output.name == f"{block.name}_out"
        previous = block.output.output
    assert [b.name for b in blocks if b.shortcut] == ["conv3_block1", "conv4_block1"]


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_a_block_with_its_residual_branch_zeroed_returns_relu_of_its_shortcut(shortcut):
    import keras

    model = build_model("resnet20", (8, 8, 1), 10, shortcut=shortcut)
    rng = np.random.default_rng(3)
    for block in residual_blocks(model):
        for layer in block.residual:
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
        block_model = keras.Model(block.input, block.output.output)
        x = rng.normal(size=(2, *block.input.shape[1:])).astype(np.float32)  # negatives too
        if block.shortcut:
            skip = np.asarray(keras.Model(block.input, block.shortcut[-1].output)(x, training=False))
        else:
            skip = x
        out = np.asarray(block_model(x, training=False))
        np.testing.assert_allclose(out, np.maximum(skip, 0.0), atol=1e-6)
        assert np.abs(out).sum() > 0


def test_zero_init_residual_starts_each_branch_at_zero():
    model = build_model("resnet20", (8, 8, 1), 10, zero_init_residual=True)
    for block in residual_blocks(model):
        last_bn = block.residual[-1]
        assert type(last_bn).__name__ == "BatchNormalization"
        np.testing.assert_array_equal(last_bn.gamma.numpy(), 0.0)
    assert np.all(model.get_layer("conv1_bn").gamma.numpy() == 1.0)


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
