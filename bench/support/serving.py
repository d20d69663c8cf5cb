"""What the serving bench serves, and the server it times.

A ResNet (random weights: serving speed does not depend on them) saved as the train stage saves
its model and logged with `serving.pyfunc.log_classifier` as the register stage logs it, then
registered as `<name>@champion` in a SQLite store of its own; the test JPEGs of the shared CIFAR-10
archive; `resnet-mlops serve` as a real process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from support.scratch import BIN

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def register_classifier(store: Path, model_name: str, input_shape: tuple, class_names: list[str],
                        architecture: str = "resnet20") -> str:
    """Register `architecture` as `<model_name>@champion` in a SQLite store in `store`; its tracking URI."""
    import keras
    import mlflow
    from mlflow.tracking import MlflowClient

    from resnet_mlops.models import build_model
    from resnet_mlops.models.saving import save_model
    from resnet_mlops.serving import pyfunc

    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    keras.utils.set_random_seed(0)
    keras_file = store / f"{model_name}.keras"
    save_model(build_model(architecture, input_shape, len(class_names)), keras_file)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("serving", artifact_location=(store / "mlartifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = pyfunc.log_classifier(keras_file, class_names)
    version = mlflow.register_model(info.model_uri, model_name)
    MlflowClient().set_registered_model_alias(model_name, "champion", version.version)
    return uri


def cifar_test_jpegs(archive: Path, per_class: int) -> list[tuple[str, bytes]]:
    """The first `per_class` test JPEGs of every class in the CIFAR-10 JPEG archive, sorted by name."""
    found = []
    with tarfile.open(archive) as bundle:  # the test split comes first in the archive
        for member in bundle:
            parts = member.name.split("/")
            if member.isfile() and parts[1] == "test" and int(Path(parts[-1]).stem) < per_class:
                found.append((member.name, bundle.extractfile(member).read()))
                if len(found) == per_class * len(CIFAR_CLASSES):
                    break
    return sorted(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving_process(args: list[str], cwd: Path, env: dict, port: int, startup_s: float = 180):
    """`resnet-mlops serve ARGS --port PORT` as a real process; yield its base URL once it answers /ping."""
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: nobody reads the access log while it runs
        server = subprocess.Popen([str(BIN / "resnet-mlops"), "serve", *args, "--port", str(port)], cwd=cwd,
                                  env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **env}, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_for(base, server, time.monotonic() + startup_s, log)
            yield base
        finally:
            _stop(server)


def _wait_for(base: str, server: subprocess.Popen, deadline: float, log) -> None:
    while True:
        try:
            urllib.request.urlopen(f"{base}/ping", timeout=2)
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                _stop(server)
                log.seek(0)
                raise SystemExit(f"the server did not start:\n{log.read().decode(errors='replace')[-5000:]}")
            time.sleep(0.5)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
