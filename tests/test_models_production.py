"""What a trained model needs in production: mixed precision, saving, and the size table."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resnet_mlops.models import build_model, describe, load_model, trainable_params
from resnet_mlops.models.summary import (
    CIFAR_MODELS,
    IMAGENET_MODELS,
    TABLE_END,
    TABLE_START,
    default_names,
    models_markdown,
)

MODELS_DOC = Path(__file__).resolve().parents[1] / "docs" / "MODELS.md"
# Keras 3.15's saving calls np.array(variable) in a way NumPy 2.4 deprecates, once per weight.
KERAS_SAVE_NOISE = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


@pytest.fixture
def policy(request):
    import keras

    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"], indirect=True)
@pytest.mark.parametrize(("name", "options"), [("resnet20", {}), ("preact_resnet_cifar", {"depth": 11})])
@pytest.mark.parametrize("activation", ["softmax", None])
def test_logits_and_probabilities_stay_float32_under_mixed_precision(policy, name, options, activation):
    model = build_model(name, (8, 8, 1), 10, classifier_activation=activation, **options)
    assert model.get_layer("conv1_conv").compute_dtype == policy.split("_")[1]
    assert model.get_layer("predictions").compute_dtype == "float32"
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 1), dtype=np.uint8)
    out = model.predict(pixels, verbose=0)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    if activation == "softmax":
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_the_policy_fixture_restores_float32():
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("resnet20", {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "weight_decay": 1e-4}),
        ("resnet_cifar", {"depth": 8, "shortcut": "B"}),
        ("preact_resnet_cifar", {"depth": 11, "zero_init_residual": True}),
        ("resnet18", {"preprocessing": "tf"}),
        ("resnet50v2", {"preprocessing": "caffe", "include_top": False, "pooling": "avg"}),
    ],
)
@KERAS_SAVE_NOISE
def test_keras_file_round_trip_gives_identical_predictions(tmp_path, name, options):
    import keras

    shape = (32, 32, 3)
    model = build_model(name, shape, 10, **options)
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, *shape), dtype=np.uint8)
    path = tmp_path / "model.keras"
    model.save(path)
    for loaded in (keras.saving.load_model(path), load_model(path)):
        np.testing.assert_array_equal(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0))
        assert loaded.count_params() == model.count_params()


@pytest.mark.slow
@KERAS_SAVE_NOISE
def test_a_saved_model_loads_in_a_fresh_process_without_preprocessing(tmp_path):
    """Serving's case: a new process that has imported nothing of ours, fed raw pixels."""
    model = build_model("resnet20", (8, 8, 3), 10, mean=0.5, std=0.25)
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "pixels.npy", pixels)
    code = (
        "import sys, numpy as np; from resnet_mlops.models import load_model; "
        "m = load_model(sys.argv[1] + '/model.keras'); "
        "np.save(sys.argv[1] + '/out.npy', m(np.load(sys.argv[1] + '/pixels.npy'), training=False))"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), model(pixels, training=False))


def test_describe_counts_parameters_and_macs():
    rows = describe(["resnet20", "resnet56"], (32, 32, 3), 10)
    assert [row["name"] for row in rows] == ["resnet20", "resnet56"]
    resnet20, resnet56 = rows
    assert resnet56["trainable_params"] == 853_018
    assert resnet56["params"] == 857_082
    # by hand: stem 3*3*3*16*32*32; stage 1 six 3x3 16->16 convs at 32x32; stages 2 and 3 one
    # strided 3x3 conv (c -> 2c) and five 3x3 2c->2c convs at half the size; dense 64*10
    stem = 9 * 3 * 16 * 32 * 32
    stage = 6 * 9 * 16 * 16 * 32 * 32
    strided = 9 * 16 * 32 * 16 * 16 + 5 * 9 * 32 * 32 * 16 * 16
    assert resnet20["macs"] == stem + stage + 2 * strided + 64 * 10 == 40_551_040
    option_b = describe(["resnet20"], (32, 32, 3), 10, shortcut="B")[0]
    assert option_b["macs"] - resnet20["macs"] == 16 * 32 * 16 * 16 + 32 * 64 * 8 * 8


def test_models_command_lists_sizes():
    done = subprocess.run(["resnet-mlops", "models", "resnet20", "resnet56", "--input-shape", "32x32x3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[1:]}
    assert rows["resnet20"][1] == "269,722" and rows["resnet56"][1] == "853,018"  # trainable, as published
    bad = subprocess.run(["resnet-mlops", "models", "resnet21x"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "resnet21x" in bad.stderr and "Traceback" not in bad.stderr


def test_describe_lists_by_default_the_names_that_take_the_input():
    assert default_names((8, 8, 1)) == CIFAR_MODELS
    assert default_names((32, 32, 3)) == CIFAR_MODELS + IMAGENET_MODELS
    assert len(CIFAR_MODELS + IMAGENET_MODELS) == 16
    with pytest.raises(ValueError, match=r"\(2, 2, 1\) is too small"):
        describe(None, (2, 2, 1))


def test_describe_validates_every_name_before_building_any():
    with pytest.raises(ValueError, match="resnet21x"):
        describe(["resnet20", "resnet21x"])


def test_trainable_params_leaves_out_batch_norm_statistics():
    model = build_model("resnet20", (32, 32, 3), 10)
    moving = sum(w.shape[0] for w in model.non_trainable_weights)
    assert trainable_params(model) + moving == model.count_params()


def test_docs_table_is_the_generated_one():
    """Spot-check rows of docs/MODELS.md against a fresh computation (the whole table takes a minute)."""
    text = MODELS_DOC.read_text()
    assert TABLE_START in text and TABLE_END in text
    table = text.split(TABLE_START)[1].split(TABLE_END)[0]
    fresh = models_markdown(cifar=("resnet20", "resnet56"), imagenet=("resnet18", "resnet50"))
    rows = [line for line in fresh.splitlines() if line.startswith("| `")]
    assert len(rows) == 4
    for row in rows:
        assert row in table, f"docs/MODELS.md is stale; regenerate it: {row}"
    assert len(re.findall(r"^\| `", table, re.MULTILINE)) == 16
