"""A version registered before serving became a package still loads, scores and serves.

Registered versions pickle the pyfunc class by the import path it had when they were
logged, `resnet_mlops.serving.ResNetClassifier` (serving was one module then). The
fixture `tests/fixtures/model_logged_before_the_serving_package/` is such a version,
logged by that code (a ResNet-8 for 8x8 grey images and 3 classes, untrained), less
the copy of the package MLflow keeps beside it (`code: null` in its MLmodel): without
it, loading must find the class at its old path in today's package, the case of every
process that has this package imported already (`register` re-scoring a champion,
`predict`).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from support.served_model import free_port, post, serving_process

FIXTURE = Path(__file__).parent / "fixtures" / "model_logged_before_the_serving_package"
CLASSES = ["zero", "one", "two"]
NAME = "before-the-move"


def test_the_fixture_pickles_the_class_at_its_old_path():
    pickled = (FIXTURE / "python_model.pkl").read_bytes()
    assert b"resnet_mlops.serving\x94" in pickled and b"resnet_mlops.serving.pyfunc" not in pickled
    assert not (FIXTURE / "code").exists()


@pytest.fixture
def registered(tmp_path) -> str:
    """The fixture registered as version 1 of NAME, holding @champion, in a fresh SQLite store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("before", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(FIXTURE), artifact_path="model")
    client = MlflowClient()
    client.create_registered_model(NAME)
    version = client.create_model_version(NAME, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(NAME, "champion", version.version)
    return uri


def pixels(count: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, 8, 8, 1), dtype=np.uint8)


def test_it_loads_and_predicts_where_this_package_is_already_imported(registered):
    import resnet_mlops.serving.pyfunc  # as in `register` and `predict`: today's package is loaded first

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    wrapper = model.unwrap_python_model()
    assert type(wrapper) is resnet_mlops.serving.pyfunc.ResNetClassifier
    frame = model.predict(pixels(4))
    assert list(frame.columns) == ["label", "class_index", "probability", "top_k"]
    assert set(frame["label"]) <= set(CLASSES) and len(frame) == 4
    assert np.allclose(wrapper.probabilities(pixels(4)).sum(axis=1), 1, atol=1e-5)


def test_it_unpickles_by_the_old_path_alone(registered):
    """In a fresh interpreter with nothing of this package imported: the old path resolves."""
    script = ("import pickle, sys; obj = pickle.load(open(sys.argv[1], 'rb')); "
              "print(type(obj).__module__, type(obj).__qualname__, obj.class_names)")
    done = subprocess.run([sys.executable, "-c", script, str(FIXTURE / "python_model.pkl")],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["resnet_mlops.serving.pyfunc", "ResNetClassifier", "['zero',", "'one',", "'two']"]


def test_the_register_stage_rescores_it_as_champion(registered):
    """`register` re-scores the champion on the current test set: the old version's model runs."""
    from resnet_mlops.registry.rescore import load_comparable, rescore
    from resnet_mlops.registry.store import current_champion

    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)
    champion = current_champion(MlflowClient(), NAME)
    served = load_comparable(champion, {"class_names": CLASSES, "image_shape": [8, 8, 1]})
    comparison = rescore(served, pixels(6), labels, labels, CLASSES)  # against a challenger right on all 6
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(pixels(6))["class_index"].to_numpy()
    assert comparison.champion_accuracy == pytest.approx(float(np.mean(expected == labels)))
    assert comparison.b == 0 and comparison.c == int(np.sum(expected != labels))


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0], mode="L").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_it_is_served_by_resnet_mlops_serve(registered, tmp_path):
    port = free_port()
    env = {"MLFLOW_TRACKING_URI": registered}
    with serving_process(["--model", f"models:/{NAME}@champion"], tmp_path, env, port) as base:
        body = json.dumps({"inputs": {"image": [base64.b64encode(png(p)).decode() for p in pixels(2)]}}).encode()
        status, answer = post(f"{base}/invocations", body)
    assert status == 200, answer
    assert [row["label"] in CLASSES for row in answer["predictions"]] == [True, True]


def test_predict_labels_files_with_it(registered, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(pixels(3)):
        (folder / f"{index}.png").write_bytes(png(image))
    out = tmp_path / "predictions.csv"
    done = subprocess.run([str(Path(sys.executable).parent / "resnet-mlops"), "predict", str(folder),
                           "--model", f"models:/{NAME}@champion", "-o", str(out)], capture_output=True, text=True,
                          env={**os.environ, "MLFLOW_TRACKING_URI": registered})
    assert done.returncode == 0, done.stderr
    rows = out.read_text().splitlines()
    assert len(rows) == 4 and all(row.split(",")[1] in CLASSES for row in rows[1:]), rows
