"""A synthetic image folder k times the size of the CIFAR-10 JPEG archive, for the prepare benches.

Copy r (r = 1..k-1 < 11) of each of the archive's JPEGs has its 2x2 top-left corner set to grey
25 r and is re-encoded, so every file has its own content hash; copy 0 is the original file. Files keep the
archive's layout (`train/<class>/`, `test/<class>/`) with the copy number in the name. Writing is
idempotent: a folder already complete (its stamp file beside it) is reused.
"""

from __future__ import annotations

from pathlib import Path

import simplejpeg

from resnet_mlops.dataset import tarscan


def _variant(data: bytes, copy: int) -> bytes:
    if copy == 0:
        return data
    pixels = simplejpeg.decode_jpeg(data, colorspace="RGB").copy()
    pixels[:2, :2] = 25 * copy  # a 2x2 corner of its own grey: JPEG keeps it, so the bytes differ
    return simplejpeg.encode_jpeg(pixels, quality=95, colorspace="RGB")


def image_folder(archive: Path, folder: Path, copies: int, extra: tuple[int, int] | None = None) -> Path:
    """`folder` holding `copies` variants of every JPEG in `archive`.

    `extra=(first, count)`: only the copies `first, first+1, ...` of the first `count` train files
    of each class, written beside an existing folder (the "new images" of an incremental re-prepare).
    """
    stamp = folder.with_name(f"{folder.name}.complete-{copies}-{extra}")
    if stamp.exists():
        return folder
    seen: dict[str, int] = {}
    for member in tarscan.members(archive):
        if member.kind != "file":
            continue
        parts = member.name.split("/")[1:]  # drop the archive's top folder
        split, label, name = parts[0], parts[1], parts[-1]
        stem = Path(name).stem
        if extra is None:
            wanted = range(copies)
        else:
            key = f"{split}/{label}"
            seen[key] = seen.get(key, 0) + 1
            wanted = range(extra[0], extra[0] + 1) if split == "train" and seen[key] <= extra[1] else range(0)
        for copy in wanted:
            target = folder / split / label / f"{stem}-{copy:02d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_variant(member.data, copy))
    stamp.write_text("")
    return folder
