"""`resnet-mlops serve` follows `@champion`: a real server process, clients sending requests all along,
the alias moved under it.

Three registered versions of one-layer models on 8x8 grey images, told apart by their answers:
v1 says `zero` for every image, v2 says `two`, v3 cannot load (its weights file is gone). The
server starts on @champion = v1; the alias moves to v2 while two clients keep sending
requests, then to v3. Every answer must succeed, say which version produced it, and the
server must switch to v2 within the bound below and stay on v2 when v3 fails to load.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from resnet_mlops.models.saving import save_model
from resnet_mlops.serving.pyfunc import log_classifier
from support.served_model import free_port, serving_process
from support.tracking_uri import tracking_store

pytestmark = pytest.mark.slow

CLASSES = ["zero", "one", "two"]
NAME = "followed"
POLL_S = 1
SWITCH_BOUND_S = 30  # the poll, the new version's load and its check, on this busy 2-core machine


def constant_model(answer: int):
    """8x8x1 pixels -> class `answer`, whatever the image."""
    import keras

    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(len(CLASSES), activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    bias = np.zeros(len(CLASSES), np.float32)
    bias[answer] = 5.0
    dense.set_weights([np.zeros((64, len(CLASSES)), np.float32), bias])
    return model


@pytest.fixture
def registry(tmp_path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracking_store(uri):
        experiment = mlflow.create_experiment("follow", artifact_location=(tmp_path / "artifacts").as_uri())
        for answer in (0, 2, 1):
            keras_file = tmp_path / f"answers-{answer}.keras"
            save_model(constant_model(answer), keras_file)
            with mlflow.start_run(experiment_id=experiment):
                info = log_classifier(keras_file, CLASSES)
            mlflow.register_model(info.model_uri, NAME)
        client = MlflowClient()
        broken = client.get_logged_model(client.get_model_version(NAME, "3").source.removeprefix("models:/"))
        (Path(broken.artifact_location.removeprefix("file://")) / "artifacts" / "answers-1.keras").unlink()
        client.set_registered_model_alias(NAME, "champion", "1")
    return uri


class Clients:
    """Threads posting one image each, as fast as answers come; every answer recorded."""

    def __init__(self, base: str, count: int = 2):
        self.answers: list[tuple[float, int, str | None, str | None, float]] = []
        # (answered at, status, version, label, sent at), in the order the answers came
        self._stop = threading.Event()
        body = json.dumps({"inputs": np.zeros((1, 8, 8, 1), np.uint8).tolist()}).encode()
        self._threads = [threading.Thread(target=self._send, args=(f"{base}/invocations", body)) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _send(self, url: str, body: bytes) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    label = json.loads(response.read())["predictions"][0]["label"]
                    self.answers.append((time.monotonic(), response.status, response.headers["X-Model-Version"],
                                         label, sent))
            except Exception as error:  # noqa: BLE001 - a failed request is what the test counts
                self.answers.append((time.monotonic(), getattr(error, "code", 0), None, repr(error), sent))

    def wait_for(self, version: str, timeout_s: float) -> float:
        """Seconds until the first answer from `version`."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if any(a[2] == version for a in self.answers):
                return next(a[0] for a in self.answers if a[2] == version) - start
            time.sleep(0.1)
        raise AssertionError(f"no answer from {version} within {timeout_s} s; last: {self.answers[-3:]}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_the_server_follows_champion_without_a_failed_request_and_keeps_a_version_that_loads(registry, tmp_path):
    log = (tmp_path / "server.log").open("w+b")
    args = ["--model", f"models:/{NAME}@champion", "--follow-seconds", str(POLL_S)]
    with serving_process(args, tmp_path, {"MLFLOW_TRACKING_URI": registry}, free_port(), log=log) as base:
        clients = Clients(base)
        try:
            clients.wait_for(f"models:/{NAME}/1", 60)
            moved_at = len(clients.answers)
            MlflowClient(tracking_uri=registry).set_registered_model_alias(NAME, "champion", "2")
            switch_s = clients.wait_for(f"models:/{NAME}/2", SWITCH_BOUND_S)
            time.sleep(2)
            MlflowClient(tracking_uri=registry).set_registered_model_alias(NAME, "champion", "3")
            time.sleep(8 * POLL_S)  # several polls: v3 is tried, fails, and is not tried again
        finally:
            clients.stop()
    answers = clients.answers
    failed = [a for a in answers if a[1] != 200]
    assert not failed, failed[:3]
    labels = {"models:/followed/1": "zero", "models:/followed/2": "two"}
    assert all(labels[a[2]] == a[3] for a in answers)  # each header tells the truth
    first_v2 = next(i for i, a in enumerate(answers) if a[2] == f"models:/{NAME}/2")
    assert first_v2 >= moved_at
    # A request sent before the switch may still finish on v1 (it holds it) after another client's
    # first v2 answer; every request sent after that answer is v2's, v3 never answers.
    switched_at = answers[first_v2][0]
    assert all(a[2] == f"models:/{NAME}/2" for a in answers if a[4] > switched_at)
    assert switch_s < SWITCH_BOUND_S
    assert len(answers) - first_v2 > 10  # requests kept coming while v3 failed to load
    log.seek(0)
    printed = log.read().decode(errors="replace")
    assert f"serve: models:/{NAME}/3 did not load or answer (" in printed
    assert printed.count(f"models:/{NAME}/3 did not load") == 1  # not retried at every poll
    print(f"switched to v2 {switch_s:.1f} s after the alias moved; {len(answers)} answers, 0 failed")
