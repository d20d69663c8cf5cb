"""ImageNet-style ResNets: shapes, the paper's sizes, and layer-for-layer parity with keras.applications."""

import numpy as np
import pytest

from resnet_mlops.models import (
    InvalidModelOption,
    build_model,
    count_macs,
    load_keras_applications_weights,
    trainable_params,
)


def _applications(name):
    import keras

    return {
        "resnet50": keras.applications.ResNet50,
        "resnet101": keras.applications.ResNet101,
        "resnet152": keras.applications.ResNet152,
        "resnet50v2": keras.applications.ResNet50V2,
    }[name]


@pytest.mark.parametrize(
    ("name", "shape", "options", "output_shape"),
    [
        ("resnet18", (224, 224, 3), {}, (None, 1000)),
        ("resnet34", (32, 32, 1), {}, (None, 1000)),
        ("resnet50", (224, 224, 3), {"include_top": False}, (None, 7, 7, 2048)),
        ("resnet50", (112, 112, 1), {"include_top": False, "pooling": "avg"}, (None, 2048)),
        ("resnet101v2", (64, 48, 3), {"include_top": False, "pooling": "max"}, (None, 2048)),
        ("resnet18", (33, 47, 3), {"include_top": False}, (None, 2, 2, 512)),
    ],
)
def test_output_shapes(name, shape, options, output_shape):
    assert build_model(name, shape, 1000, **options).output_shape == output_shape


def test_no_top_needs_no_class_count():
    model = build_model("resnet18", (32, 32, 3), None, include_top=False, pooling="avg")
    assert model.output_shape == (None, 512)


@pytest.mark.parametrize("shape", [(31, 31, 3), (224, 16, 3), (28, 28, 1)])
def test_input_smaller_than_the_network_can_take_is_refused(shape):
    with pytest.raises(InvalidModelOption, match=r"too small for resnet50: height and width must be at least 32") as e:
        build_model("resnet50", shape, 10)
    assert str(shape) in str(e.value)


def test_the_cifar_stem_makes_the_cifar_resnet18():
    """3x3 stride-1 stem, no pooling: the CIFAR ResNet-18 of DeVries & Taylor 2017 and
    kuangliu/pytorch-cifar, 11,173,962 parameters; it keeps 32x32 down to a 4x4 map."""
    model = build_model("resnet18", (32, 32, 3), 10, stem="cifar")
    assert trainable_params(model) == 11_173_962
    assert model.get_layer("conv1_conv").kernel.shape == (3, 3, 3, 64)
    assert not any(layer.name == "pool1_pool" for layer in model.layers)
    assert build_model("resnet18", (32, 32, 3), None, stem="cifar", include_top=False).output_shape == (None, 4, 4, 512)
    assert build_model("resnet50v2", (8, 8, 3), 10, stem="cifar").output_shape == (None, 10)


def test_stem_is_checked_and_only_imagenet_networks_take_it():
    with pytest.raises(InvalidModelOption, match=r"stem must be one of 'imagenet', 'cifar', got 'tiny'"):
        build_model("resnet18", (32, 32, 3), 10, stem="tiny")
    with pytest.raises(InvalidModelOption, match=r"unknown option 'stem' for resnet56"):
        build_model("resnet56", (32, 32, 3), 10, stem="cifar")
    with pytest.raises(InvalidModelOption, match=r"too small for resnet18: height and width must be at least 8"):
        build_model("resnet18", (7, 7, 3), 10, stem="cifar")


def test_resnet18_and_34_are_the_papers_networks():
    """No conv biases and projection shortcuts: torchvision's counts, 11,689,512 and 21,797,672."""
    assert trainable_params(build_model("resnet18", (224, 224, 3), 1000)) == 11_689_512
    assert trainable_params(build_model("resnet34", (224, 224, 3), 1000)) == 21_797_672


@pytest.mark.parametrize(
    ("name", "giga_macs"), [("resnet18", 1.8), ("resnet34", 3.6), ("resnet50", 3.8), ("resnet101", 7.6), ("resnet152", 11.3)]
)
def test_macs_agree_with_he_et_al_table_1(name, giga_macs):
    """Table 1 prints FLOPs (multiply-adds) to two significant figures, not always rounded: within 2%."""
    macs = count_macs(build_model(name, (224, 224, 3), 1000))
    assert macs / 1e9 == pytest.approx(giga_macs, rel=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet101", "resnet152"])
def test_parameter_count_equals_keras_applications(name):
    ours = build_model(name, (224, 224, 3), 1000)
    theirs = _applications(name)(weights=None)
    assert ours.count_params() == theirs.count_params()
    assert trainable_params(ours) == trainable_params(theirs)


def _randomise(model, seed):
    """Random weights everywhere, batch-norm statistics included, so a wrong mapping cannot hide."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            size = layer.gamma.shape
            layer.set_weights(
                [rng.uniform(0.5, 1.5, size), rng.normal(0, 0.1, size), rng.normal(0, 0.1, size), rng.uniform(0.5, 1.5, size)]
            )
        elif layer.weights:
            layer.set_weights([rng.normal(0, np.sqrt(2.0 / np.prod(w.shape[:-1])), w.shape) for w in layer.weights])


@pytest.mark.slow
@pytest.mark.parametrize(("name", "preprocessing"), [("resnet50", "caffe"), ("resnet50v2", "tf")])
def test_keras_applications_weights_load_layer_for_layer(name, preprocessing):
    """Same count at 224x224x3/1000 classes, and identical outputs once the weights are copied."""
    import keras

    theirs = _applications(name)(weights=None, classifier_activation=None)
    ours = build_model(name, (224, 224, 3), 1000, preprocessing=preprocessing, classifier_activation=None)
    assert ours.count_params() == theirs.count_params()
    _randomise(theirs, seed=0)
    assert load_keras_applications_weights(ours, theirs) == []

    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    module = keras.applications.resnet if preprocessing == "caffe" else keras.applications.resnet_v2
    expected = theirs.predict(module.preprocess_input(pixels.astype(np.float32)), verbose=0)
    got = ours.predict(pixels, verbose=0)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(got, expected, atol=1e-4 * scale, rtol=1e-4)


def test_imagenet_features_transfer_to_a_new_task():
    """A headless source fills everything but our new classifier, which keeps its own initialisation."""
    import keras

    theirs = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(32, 32, 3))
    ours = build_model("resnet50v2", (32, 32, 3), 10, preprocessing="tf")
    kept = ours.get_layer("predictions").get_weights()
    assert load_keras_applications_weights(ours, theirs) == ["predictions"]
    np.testing.assert_array_equal(ours.get_layer("post_bn").get_weights()[0], theirs.get_layer("post_bn").get_weights()[0])
    np.testing.assert_array_equal(ours.get_layer("predictions").get_weights()[0], kept[0])


def test_transfer_refuses_a_mismatch_before_changing_anything():
    import keras

    source = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"expect preprocessing='caffe' but resnet50 was built with preprocessing='scale'"):
        load_keras_applications_weights(build_model("resnet50", (32, 32, 3), 10), source)
    with pytest.raises(ValueError, match="not the same architecture"):
        load_keras_applications_weights(build_model("resnet101", (32, 32, 3), 10, preprocessing="caffe"), source)

    gray_source = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 1))
    ours = build_model("resnet50", (32, 32, 3), 10, preprocessing="caffe")
    before = [layer.get_weights() for layer in ours.layers]
    with pytest.raises(ValueError, match=r"layer 'conv1_conv' has weight shapes \[\(7, 7, 3, 64\), \(64,\)\]"):
        load_keras_applications_weights(ours, gray_source)
    for layer, weights in zip(ours.layers, before):
        for now, then in zip(layer.get_weights(), weights):
            np.testing.assert_array_equal(now, then)
