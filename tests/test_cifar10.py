"""CIFAR-10 both ways: the JPEG archive in shared/ (a subset) and the official python-version format."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resnet_mlops.config import load_params
from resnet_mlops.data.prepare import prepare
from resnet_mlops.errors import UserError
from support.project_repo import PROJECT, write_params

JPEG_ARCHIVE = PROJECT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def data_settings(tmp_path, tiny_params, **data):
    tiny_params["data"] = {"val_fraction": 0.1, "test_fraction": 0.2, "workers": 2, **data}
    return load_params(write_params(tmp_path, tiny_params)).data


@pytest.fixture(scope="module")
def jpeg_subset(tmp_path_factory) -> Path:
    """The first 12 train and 4 test images of every class, in the archive's own layout."""
    if not JPEG_ARCHIVE.exists():
        pytest.skip(f"{JPEG_ARCHIVE} is absent (the shared CIFAR-10 JPEG copy)")
    subset = tmp_path_factory.mktemp("cifar") / "cifar10-subset.tar.gz"
    keep = {"train": 12, "test": 4}
    with tarfile.open(JPEG_ARCHIVE) as source, tarfile.open(subset, "w:gz") as target:
        for member in source:
            parts = member.name.split("/")
            if member.isdir():
                target.addfile(member)  # folder entries too, as in the real archive
            elif member.isfile() and int(Path(parts[-1]).stem) < keep[parts[1]]:
                target.addfile(member, source.extractfile(member))
    return subset


def test_jpeg_archive_subset(tmp_path, tiny_params, jpeg_subset):
    settings = data_settings(tmp_path, tiny_params, source="folder", path=str(jpeg_subset))
    summary = prepare(settings, 3, tmp_path / "out", tmp_path / "report.json")
    assert summary["class_names"] == CLASSES  # alphabetical: label i is CLASSES[i]
    assert summary["image_shape"] == [32, 32, 3]
    assert summary["splits"]["test"]["per_class"] == {name: 4 for name in CLASSES}
    assert summary["splits"]["train"]["count"] + summary["splits"]["val"]["count"] == 120
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert (manifest["label"] == manifest["path"].str.split("/").str[2]).all()
    assert (manifest["label_index"] == manifest["label"].map(CLASSES.index)).all()
    assert (manifest[manifest["split"] == "test"]["path"].str.startswith("cifar10-jpeg/test/")).all()
    by_split = manifest.groupby("split")["sha256"].apply(set)
    assert not (by_split["test"] & (by_split["train"] | by_split["val"]))  # no leakage


def python_version_tarball(path: Path, per_batch: int = 20) -> Path:
    """A small file in the official cifar-10-python.tar.gz format (same names, same pickles)."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as archive:
        def add(name, obj):
            data = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        add("batches.meta", {b"label_names": [n.encode() for n in CLASSES]})
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            add(name, {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                       b"labels": [i % 10 for i in range(per_batch)]})
    return path


def test_python_version_tarball_and_extracted_folder(tmp_path, tiny_params):
    tarball = python_version_tarball(tmp_path / "cifar-10-python.tar.gz")
    summary = prepare(data_settings(tmp_path, tiny_params, source="cifar10", path=str(tarball)), 3,
                      tmp_path / "from_tar", tmp_path / "r1.json")
    assert summary["class_names"] == CLASSES and summary["image_shape"] == [32, 32, 3]
    assert summary["splits"]["test"]["count"] == 20
    assert summary["splits"]["train"]["count"] + summary["splits"]["val"]["count"] == 100
    with tarfile.open(tarball) as archive:
        archive.extractall(tmp_path / "extracted", filter="data")
    prepare(data_settings(tmp_path, tiny_params, source="cifar10", path=str(tmp_path / "extracted/cifar-10-batches-py")),
            3, tmp_path / "from_folder", tmp_path / "r2.json")
    for name in ("train_images.npy", "test_labels.npy", "summary.json"):
        assert (tmp_path / "from_tar" / name).read_bytes() == (tmp_path / "from_folder" / name).read_bytes()
    grey = prepare(data_settings(tmp_path, tiny_params, source="cifar10", path=str(tarball), channels=1,
                                 image_size=24), 3, tmp_path / "grey", tmp_path / "r3.json")
    assert grey["image_shape"] == [24, 24, 1]


@pytest.fixture
def http_server(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_is_verified_and_cached(tmp_path, tiny_params, http_server, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tarball = python_version_tarball(tmp_path / "cifar-10-python.tar.gz")
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    url = f"{http_server}/cifar-10-python.tar.gz"

    wrong = data_settings(tmp_path, tiny_params, source="cifar10", url=url, md5="0" * 32)
    with pytest.raises(UserError, match=f"{url}: the download does not have MD5 0000"):
        prepare(wrong, 3, tmp_path / "out", tmp_path / "r.json")
    assert not list((tmp_path / "cache").rglob("*.tar.gz"))  # a bad download is not kept

    right = data_settings(tmp_path, tiny_params, source="cifar10", url=url, md5=md5)
    prepare(right, 3, tmp_path / "out", tmp_path / "r.json")
    cached = tmp_path / "cache" / "resnet-mlops" / "cifar-10-python.tar.gz"
    assert cached.read_bytes() == tarball.read_bytes()
    tarball.unlink()  # the server no longer has it: the cache must serve
    prepare(right, 3, tmp_path / "again", tmp_path / "r.json")


def test_offline_without_a_local_copy_says_how_to_provide_one(tmp_path, tiny_params, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    settings = data_settings(tmp_path, tiny_params, source="cifar10", url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(UserError) as caught:
        prepare(settings, 3, tmp_path / "out", tmp_path / "r.json")
    message = str(caught.value)
    assert message.startswith("cannot download CIFAR-10 from http://127.0.0.1:9/cifar-10-python.tar.gz")
    assert "set data.path to it" in message and "\n" not in message
