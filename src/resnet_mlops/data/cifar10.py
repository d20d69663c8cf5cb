"""The `cifar10` source: the official python-version batches (Krizhevsky, 2009).

`data.path` may name a local copy: the tarball `cifar-10-python.tar.gz` or its
extracted `cifar-10-batches-py` folder. Without one, the tarball is downloaded
once from `data.url` (the canonical address by default) into the user cache,
checked against `data.md5`, and reused. The source's own test batch stays the
test set; val is drawn from the training batches.
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from resnet_mlops import atomic, project
from resnet_mlops.config import DataSettings
from resnet_mlops.data.examples import Examples, from_arrays
from resnet_mlops.errors import UserError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, md5: str) -> Path:
    """The verified tarball in the cache, downloading it when missing."""
    target = project.user_cache() / Path(url).name
    if target.exists() and md5_of(target) == md5:
        return target
    how = ("download cifar-10-python.tar.gz yourself and set data.path to it "
           "(or to its extracted cifar-10-batches-py folder)")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, atomic.atomic_path(target) as tmp:
            with tmp.open("wb") as handle:
                for block in iter(lambda: response.read(1 << 20), b""):
                    handle.write(block)
            if md5_of(tmp) != md5:
                raise UserError(f"{url}: the download does not have MD5 {md5}; {how}")
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot download CIFAR-10 from {url} ({getattr(exc, 'reason', exc)}); {how}") from None
    return target


def _read_batches(path: Path) -> dict[str, dict]:
    """batch name -> its unpickled dict, from the tarball or the extracted folder."""
    wanted = set(TRAIN_BATCHES) | {TEST_BATCH, "batches.meta"}
    batches = {}
    if path.is_dir():
        for name in wanted:
            file = path / name
            if not file.is_file():
                raise UserError(f"{path}: {name} is missing; expected the extracted cifar-10-batches-py folder")
            batches[name] = pickle.loads(file.read_bytes(), encoding="bytes")
        return batches
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    batches[name] = pickle.loads(archive.extractfile(member).read(), encoding="bytes")
    except (tarfile.TarError, OSError, pickle.UnpicklingError, EOFError) as exc:
        raise UserError(f"{path}: not a readable CIFAR-10 python tarball ({exc})") from None
    missing = wanted - set(batches)
    if missing:
        raise UserError(f"{path}: {', '.join(sorted(missing))} missing; expected cifar-10-python.tar.gz")
    return batches


def load_cifar10(settings: DataSettings) -> Examples:
    path = Path(settings.path) if settings.path else download(settings.url, settings.md5)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder (data.path should name cifar-10-python.tar.gz "
                        f"or its extracted cifar-10-batches-py folder)")
    batches = _read_batches(path)
    class_names = tuple(n.decode() for n in batches["batches.meta"][b"label_names"])
    images, labels, paths, hints = [], [], [], []
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        batch = batches[name]
        pixels = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        images.append(pixels)
        labels += list(batch[b"labels"])
        paths += [f"{name}#{i}" for i in range(len(pixels))]
        hints += ["test" if name == TEST_BATCH else "train"] * len(pixels)
    return from_arrays(np.concatenate(images), labels, class_names, paths, hints,
                       size=settings.image_size, channels=settings.channels)
