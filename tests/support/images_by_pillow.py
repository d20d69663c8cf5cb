"""The image policy of `resnet_mlops.dataset.images`, computed here with plain Pillow, as its docstring
states it, to check the project's decoder against; and JPEG files carrying an EXIF orientation.

Nothing here uses the project's code: it is the independent side of the comparison.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

ORIENTATION_TAG = 0x0112
# EXIF orientation -> the numpy rotation (np.rot90's k, counter-clockwise) that shows the stored
# pixels upright: 3 is upside down, 6 must turn 90 degrees clockwise, 8 90 degrees counter-clockwise.
UPRIGHT_ROT90 = {1: 0, 3: 2, 6: -1, 8: 1}


def jpeg_with_orientation(pixels: np.ndarray, orientation: int, quality: int = 95) -> bytes:
    """The uint8 RGB `pixels` as a JPEG file whose EXIF says `orientation`."""
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=quality, exif=exif)
    return buffer.getvalue()


def policy_pixels(data: bytes, size: int, channels: int) -> np.ndarray:
    """Steps 1-4 of the documented policy: decode, apply the EXIF orientation, convert to L or RGB,
    stretch to size x size (bilinear). uint8 (size, size, channels)."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., np.newaxis] if channels == 1 else pixels
