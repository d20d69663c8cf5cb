"""What a scoring request may carry, turned into the model's uint8 pixel batch.

MLflow's scoring server parses the JSON body before the model sees it; with no
input schema in the signature (on purpose: a tensor schema would refuse float
pixels and encoded images before this module could say what is wrong) it hands
the model:

    {"inputs": [N x H x W x C numbers]}                 -> numpy array (int64 or float64)
    {"dataframe_records": [{"image": "<base64>"}, ...]}  -> DataFrame with an `image` column
    {"dataframe_split": {"columns": ["image"], ...}}     -> the same DataFrame
    {"inputs": {"image": ["<base64>", ...]}},
    {"instances": [{"image": "<base64>"}, ...]}          -> {"image": array of strings}

Raw pixels must already have the model's size and channels (uint8, or floats on
the same 0..255 scale). Encoded files (JPEG, PNG, BMP, GIF, WebP; any size) go
through the prepare stage's image policy (`data/images.py`), so a served image
is exactly the pixels the model was trained on. In-process callers may also pass
`bytes` instead of base64 strings.

The request's `params` may hold only `top_k` (`check_params`); anything else is
refused by name rather than ignored.

Every refusal is an `MlflowException` with INVALID_PARAMETER_VALUE, which the
scoring server answers with HTTP 400 and this message. The size limits guard
the server's memory: the scoring server itself accepts a body of any size.
Sizes are in MB of 10^6 bytes, as `--max-request-mb` says.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from resnet_mlops.dataset import images

IMAGE_COLUMN = "image"
PARAMS = ("top_k",)  # what a request's `params` may hold
_DATA_URL = "data:"
_MB = 1_000_000  # bytes: a megabyte, as RESNET_MLOPS_MAX_REQUEST_MB and --max-request-mb name it


@dataclass(frozen=True)
class Limits:
    """Per-request limits, read from the environment so `resnet-mlops serve` can set them."""

    max_batch: int = 256                   # RESNET_MLOPS_MAX_BATCH: images per request
    max_request_mb: int = 32               # RESNET_MLOPS_MAX_REQUEST_MB: MB (10^6 bytes) of files or pixels
    max_image_pixels: int = 50_000_000     # RESNET_MLOPS_MAX_IMAGE_PIXELS: width x height of one encoded image

    @staticmethod
    def variable(name: str) -> str:
        return f"RESNET_MLOPS_{name.upper()}"

    @classmethod
    def from_environment(cls, environ=os.environ) -> Limits:
        values = {}
        for field in fields(cls):
            raw = environ.get(cls.variable(field.name))
            if raw is None:
                continue
            try:
                values[field.name] = int(raw)
            except ValueError:
                values[field.name] = 0
            if values[field.name] < 1:
                raise ValueError(f"{cls.variable(field.name)}={raw!r} is not a positive whole number")
        return cls(**values)

    def environment(self) -> dict[str, str]:
        return {self.variable(field.name): str(getattr(self, field.name)) for field in fields(self)}


def bad_request(message: str) -> MlflowException:
    return MlflowException.invalid_parameter_value(message)


def check_params(params, num_classes: int, default_top_k: int) -> dict:
    """The request's `params` as the model uses them ({"top_k": k}); refuses a key it does not know
    (MLflow would drop it without a word) and a `top_k` that is not a class count."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise bad_request(f"params must be a JSON object such as {{\"top_k\": 3}}, got {type(params).__name__}")
    unknown = [str(key) for key in params if key not in PARAMS]
    if unknown:
        raise bad_request(f"unknown param{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                          f"this model accepts {', '.join(PARAMS)}")
    return {"top_k": top_k(params, num_classes, default_top_k)}


def top_k(params: dict | None, num_classes: int, default: int) -> int:
    value = (params or {}).get("top_k", default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= num_classes:
        raise bad_request(f"params.top_k must be a whole number from 1 to {num_classes} "
                          f"(the model's number of classes), got {value!r}")
    return int(value)


def decode_image(data: bytes, shape: tuple[int, int, int], max_pixels: int) -> np.ndarray:
    """One encoded file -> the model's pixels, by the prepare policy; raises `images.BadImage`."""
    return images.decode(data, shape[0], shape[2], max_pixels=max_pixels).pixels


def to_pixels(model_input, shape: tuple[int, int, int], limits: Limits) -> np.ndarray:
    """A request's images as a (N, H, W, C) batch: uint8, or float32 when floats were sent."""
    if isinstance(model_input, pd.DataFrame):
        if len(model_input) == 0:  # `dataframe_records: []` has no columns either
            _check_count(0, limits)
        if IMAGE_COLUMN not in model_input.columns:
            raise bad_request(f"a table of images needs an {IMAGE_COLUMN!r} column of base64-encoded files; "
                              f"got columns {[str(c) for c in model_input.columns]}")
        return _decode_all(model_input[IMAGE_COLUMN].tolist(), shape, limits)
    if isinstance(model_input, dict):
        if not model_input:
            _check_count(0, limits)
        if IMAGE_COLUMN not in model_input:
            raise bad_request(f"expected {{{IMAGE_COLUMN!r}: [base64-encoded files]}}; got keys {sorted(model_input)}")
        values = model_input[IMAGE_COLUMN]
        return _decode_all(_files(values) or list(np.ravel(np.asarray(values, dtype=object))), shape, limits)
    if files := _files(model_input):  # a plain list of encoded files
        return _decode_all(files, shape, limits)
    array = np.asarray(model_input)
    if array.dtype.kind in "OSU" and array.ndim == 1:
        return _decode_all(array.tolist(), shape, limits)
    return _raw_pixels(array, shape, limits)


def _files(values) -> list | None:
    """A list of files as given, kept out of numpy: a bytes array would drop each file's trailing NULs."""
    if isinstance(values, (list, tuple)) and values and all(isinstance(v, (str, bytes, bytearray)) for v in values):
        return list(values)
    return None


def _check_count(count: int, limits: Limits) -> None:
    if count == 0:
        raise bad_request("the batch is empty: send at least one image")
    if count > limits.max_batch:
        raise bad_request(f"the request holds {count} images, over the limit of {limits.max_batch} per request "
                          f"(split the batch, or raise {Limits.variable('max_batch')})")


def _check_bytes(count: int, what: str, limits: Limits) -> None:
    if count > limits.max_request_mb * _MB:
        raise bad_request(f"the request carries {count / _MB:.1f} MB of {what}, over the limit of "
                          f"{limits.max_request_mb} MB per request (split the batch, or raise "
                          f"{Limits.variable('max_request_mb')})")


def _encoded_size(value) -> int:
    """The bytes an image value holds: base64 text (or a data URL) is counted as what it decodes to."""
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if not isinstance(value, str):
        return 0  # refused by name when it is decoded
    if value.startswith(_DATA_URL):
        value = value.partition(",")[2]
    return len(value) * 3 // 4 - (value.endswith("=") + value.endswith("=="))


def _raw_pixels(array: np.ndarray, shape: tuple[int, int, int], limits: Limits) -> np.ndarray:
    height, width, channels = shape
    expected = f"N x {height} x {width} x {channels}"
    if array.ndim == 0:
        raise bad_request(f"expected a batch of images ({expected} pixel values, or base64-encoded files), "
                          f"got a single {array.dtype} value")
    if array.size == 0:
        _check_count(0, limits)
    if array.ndim != 4:
        raise bad_request(f"raw pixels must have 4 dimensions, {expected}; got {array.ndim} (shape "
                          f"{'x'.join(map(str, array.shape))})")
    _check_count(len(array), limits)
    if array.shape[1:3] != (height, width):
        raise bad_request(f"the images are {array.shape[1]}x{array.shape[2]} pixels; this model takes "
                          f"{height}x{width} (send encoded files to have them resized)")
    if array.shape[3] != channels:
        raise bad_request(f"the images have {array.shape[3]} channels; this model takes {channels}")
    _check_bytes(array.size, "pixels", limits)
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iuf":
        raise bad_request(f"pixel values must be numbers from 0 to 255, got {array.dtype} values")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise bad_request("pixel values must be numbers from 0 to 255, got NaN or infinity")
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise bad_request(f"pixel values must lie from 0 to 255, got values from {low} to {high}")
    return array.astype(np.uint8 if array.dtype.kind in "iu" else np.float32)


def _as_bytes(index: int, value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise bad_request(f"image {index}: expected a base64-encoded file, got {type(value).__name__}")
    if value.startswith(_DATA_URL):  # data:image/png;base64,<data>
        value = value.partition(",")[2]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"image {index}: not valid base64 ({exc}); encode the file without line breaks, "
                          "e.g. `base64 -w0`") from None


def _decode_all(values: list, shape: tuple[int, int, int], limits: Limits) -> np.ndarray:
    _check_count(len(values), limits)
    _check_bytes(sum(map(_encoded_size, values)), "encoded images", limits)  # before decoding anything
    batch = np.empty((len(values), *shape), np.uint8)
    for index, value in enumerate(values):
        try:
            batch[index] = decode_image(_as_bytes(index, value), shape, limits.max_image_pixels)
        except images.BadImage as problem:
            raise bad_request(f"image {index}: {problem.detail} ({problem.kind.replace('_', ' ')})") from None
    return batch
