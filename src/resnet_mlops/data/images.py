"""The one image policy: how any file becomes the model's uint8 input. Serving reuses it.

1. Decode with Pillow (plain JPEGs go through libjpeg-turbo directly, which gives the
   same pixels faster). Accepted formats: JPEG, PNG, BMP, GIF (first frame), WebP.
   Anything else, an empty file, a truncated file or a file over the pixel limit
   (Pillow's decompression-bomb limit by default) is a `BadImage`, never a crash.
2. Apply the EXIF orientation, so a photo taken sideways is seen upright.
3. Convert to `channels`: 1 -> 8-bit grey ("L", ITU-R 601 luma), 3 -> "RGB".
   Alpha is dropped (the colour under a transparent pixel is kept); palette
   images are expanded first.
4. Resize to `size` x `size` when the image is not already that size:
   stretched (no crop, aspect ratio not kept), bilinear with Pillow's
   antialiasing when shrinking.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = {"JPEG", "PNG", "BMP", "GIF", "WEBP"}
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
_MODES = {1: "L", 3: "RGB"}


class BadImage(Exception):
    """A file that cannot become an image; `kind` names the problem for the validation report."""

    def __init__(self, kind: str, detail: str):
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True)
class Decoded:
    pixels: np.ndarray  # uint8 (size, size, channels)
    width: int          # as stored in the file
    height: int
    format: str


def _check_size(width: int, height: int, min_size: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise BadImage("too_many_pixels", f"{width}x{height} is over the limit of {max_pixels} pixels")
    if min(width, height) < min_size:
        raise BadImage("too_small", f"{width}x{height} is under the minimum side of {min_size} pixels")


def _decode_plain_jpeg(data: bytes, size: int, channels: int, min_size: int,
                       max_pixels: int | None) -> Decoded | None:
    """libjpeg-turbo through simplejpeg, ~9x faster than Pillow on small images and pixel-identical
    to it (the same library, the same settings). Returns None to leave the file to Pillow: not a
    JPEG, EXIF present (orientation), or anything simplejpeg does not handle (CMYK, corrupt...)."""
    if not data.startswith(b"\xff\xd8") or b"Exif\x00\x00" in data[:65536]:
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except (ValueError, OSError):
        return None
    _check_size(width, height, min_size, max_pixels)
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except (ValueError, OSError):
        return None
    if channels == 3 and (width, height) == (size, size):
        return Decoded(pixels=pixels, width=width, height=height, format="JPEG")
    return Decoded(pixels=to_pixels(Image.fromarray(pixels), size, channels), width=width, height=height,
                   format="JPEG")


def decode(data: bytes, size: int, channels: int, min_size: int = 1,
           max_pixels: int | None = Image.MAX_IMAGE_PIXELS) -> Decoded:
    """Apply the policy to one file's bytes; raise BadImage when it cannot."""
    if not data:
        raise BadImage("empty_file", "the file has 0 bytes")
    fast = _decode_plain_jpeg(data, size, channels, min_size, max_pixels)
    if fast is not None:
        return fast
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise BadImage("unsupported_format", f"{image.format} is not one of {sorted(FORMATS)}")
            width, height = image.size
            _check_size(width, height, min_size, max_pixels)
            image.load()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage("too_many_pixels", str(exc)) from None
    except UnidentifiedImageError:
        raise BadImage("undecodable", "not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's ways of saying "truncated / corrupt"
        raise BadImage("undecodable", f"corrupt or truncated ({exc})") from None
    return Decoded(pixels=to_pixels(image, size, channels), width=width, height=height, format=image.format)


def to_pixels(image: Image.Image, size: int, channels: int) -> np.ndarray:
    """Steps 2-4 of the policy on an opened image."""
    if "exif" in image.info:
        image = ImageOps.exif_transpose(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode != _MODES[channels]:
        image = image.convert(_MODES[channels])
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., np.newaxis] if channels == 1 else pixels
