"""Image files made on the spot: every format and mode the folder source reads, and huge ones in a few kB."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(fmt: str, size=(20, 20), mode="RGB", seed=None) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def good_tree(root: Path, per_class: int = 6) -> Path:
    """Three classes, every supported format and several modes and sizes."""
    formats = [("JPEG", "RGB", ".jpg"), ("PNG", "RGBA", ".png"), ("BMP", "L", ".bmp"),
               ("GIF", "P", ".gif"), ("WEBP", "RGB", ".webp"), ("PNG", "LA", ".png")]
    seed = 0
    for name in ("cat", "dog", "owl"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            fmt, mode, ext = formats[i % len(formats)]
            size = (20 + 7 * i, 16 + 3 * i)
            (root / name / f"{i:03d}{ext}").write_bytes(image_bytes(fmt, size, mode, seed=seed))
            seed += 1
    return root


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of any size in a few kB, written without Pillow holding its pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row, packer = b"\x00" * (1 + (width + 7) // 8), zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
