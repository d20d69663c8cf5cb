"""Every request form the served model accepts, parsed as MLflow's scoring server parses it, and every refusal.

No model and no server here (see test_serving.py for those): the JSON bodies
go through the scoring server's own parser, then `serving_inputs.to_pixels`.
"""

from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
import pytest
from PIL import Image
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from resnet_mlops.dataset import images
from resnet_mlops.serving.inputs import Limits, check_params, to_pixels, top_k
from support.image_files import huge_png, image_bytes

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


def claiming(fmt: str, width: int, height: int) -> bytes:
    """A small real file of `fmt` whose header is rewritten to state width x height."""
    data = bytearray(image_bytes(fmt, (20, 16), seed=7))
    if fmt == "JPEG":  # the frame header: FFC0, length, precision, height, width
        at = data.index(b"\xff\xc0") + 5
        data[at:at + 4] = struct.pack(">HH", height, width)
    elif fmt == "GIF":  # the logical screen, and the first image, which Pillow grows the canvas to
        data[6:10] = struct.pack("<HH", width, height)
        at = data.index(b"\x2c", 13)
        data[at + 5:at + 9] = struct.pack("<HH", width, height)
    elif fmt == "BMP":
        data[18:26] = struct.pack("<ii", width, height)
    elif fmt == "WEBP":  # lossy: the VP8 frame header's 14-bit sizes
        assert data[12:16] == b"VP8 "
        data[26:30] = struct.pack("<HH", width, height)
    return bytes(data)


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
    "empty records": ({"dataframe_records": []}, "the batch is empty: send at least one image"),
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
    "too many bytes": ({"inputs": {"image": [b64(bytes(1_200_000))]}}, "carries 1.2 MB of encoded images, over the limit of 1 MB"),
    "too many pixels": ({"inputs": {"image": [b64(flat_png(1100, 1000))]}}, "1100x1000 is over the limit of 1000000 pixels"),
}


@pytest.mark.parametrize("case", BAD)
def test_every_bad_request_is_a_400_naming_the_problem(case):
    body, message = BAD[case]
    with pytest.raises(MlflowException) as raised:
        to_pixels(parsed(body), SHAPE, LIMITS)
    assert raised.value.get_http_status_code() == 400
    assert message in raised.value.message


EMPTY = {
    "dataframe_records": {"dataframe_records": []},
    "dataframe_split": {"dataframe_split": {"columns": ["image"], "data": []}},
    "dataframe_split without columns": {"dataframe_split": {"columns": [], "data": []}},
    "inputs": {"inputs": []},
    "inputs of images": {"inputs": {"image": []}},
    "inputs as an empty object": {"inputs": {}},
    "instances": {"instances": []},
    "instances of images": {"instances": {"image": []}},
}


@pytest.mark.parametrize("form", EMPTY)
def test_every_empty_form_is_an_empty_batch(form):
    with pytest.raises(MlflowException) as raised:
        to_pixels(parsed(EMPTY[form]), SHAPE, LIMITS)
    assert raised.value.get_http_status_code() == 400
    assert raised.value.message == "the batch is empty: send at least one image"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_an_image_over_the_pixel_limit_is_refused_from_its_header_in_our_words(fmt):
    """Above Pillow's own 89 MP warning and 178 MP error too: the serving limit decides, before decoding."""
    limits = Limits(max_image_pixels=50_000_000)
    cases = [(huge_png(10000, 10000), "10000x10000"), (huge_png(20000, 10000), "20000x10000")] if fmt == "PNG" \
        else [(claiming(fmt, 10000, 10000), "10000x10000")]
    for data, size in cases:
        with pytest.raises(MlflowException) as raised:
            to_pixels({"image": [b64(data)]}, SHAPE, limits)
        assert raised.value.message == f"image 0: {size} is over the limit of 50000000 pixels (too many pixels)"
        assert images.header_size(data) == tuple(map(int, size.split("x")))


def test_the_request_limit_counts_megabytes_of_a_million_bytes():
    """--max-request-mb 1 admits 1,000,000 bytes and refuses one byte more, however the bytes are sent."""
    limits = Limits(max_batch=2000, max_request_mb=1)
    per_image = 16 * 16 * 3
    assert len(to_pixels(np.zeros((1_000_000 // per_image, *SHAPE), np.uint8), SHAPE, limits)) == 1302
    with pytest.raises(MlflowException, match=r"carries 1\.0 MB of pixels, over the limit of 1 MB per request"):
        to_pixels(np.zeros((1_000_000 // per_image + 1, *SHAPE), np.uint8), SHAPE, limits)
    for size, refused in [(1_000_000, False), (999_999, False), (1_000_001, True)]:
        data = bytes(size)  # not an image: past the size check it is refused as such
        for sent in (data, b64(data), f"data:image/png;base64,{b64(data)}"):
            with pytest.raises(MlflowException) as raised:
                to_pixels({"image": [sent]}, SHAPE, limits)
            message = raised.value.message
            assert ("carries 1.0 MB of encoded images, over the limit of 1 MB" in message) is refused, (size, message)
            assert refused or "image 0: not an image Pillow can read" in message


def test_in_process_bytes_keep_their_trailing_zero_bytes():
    """A BMP whose last stored row is black ends in NULs, which a numpy bytes array would cut off."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "black").save(buffer, format="BMP")
    data = buffer.getvalue()
    assert data.endswith(b"\x00" * 16)
    for given in ({"image": [data]}, [data], {"image": data}):
        assert np.array_equal(to_pixels(given, SHAPE, LIMITS), np.zeros((1, *SHAPE), np.uint8))


def test_params_hold_top_k_only_and_are_checked_in_our_words():
    assert check_params(None, 10, 5) == {"top_k": 5} and check_params({"top_k": 3}, 10, 5) == {"top_k": 3}
    refusals = {
        "unknown param 'topk': this model accepts top_k": {"topk": 3},
        "unknown params 'k', 'n': this model accepts top_k": {"top_k": 3, "k": 1, "n": 2},
        "params.top_k must be a whole number from 1 to 10 (the model's number of classes), got 'abc'": {"top_k": "abc"},
        "params.top_k must be a whole number from 1 to 10 (the model's number of classes), got 2.5": {"top_k": 2.5},
        'params must be a JSON object such as {"top_k": 3}, got list': [3],
    }
    for message, params in refusals.items():
        with pytest.raises(MlflowException) as raised:
            check_params(params, 10, 5)
        assert raised.value.message == message and raised.value.get_http_status_code() == 400


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
