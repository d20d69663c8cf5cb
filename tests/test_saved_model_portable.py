"""The saved and logged model loads with the standard calls in a process that never imports this package.

The train stage writes models/model.keras with ``save_model`` and logs it as the
MLflow ``keras_model``; a user, a notebook or another tool then calls
``keras.saving.load_model`` or ``mlflow.keras.load_model`` without importing
resnet_mlops, where our custom layers are not registered (issue 11, item 12).
"""

import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from resnet_mlops.models import build_model
from resnet_mlops.models import layers as ours
from resnet_mlops.models.saving import load_model, portable_model, save_model
from support.residual_blocks import residual_blocks

# Keras 3.15's saving calls np.array(variable) in a way NumPy 2.4 deprecates, once per weight.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SHAPE, CLASSES = (8, 8, 1), 3  # the digits, as the pipeline tests train them


def _trained_looking(model, seed=0):
    """``model`` with batch-norm statistics and parameters away from their initial 0s and 1s."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, ours.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])
    return model


def _pixels(shape, count=4, seed=1):
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def _log_like_the_train_stage(keras_file, sample):
    """Log ``keras_file`` as ``keras_model``, as ``trainer._log_outputs`` does; return the run id."""
    import mlflow

    from resnet_mlops import tracking

    classifier = load_model(keras_file)
    with mlflow.start_run() as run:
        signature = mlflow.models.infer_signature(sample, classifier.predict(sample, verbose=0))
        mlflow.keras.log_model(classifier, name="keras_model", signature=signature,
                               pip_requirements=tracking.requirements())
    return run.info.run_id


# Run in a fresh interpreter: only Keras and MLflow are imported, never resnet_mlops.
CHILD = textwrap.dedent("""
    import json, sys, traceback
    import numpy as np
    folder, tracking_uri, run_id = sys.argv[1:]
    pixels = np.load(f"{folder}/pixels.npy")
    results = {}
    def attempt(name, load):
        try:
            model = load()
            np.save(f"{folder}/{name}.npy", model.predict(pixels, verbose=0))
            results[name] = "ok"
        except Exception:
            results[name] = traceback.format_exc()
    import keras
    attempt("keras", lambda: keras.saving.load_model(f"{folder}/model.keras"))
    import mlflow
    mlflow.set_tracking_uri(tracking_uri)
    attempt("mlflow", lambda: mlflow.keras.load_model(f"runs:/{run_id}/keras_model"))
    results["imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "resnet_mlops")
    with open(f"{folder}/results.json", "w") as f:
        json.dump(results, f)
    assert "resnet_mlops" not in sys.modules, results["imported"]
""")


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory):
    """A ResNet-8 saved as the train stage saves it and logged to SQLite, then loaded by a fresh process."""
    import mlflow

    folder = tmp_path_factory.mktemp("portable")
    model = _trained_looking(build_model("resnet_cifar", SHAPE, CLASSES, depth=8))
    pixels = _pixels(SHAPE)
    np.save(folder / "pixels.npy", pixels)
    save_model(model, folder / "model.keras")
    uri = f"sqlite:///{folder}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("portable", artifact_location=(folder / "mlartifacts").as_uri())
        mlflow.set_experiment(experiment_id=experiment)
        run_id = _log_like_the_train_stage(folder / "model.keras", pixels[:2])
        signature = mlflow.models.get_model_info(f"runs:/{run_id}/keras_model").signature
    finally:
        mlflow.set_tracking_uri(previous)
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), uri, run_id], cwd=folder,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((folder / "results.json").read_text())
    return results, folder, model.predict(pixels, verbose=0), signature


def test_the_saved_file_loads_with_plain_keras_without_this_package(fresh_process):
    results, folder, expected, _ = fresh_process
    assert results["keras"] == "ok", results["keras"]
    assert results["imported"] == []
    np.testing.assert_allclose(np.load(folder / "keras.npy"), expected, rtol=1e-5, atol=1e-6)


def test_the_logged_keras_model_loads_with_mlflow_without_this_package(fresh_process):
    results, folder, expected, signature = fresh_process
    assert results["mlflow"] == "ok", results["mlflow"]
    assert results["imported"] == []
    np.testing.assert_allclose(np.load(folder / "mlflow.npy"), expected, rtol=1e-5, atol=1e-6)
    assert list(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, *SHAPE]


FAMILY = [
    pytest.param("resnet20", (8, 8, 3), {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
                 id="resnet20-A-mean-std"),
    pytest.param("resnet20", (8, 8, 3), {"shortcut": "B"}, id="resnet20-B"),
    pytest.param("resnet_cifar", (9, 7, 2), {"depth": 8, "mean": 0.5}, id="resnet8-mean-only-odd-size"),
    pytest.param("preact_resnet_cifar", (8, 8, 3), {"depth": 11, "zero_init_residual": True}, id="preact-cifar"),
    pytest.param("resnet18", (8, 8, 3), {"stem": "cifar", "preprocessing": "tf"}, id="resnet18-cifar-stem-tf"),
    pytest.param("resnet18", (8, 8, 3), {"stem": "cifar", "preprocessing": "caffe"}, id="resnet18-cifar-stem-caffe"),
    pytest.param("resnet18", (32, 32, 1), {"shortcut": "A", "std": 0.3}, id="resnet18-A"),
    # keras.applications' preprocessing of its ResNet v1 and v2, on those networks: ~15 s each on 2 cores.
    pytest.param("resnet50", (32, 32, 3), {"preprocessing": "caffe"}, id="resnet50-caffe", marks=pytest.mark.slow),
    pytest.param("resnet50v2", (32, 32, 3), {"preprocessing": "tf", "include_top": False, "pooling": "avg"},
                 id="resnet50v2-no-top", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "shape", "options"), FAMILY)
def test_the_saved_file_holds_built_in_layers_only_and_computes_the_same(tmp_path, name, shape, options):
    import keras

    model = _trained_looking(build_model(name, shape, 10, **options))
    path = tmp_path / "model.keras"
    save_model(model, path)

    with zipfile.ZipFile(path) as archive:
        layers = json.loads(archive.read("config.json"))["config"]["layers"]
    assert {layer["module"].split(".")[0] for layer in layers} == {"keras"}
    assert not [layer["name"] for layer in layers if layer.get("registered_name")]

    loaded = keras.saving.load_model(path)
    pixels = _pixels(shape)
    expected = model.predict(pixels, verbose=0)
    # predict() runs TensorFlow's graph optimizer, which rewrites the trained model's x / 255 (a division
    # by a constant) but not the saved one's: float rounding, grown through 50 layers of random weights.
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), expected,
                               rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # Called eagerly, op by op, the two are the same arithmetic: equal bit for bit.
    np.testing.assert_array_equal(loaded(pixels, training=False), model(pixels, training=False))
    # The preprocessing keeps its layer name, and its output.
    np.testing.assert_array_equal(keras.Model(loaded.input, loaded.get_layer("preprocess").output)(pixels),
                                  keras.Model(model.input, model.get_layer("preprocess").output)(pixels))
    # Same weights in the same order, same residual structure; the training model keeps its layers.
    assert len(loaded.get_weights()) == len(model.get_weights())
    for saved, trained in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(saved, trained)
    assert len(residual_blocks(loaded)) == len(residual_blocks(model)) > 0
    assert any(isinstance(layer, ours.BatchNormalization) for layer in model.layers)
    assert isinstance(model.get_layer("preprocess"), ours.Preprocess)


def test_option_a_shortcut_is_the_same_values_as_built_in_layers():
    import keras

    x = np.random.default_rng(2).normal(size=(2, 7, 9, 5)).astype(np.float32)
    for stride in (1, 2, 3):
        layer = ours.ZeroPadShortcut(stride, 8, name="pad")
        inputs = keras.Input(x.shape[1:])
        builtin = keras.Model(inputs, layer.builtin_equivalent(inputs))
        np.testing.assert_array_equal(builtin(x), layer(x))


def test_the_saved_file_loads_through_our_loader_and_mixed_precision_survives(tmp_path):
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    try:
        model = _trained_looking(build_model("resnet_cifar", SHAPE, CLASSES, depth=8, mean=0.5, std=0.2))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    save_model(model, tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    assert loaded.get_layer("conv1_bn").dtype_policy.name == "mixed_bfloat16"
    assert loaded.output.dtype == "float32"
    pixels = _pixels(SHAPE)
    # Saved, the fused batch norm becomes Keras' own (other kernels, other bfloat16 roundings, whose
    # 8-bit mantissa is good to ~0.4% a step): equal up to what bfloat16 can say through 8 layers.
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), atol=3e-2)


def test_a_layer_only_this_package_could_load_is_refused():
    import keras

    class Custom(keras.layers.Layer):
        def call(self, x):
            return x

    inputs = keras.Input((4,))
    with pytest.raises(TypeError, match="only this package can load"):
        portable_model(keras.Model(inputs, keras.layers.Dense(2)(Custom()(inputs))))
    with pytest.raises(TypeError, match="functional"):
        portable_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
