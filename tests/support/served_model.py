"""Helpers for the serving tests: a registered champion without the pipeline, and a real server process.

The model is a ResNet-8 fitted for seconds on the images it will be asked about,
logged by `serving.pyfunc.log_classifier` exactly as the register stage logs its model: serving
does not care how well the weights learned, and this keeps the CIFAR-shaped
tests free of a pipeline run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from resnet_mlops.serving import pyfunc
from support.project_repo import PROJECT
from support.server_process import stop_group
from support.tracking_uri import tracking_store

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
JPEG_ARCHIVE = PROJECT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def register_model(store: Path, model_name: str, input_shape: tuple, class_names: list[str],
                   train_on: tuple[np.ndarray, np.ndarray] | None = None, architecture: str = "resnet_cifar",
                   **options) -> str:
    """Log and register a ResNet (default: ResNet-8) as `<model_name>@champion` in a SQLite store;
    return the tracking URI. `train_on` (pixels, labels): a few epochs on them, so that the labels
    differ from image to image.
    """
    import keras

    from resnet_mlops.models import build_model

    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    keras.utils.set_random_seed(0)
    if architecture == "resnet_cifar" and not options:
        options = {"depth": 8}
    network = build_model(architecture, input_shape, len(class_names), **options)
    if train_on is not None:
        network.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        network.fit(*train_on, epochs=15, batch_size=16, verbose=0)
    keras_file = store / f"{model_name}.keras"
    network.save(keras_file)
    with tracking_store(uri):
        existing = mlflow.get_experiment_by_name("serving")
        experiment = existing.experiment_id if existing else mlflow.create_experiment(
            "serving", artifact_location=(store / "mlartifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = pyfunc.log_classifier(keras_file, class_names)
        version = mlflow.register_model(info.model_uri, model_name)
        MlflowClient().set_registered_model_alias(model_name, "champion", version.version)
    return uri


def cifar_labels(files: list[tuple[str, bytes]]) -> np.ndarray:
    return np.array([CIFAR_CLASSES.index(name.split("/")[2]) for name, _ in files])


def cifar_jpegs(per_class: int) -> list[tuple[str, bytes]]:
    """The first `per_class` test JPEGs of every class, from the shared CIFAR-10 archive."""
    import tarfile

    if not JPEG_ARCHIVE.exists():
        pytest.skip(f"{JPEG_ARCHIVE} is absent (the shared CIFAR-10 JPEG copy)")
    found = []
    with tarfile.open(JPEG_ARCHIVE) as archive:  # the test split comes first in the archive
        for member in archive:
            parts = member.name.split("/")
            if member.isfile() and parts[1] == "test" and int(Path(parts[-1]).stem) < per_class:
                found.append((member.name, archive.extractfile(member).read()))
                if len(found) == per_class * len(CIFAR_CLASSES):
                    break
    return sorted(found)


# What MLflow prints that says nothing to our users; none of it may reach a command's console.
MLFLOW_NOISE = ("Add type hints to the `predict` method", "serialized using CloudPickle", "Downloading artifacts")


def mlflow_noise(text: str) -> list[str]:
    """The lines of `text` that are MLflow's noise."""
    return [line for line in text.splitlines() if any(noise in line for noise in MLFLOW_NOISE)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text or b"{}")
        except json.JSONDecodeError:
            return error.code, {"message": text.decode(errors="replace")}


@contextmanager
def serving_process(args: list[str], cwd: Path, env: dict, port: int, startup_s: float = 180, log=None):
    """`resnet-mlops serve ARGS --port PORT` as a real process; yield its base URL once it answers /ping.

    Its stdout and stderr go to `log` (a binary file) when given, else to a temporary file.
    """
    own_log = log is None
    log = log or tempfile.TemporaryFile()  # a file, not a pipe: nobody reads the access log while it runs
    server = subprocess.Popen(["resnet-mlops", "serve", *args, "--port", str(port)], cwd=cwd,
                              env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                urllib.request.urlopen(f"{base}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    stop_group(server, grace_s=30)
                    log.seek(0)
                    raise AssertionError(f"server did not start:\n{log.read().decode(errors='replace')}")
                time.sleep(0.5)
        yield base
    finally:
        stop_group(server, grace_s=30)
        if own_log:
            log.close()


def frame_records(frame) -> list[dict]:
    """A prediction frame as the server's JSON gives it."""
    return json.loads(frame.to_json(orient="records"))


def same_predictions(served: list[dict], local: list[dict], atol: float = 1e-5) -> bool:
    """Same labels, and the same probability for every class listed (by class index, not rank)."""
    def by_class(rows):
        return [{c["class_index"]: c["probability"] for c in p["top_k"]} for p in rows]

    if [p["label"] for p in served] != [p["label"] for p in local]:
        return False
    served_k, local_k = by_class(served), by_class(local)
    return all(a.keys() == b.keys() and np.allclose([a[i] for i in a], [b[i] for i in a], atol=atol)
               for a, b in zip(served_k, local_k, strict=True))
