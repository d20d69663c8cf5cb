"""The one image policy (dataset/images.py), which prepare and serving share: the pixels and sizes it reads."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from resnet_mlops.dataset import images
from support.image_files import image_bytes


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("size, channels", [(20, 3), (16, 3), (16, 1), (40, 1)])
def test_the_fast_jpeg_path_gives_pillows_pixels(mode, size, channels):
    for seed in range(5):
        data = image_bytes("JPEG", (20, 20), mode, seed=seed)
        expected = images.to_pixels(Image.open(io.BytesIO(data)), size, channels)
        assert np.array_equal(images.decode(data, size, channels).pixels, expected)


def test_header_sizes_are_the_sizes_pillow_opens():
    """What the pixel limit is checked on, for every format, mode and odd case the policy accepts."""
    made = [image_bytes(fmt, size, mode, seed=1)
            for fmt, modes in [("JPEG", ["RGB", "L", "CMYK"]), ("PNG", ["RGB", "RGBA", "L", "LA", "P", "1"]),
                               ("GIF", ["P", "L", "RGB"]), ("BMP", ["RGB", "L", "P", "1"]),
                               ("WEBP", ["RGB", "RGBA", "L"])]
            for mode in modes for size in [(1, 1), (20, 16), (97, 61), (300, 7)]]
    for fmt, options in [("WEBP", {"lossless": True}), ("WEBP", {"exif": b"Exif\x00\x00"}),
                         ("JPEG", {"progressive": True}), ("GIF", {"save_all": True})]:
        buffer = io.BytesIO()
        Image.new("RGB", (33, 21), "red").save(buffer, format=fmt, **options)
        made.append(buffer.getvalue())
    bottom_up = bytearray(image_bytes("BMP", (12, 9), seed=2))
    bottom_up[22:26] = struct.pack("<i", -9)  # a top-down BMP states a negative height
    made.append(bytes(bottom_up))
    for data in made:
        assert images.header_size(data) == Image.open(io.BytesIO(data)).size
    for not_sized in (b"not an image", b"\x89PNG\r\n\x1a\n", b"GIF89a, or not", b"\xff\xd8 not really a JPEG",
                      b"BM" + b"text that starts like a bitmap" * 3, b"RIFF\x00\x00\x00\x00WEBPVP8 "):
        assert images.header_size(not_sized) is None, not_sized  # Pillow judges these
