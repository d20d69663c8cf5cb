"""The one image policy: how any file becomes the model's uint8 input. Serving reuses it.

1. Decode with Pillow (plain JPEGs go through libjpeg-turbo directly, which gives the
   same pixels faster). Accepted formats: JPEG, PNG, BMP, GIF (first frame), WebP.
   Anything else, an empty file, a truncated file or a file over the pixel limit
   (Pillow's decompression-bomb limit by default) is a `BadImage`, never a crash.
   The size is read from the file's header and checked before anything is decoded,
   so the caller's limit decides, in its own words, for any size: Pillow's own
   guard (a warning over 89 MP, made an error here; an error over 178 MP) speaks
   only for a file whose header this module cannot read, or when no limit is given.
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
import struct
import threading
import warnings
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = {"JPEG", "PNG", "BMP", "GIF", "WEBP"}
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
_MODES = {1: "L", 3: "RGB"}
# Warning filters are process-wide: one decode at a time changes them (the server decodes in threads).
_FILTERS_LOCK = threading.Lock()


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


def _check_size(width: int, height: int, min_size: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise BadImage("too_many_pixels", f"{width}x{height} is over the limit of {max_pixels} pixels")
    if min(width, height) < min_size:
        raise BadImage("too_small", f"{width}x{height} is under the minimum side of {min_size} pixels")


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the file's header states it, read without decoding anything; None when
    the bytes are none of the accepted formats or their header cannot be read (Pillow then decides).
    The size is the one Pillow gives the opened image (a GIF grows to its first frame's extent).
    Read before Pillow opens the file: opening a WebP already allocates its whole canvas."""
    try:
        if data.startswith(b"\xff\xd8"):
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return width, height
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[8:16] == b"\x00\x00\x00\x0dIHDR":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return _gif_size(data)
        if data.startswith(b"BM"):
            return _bmp_size(data)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_size(data)
    except (ValueError, OSError, IndexError, struct.error):
        return None
    return None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    width, height, flags = struct.unpack("<HHB", data[6:11])
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
    while at < len(data):
        if data[at] == 0x21:  # an extension: its label, then sub-blocks up to an empty one
            at += 2
            while at < len(data) and data[at]:
                at += data[at] + 1
            at += 1
        elif data[at] == 0x2C:  # the first image: Pillow grows the canvas to hold it
            left, top, frame_width, frame_height = struct.unpack("<HHHH", data[at + 1:at + 9])
            return max(width, left + frame_width), max(height, top + frame_height)
        else:
            break
    return None  # no image where one must be: not a GIF after all, or a broken one (Pillow says which)


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:  # OS/2 1.x
        return struct.unpack("<HH", data[18:22])
    if header in (40, 52, 56, 64, 108, 124):
        width, height = struct.unpack("<II", data[18:26])
        return width, (2**32 - height if height >> 24 == 0xFF else height)  # negative: stored top-down
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    return None


def _decode_plain_jpeg(data: bytes, size: int, channels: int, width: int, height: int) -> Decoded | None:
    """libjpeg-turbo through simplejpeg, faster than Pillow on small images (bench/RESULTS.md) and
    pixel-identical to it (the same library, the same settings). Returns None to leave the file to Pillow: EXIF
    present (orientation), or anything simplejpeg does not handle (CMYK, corrupt...)."""
    if b"Exif\x00\x00" in data[:65536]:
        return None
    try:
        pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except (ValueError, OSError):
        return None
    if channels == 3 and (width, height) == (size, size):
        return Decoded(pixels=pixels, width=width, height=height)
    return Decoded(pixels=to_pixels(Image.fromarray(pixels), size, channels), width=width, height=height)


def decode(data: bytes, size: int, channels: int, min_size: int = 1,
           max_pixels: int | None = Image.MAX_IMAGE_PIXELS) -> Decoded:
    """Apply the policy to one file's bytes; raise BadImage when it cannot."""
    if not data:
        raise BadImage("empty_file", "the file has 0 bytes")
    stated = header_size(data)
    if stated is not None:
        _check_size(*stated, min_size, max_pixels)  # before any pixel is decoded
        if data.startswith(b"\xff\xd8"):
            fast = _decode_plain_jpeg(data, size, channels, *stated)
            if fast is not None:
                return fast
    # Pillow's decompression-bomb warning becomes an error where the size is not known yet;
    # where it is, the limit above has decided and the warning says nothing more.
    pillow_guard = max_pixels is None or stated is None
    try:
        with _FILTERS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error" if pillow_guard else "ignore", Image.DecompressionBombWarning)
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
    return Decoded(pixels=to_pixels(image, size, channels), width=width, height=height)


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
