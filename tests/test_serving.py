"""The served model over HTTP: `resnet-mlops serve` as a real process (MLflow's scoring server under uvicorn).

Real CIFAR-10 JPEGs and the pipeline's digits arrays are scored by the server and
in-process through the same pyfunc, and must agree. Every kind of bad request is
answered with a 4xx naming the problem, and the next good request still succeeds.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import tempfile

import mlflow
import numpy as np
import pytest
from PIL import Image

from resnet_mlops.dataset import images
from support.image_files import huge_png
from support.project_repo import run
from support.served_model import (CIFAR_CLASSES, cifar_jpegs, cifar_labels, frame_records, free_port, mlflow_noise,
                                  post, register_model, same_predictions, serving_process)
from support.tracking_uri import tracking_store

pytestmark = pytest.mark.slow

MAX_BATCH = 48


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def policy(files) -> np.ndarray:
    """The prepare stage's pixels of these files (32x32 RGB)."""
    return np.stack([images.decode(data, 32, 3).pixels for _, data in files])


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """(server URL, in-process pyfunc, the 40 JPEGs, the server's log) for a CIFAR-shaped champion served
    with small limits."""
    files = cifar_jpegs(per_class=4)
    store = tmp_path_factory.mktemp("served")
    uri = register_model(store, "tiny-cifar", (32, 32, 3), CIFAR_CLASSES, train_on=(policy(files), cifar_labels(files)))
    with tracking_store(uri):
        local = mlflow.pyfunc.load_model("models:/tiny-cifar@champion")
    args = ["--model", "models:/tiny-cifar@champion", "--max-batch", str(MAX_BATCH), "--max-request-mb", "1"]
    with tempfile.TemporaryFile() as log, serving_process(args, store, {"MLFLOW_TRACKING_URI": uri}, free_port(),
                                                          log=log) as base:
        yield base + "/invocations", local, files, log


def ask(url: str, body: dict) -> tuple[int, dict]:
    return post(url, json.dumps(body).encode())


def local_answer(local, pixels: np.ndarray, top_k: int = 10) -> list[dict]:
    return frame_records(local.predict(pixels, params={"top_k": top_k}))


def test_cifar_jpegs_served_equal_in_process_predictions(cifar):
    url, local, files, _ = cifar
    expected = local_answer(local, policy(files))
    assert len({p["label"] for p in expected}) > 3  # a model that tells images apart
    records = {"dataframe_records": [{"image": b64(data)} for _, data in files], "params": {"top_k": 10}}
    status, body = ask(url, records)
    assert status == 200, body
    assert same_predictions(body["predictions"], expected)
    assert set(body["predictions"][0]) == {"label", "class_index", "probability", "top_k"}
    # what `register` re-scores a champion with: the same numbers, every class
    probabilities = local.unwrap_python_model().probabilities(policy(files))
    assert np.allclose(probabilities, [[{c["class_index"]: c["probability"] for c in p["top_k"]}[i] for i in range(10)]
                                       for p in body["predictions"]], atol=1e-5)

    status, body = ask(url, {"inputs": {"image": [b64(data) for _, data in files]}, "params": {"top_k": 10}})
    assert status == 200 and same_predictions(body["predictions"], expected)

    status, body = ask(url, {"dataframe_records": [{"image": b64(files[0][1])}]})  # default top_k
    assert status == 200 and len(body["predictions"][0]["top_k"]) == 5
    assert body["predictions"][0]["label"] == expected[0]["label"]


def test_raw_pixels_as_integers_and_floats_equal_in_process_predictions(cifar):
    url, local, files, _ = cifar
    pixels = policy(files)
    expected = local_answer(local, pixels)
    for sent in (pixels.tolist(), (pixels / 1.0).tolist()):
        status, body = ask(url, {"inputs": sent, "params": {"top_k": 10}})
        assert status == 200, body
        assert same_predictions(body["predictions"], expected)


def test_any_size_and_format_is_resized_as_prepare_does(cifar):
    url, local, files, _ = cifar
    encoded = []
    for (_, data), (fmt, size) in zip(files, [("PNG", (97, 61)), ("WEBP", (20, 50)), ("BMP", (32, 32))]):
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).resize(size).save(buffer, format=fmt)
        encoded.append(("x", buffer.getvalue()))
    status, body = ask(url, {"dataframe_records": [{"image": b64(d)} for _, d in encoded], "params": {"top_k": 10}})
    assert status == 200, body
    assert same_predictions(body["predictions"], local_answer(local, policy(encoded)))


def bad_requests(files) -> dict[str, tuple[bytes, str]]:
    pixels = policy(files[:1])
    jpeg = b64(files[0][1])
    return {
        "malformed JSON": (b'{"inputs": [[[', "valid JSON"),
        "no known key": (b'{"images": []}', "exactly one of the input fields"),
        "three dimensions": (json.dumps({"inputs": pixels[0].tolist()}).encode(), "must have 4 dimensions"),
        "one channel": (json.dumps({"inputs": pixels[..., :1].tolist()}).encode(), "this model takes 3"),
        "wrong size": (json.dumps({"inputs": pixels[:, :16, :16].tolist()}).encode(), "this model takes 32x32"),
        "ragged pixels": (b'{"inputs": [[[1, 2], [3]]]}', "inhomogeneous"),
        "not an image": (json.dumps({"dataframe_records": [{"image": b64(b"GIF89a, or not")}]}).encode(),
                         "image 0: not an image Pillow can read"),
        "text for an image": (json.dumps({"inputs": {"image": [jpeg, b64(b"plain text")]}}).encode(),
                              "image 1: not an image Pillow can read"),
        "not base64": (json.dumps({"dataframe_records": [{"image": "not base64!"}]}).encode(), "not valid base64"),
        "empty batch": (b'{"inputs": []}', "the batch is empty"),
        "empty image list": (b'{"inputs": {"image": []}}', "the batch is empty"),
        "empty records": (b'{"dataframe_records": []}', "the batch is empty: send at least one image"),
        "empty split": (b'{"dataframe_split": {"columns": ["image"], "data": []}}', "the batch is empty"),
        "empty instances": (b'{"instances": []}', "the batch is empty"),
        "10000x10000 PNG": (json.dumps({"dataframe_records": [{"image": b64(huge_png(10000, 10000))}]}).encode(),
                            "image 0: 10000x10000 is over the limit of 50000000 pixels (too many pixels)"),
        "too many images": (json.dumps({"dataframe_records": [{"image": jpeg}] * (MAX_BATCH + 1)}).encode(),
                            f"holds {MAX_BATCH + 1} images, over the limit of {MAX_BATCH}"),
        "too many bytes": (json.dumps({"inputs": {"image": [b64(np.random.default_rng(0).bytes(1_000_001))]}}).encode(),
                           "carries 1.0 MB of encoded images, over the limit of 1 MB per request"),
        "bad top_k": (json.dumps({"dataframe_records": [{"image": jpeg}], "params": {"top_k": 11}}).encode(),
                      "params.top_k must be a whole number from 1 to 10"),
        "top_k not a number": (json.dumps({"dataframe_records": [{"image": jpeg}], "params": {"top_k": "all"}}).encode(),
                               "params.top_k must be a whole number from 1 to 10 (the model's number of classes), "
                               "got 'all'"),
    }


def test_every_bad_request_gets_a_4xx_naming_it_and_the_next_good_one_succeeds(cifar):
    url, local, files, _ = cifar
    good = json.dumps({"dataframe_records": [{"image": b64(files[5][1])}], "params": {"top_k": 10}}).encode()
    expected = local_answer(local, policy(files[5:6]))
    failures = []
    for name, (body, message) in bad_requests(files).items():
        status, answer = post(url, body)
        if not (400 <= status < 500 and message in answer.get("message", "")):
            failures.append(f"{name}: HTTP {status}, {str(answer)[:300]}")
        status, answer = post(url, good)
        if status != 200 or not same_predictions(answer["predictions"], expected):
            failures.append(f"the good request after {name!r}: HTTP {status}, {str(answer)[:300]}")
    status, _ = post(url, good, content_type="text/plain")
    assert status == 415
    assert not failures, "\n".join(failures)


def test_params_are_judged_in_our_words_and_unknown_ones_refused(cifar):
    """MLflow alone answers a string or a fraction with its own type error, and drops an unknown key."""
    url, local, files, _ = cifar
    image = [{"image": b64(files[3][1])}]
    expected = local_answer(local, policy(files[3:4]), top_k=2)
    refusals = {
        "params.top_k must be a whole number from 1 to 10 (the model's number of classes), got 'abc'": {"top_k": "abc"},
        "params.top_k must be a whole number from 1 to 10 (the model's number of classes), got 2.5": {"top_k": 2.5},
        "params.top_k must be a whole number from 1 to 10 (the model's number of classes), got True": {"top_k": True},
        "unknown param 'topk': this model accepts top_k": {"topk": 3},
        "unknown param 'threshold': this model accepts top_k": {"top_k": 2, "threshold": 0.5},
        'params must be a JSON object such as {"top_k": 3}, got list': [2],
    }
    for message, params in refusals.items():
        status, body = ask(url, {"dataframe_records": image, "params": params})
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", (params, body)
        assert body["message"].endswith(f"\nError: {message}"), (params, body["message"])
    status, body = ask(url, {"dataframe_records": image, "params": {"top_k": 2}})
    assert status == 200 and same_predictions(body["predictions"], expected)
    status, body = ask(url, {"dataframe_records": image, "params": None})
    assert status == 200 and len(body["predictions"][0]["top_k"]) == 5


def test_the_server_log_has_our_lines_and_none_of_mlflows_noise(cifar):
    *_, log = cifar
    # pread: the server writes at the file offset it shares with this process, which must not move
    text = os.pread(log.fileno(), os.fstat(log.fileno()).st_size, 0).decode(errors="replace")
    assert "serve: models:/tiny-cifar@champion = models:/tiny-cifar/1" in text
    assert "Uvicorn running on" in text
    assert mlflow_noise(text) == []


@pytest.fixture
def served_digits(reproduced_repo):
    """The pipeline's own champion (digits), served the way the README says: `resnet-mlops serve`."""
    uri = f"sqlite:///{reproduced_repo.resolve()}/mlflow.db"
    with serving_process([], reproduced_repo, {"MLFLOW_TRACKING_URI": uri}, free_port()) as base:
        yield base + "/invocations", uri, reproduced_repo


def test_pipeline_champion_serves_digits_arrays_like_in_process(served_digits):
    url, uri, repo = served_digits
    images_ = np.load(repo / "data/prepared/test_images.npy")[:24]
    status, body = ask(url, {"inputs": images_.tolist(), "params": {"top_k": 10}})
    assert status == 200, body

    with tracking_store(uri):
        champion = mlflow.pyfunc.load_model("models:/tiny-digits@champion")
    local = frame_records(champion.predict(images_, params={"top_k": 10}))
    assert same_predictions(body["predictions"], local)
    status, _ = post(url, b"{not json")
    assert status == 400
    status, body = ask(url, {"inputs": images_[:1].tolist()})
    assert status == 200 and body["predictions"][0]["label"] == local[0]["label"]


def test_serve_refuses_an_unknown_model_and_a_busy_port_in_one_line(tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = run(["resnet-mlops", "serve", "--model", "models:/nothing@champion", "--port", str(free_port())],
               tmp_path, check=False, env=env)
    assert done.returncode == 2  # (MLflow logs its creating the empty store before that one line)
    assert done.stderr.strip().splitlines()[-1].startswith(
        "resnet-mlops serve: error: models:/nothing@champion: not in the model registry")
    assert "Traceback" not in done.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run(["resnet-mlops", "serve", "--model", "models:/nothing@champion", "--port", str(port)],
                   tmp_path, check=False, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"resnet-mlops serve: error: cannot listen on 127.0.0.1:{port}")
