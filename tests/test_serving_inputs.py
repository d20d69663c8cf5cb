"""Every request form the served model accepts, parsed as MLflow's scoring server parses it, and every refusal.

No model and no server here (see test_serving.py for those): the JSON bodies
go through the scoring server's own parser, then `serving_inputs.to_pixels`.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from resnet_mlops.data import images
from resnet_mlops.serving_inputs import Limits, to_pixels, top_k
from test_folder_source import image_bytes

SHAPE = (16, 16, 3)
LIMITS = Limits(max_batch=8, max_request_mb=1, max_image_pixels=1_000_000)


def parsed(body: dict):
    """What the scoring server hands the model for this JSON body."""
    data, _ = scoring_server._split_data_and_params(json.dumps(body))
    return scoring_server.infer_and_parse_data(data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def flat_png(width: int, height: int) -> bytes:
    """A large image in a few bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def files() -> list[bytes]:
    """Every format, sizes other than the model's, grey and alpha modes."""
    return [image_bytes("JPEG", (16, 16), seed=1), image_bytes("PNG", (40, 23), "RGBA", seed=2),
            image_bytes("WEBP", (9, 30), seed=3), image_bytes("GIF", (16, 16), "P", seed=4),
            image_bytes("BMP", (50, 50), "L", seed=5)]


def policy(data: list[bytes], shape=SHAPE) -> np.ndarray:
    """The prepare stage's pixels for these files."""
    return np.stack([images.decode(d, shape[0], shape[2]).pixels for d in data])


@pytest.mark.parametrize("form", ["dataframe_records", "dataframe_split", "inputs", "instances", "plain_list"])
def test_encoded_images_in_every_json_form_get_the_prepare_stage_pixels(form):
    encoded = [b64(d) for d in files()]
    body = {"dataframe_records": [{"image": e} for e in encoded],
            "dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]},
            "inputs": {"inputs": {"image": encoded}},
            "instances": {"instances": [{"image": e} for e in encoded]},
            "plain_list": {"inputs": encoded}}[form]
    body = body if form in ("inputs", "instances", "plain_list") else {form: body}
    pixels = to_pixels(parsed(body), SHAPE, LIMITS)
    assert pixels.dtype == np.uint8 and pixels.shape == (5, *SHAPE)
    assert np.array_equal(pixels, policy(files()))


def test_grey_model_and_data_urls_and_raw_bytes_in_process():
    data = files()
    from_urls = to_pixels({"image": [f"data:image/png;base64,{b64(d)}" for d in data]}, (8, 8, 1), LIMITS)
    assert np.array_equal(from_urls, policy(data, (8, 8, 1)))
    assert np.array_equal(to_pixels(np.array(data, dtype=object), (8, 8, 1), LIMITS), from_urls)


def test_raw_pixels_uint8_and_float_pass_through_unchanged():
    pixels = np.random.default_rng(0).integers(0, 256, (3, *SHAPE), dtype=np.uint8)
    as_ints = to_pixels(parsed({"inputs": pixels.tolist()}), SHAPE, LIMITS)
    assert as_ints.dtype == np.uint8 and np.array_equal(as_ints, pixels)
    floats = pixels.astype(np.float64) * 0.99 + 0.25
    as_floats = to_pixels(parsed({"inputs": floats.tolist()}), SHAPE, LIMITS)
    assert as_floats.dtype == np.float32 and np.allclose(as_floats, floats)
    assert to_pixels(pixels, SHAPE, LIMITS) is pixels  # in-process uint8: no copy


BAD = {
    "empty raw batch": ({"inputs": []}, "the batch is empty"),
    "empty records": ({"dataframe_records": []}, "a table of images needs an 'image' column"),
    "empty image list": ({"inputs": {"image": []}}, "the batch is empty"),
    "one image without batch axis": ({"inputs": np.zeros(SHAPE, int).tolist()}, "must have 4 dimensions"),
    "wrong size": ({"inputs": np.zeros((1, 8, 8, 3), int).tolist()}, "the images are 8x8 pixels; this model takes 16x16"),
    "wrong channels": ({"inputs": np.zeros((1, 16, 16, 1), int).tolist()}, "the images have 1 channels; this model takes 3"),
    "out of range": ({"inputs": np.full((1, *SHAPE), 300).tolist()}, "must lie from 0 to 255"),
    "negative": ({"inputs": np.full((1, *SHAPE), -1.5).tolist()}, "must lie from 0 to 255"),
    "booleans": ({"inputs": np.zeros((1, *SHAPE), bool).tolist()}, "got bool values"),
    "a scalar": ({"inputs": 3}, "got a single int64 value"),
    "not an image": ({"inputs": {"image": [b64(b"hello, I am text")]}}, "image 0: not an image Pillow can read"),
    "empty file": ({"dataframe_records": [{"image": ""}]}, "image 0: the file has 0 bytes"),
    "not base64": ({"dataframe_records": [{"image": "%%%"}]}, "image 0: not valid base64"),
    "truncated": ({"inputs": {"image": [b64(image_bytes("PNG", (30, 30))[:-40])]}}, "corrupt or truncated"),
    "a number for an image": ({"dataframe_records": [{"image": 5}]}, "image 0: expected a base64-encoded file, got int"),
    "wrong column": ({"dataframe_records": [{"picture": "x"}]}, "needs an 'image' column"),
    "wrong key": ({"inputs": {"picture": ["x"]}}, "expected {'image': [base64-encoded files]}; got keys ['picture']"),
    "too many images": ({"inputs": np.zeros((9, *SHAPE), int).tolist()}, "holds 9 images, over the limit of 8"),
    "too many bytes": ({"inputs": {"image": [b64(bytes(1_200_000))]}}, "carries 1.1 MB of encoded images, over the limit of 1 MB"),
    "too many pixels": ({"inputs": {"image": [b64(flat_png(1100, 1000))]}}, "1100x1000 is over the limit of 1000000 pixels"),
}


@pytest.mark.parametrize("case", BAD)
def test_every_bad_request_is_a_400_naming_the_problem(case):
    body, message = BAD[case]
    with pytest.raises(MlflowException) as raised:
        to_pixels(parsed(body), SHAPE, LIMITS)
    assert raised.value.get_http_status_code() == 400
    assert message in raised.value.message


@pytest.mark.parametrize("value", [0, 11, -1, 2.5, "3", True])
def test_top_k_must_be_a_class_count(value):
    with pytest.raises(MlflowException, match="params.top_k must be a whole number from 1 to 10"):
        top_k({"top_k": value}, 10, 5)
    assert top_k(None, 10, 5) == 5 and top_k({"top_k": 10}, 10, 5) == 10


def test_limits_come_from_the_environment_and_bad_values_are_named():
    limits = Limits.from_environment({"RESNET_MLOPS_MAX_BATCH": "4", "RESNET_MLOPS_MAX_REQUEST_MB": "2"})
    assert limits == Limits(max_batch=4, max_request_mb=2)
    assert Limits.from_environment(limits.environment()) == limits
    with pytest.raises(ValueError, match="RESNET_MLOPS_MAX_BATCH='lots' is not a positive whole number"):
        Limits.from_environment({"RESNET_MLOPS_MAX_BATCH": "lots"})
