"""Prepare in bounded memory: the streamed, incremental and Dask paths give the in-memory path's bytes.

A small folder of real image files goes through every path; the outputs are compared byte for byte.
The decode cache's reuse is read from what prepare prints (files decoded and read), the memory
bound from the peak RSS of a prepare subprocess on data several times larger than the bound.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from resnet_mlops.config import load_params
from resnet_mlops.data import folder as folder_source
from resnet_mlops.data import manifest
from resnet_mlops.data.prepare import prepare
from resnet_mlops.dataset import tfrecords
from resnet_mlops.dataset.prepared import read_split
from resnet_mlops.errors import UserError
from support.image_files import image_bytes
from support.project_repo import write_params

CLASSES = ("cat", "dog", "owl")


def image_folder(root: Path, per_class: int = 40, first_seed: int = 0) -> Path:
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i:03d}.jpg").write_bytes(image_bytes("JPEG", (24, 20), seed=first_seed + 1000 * c + i))
    return root


def data_settings(tmp_path, tiny_params, path, **data):
    tiny_params["data"] = {"source": "folder", "path": str(path), "image_size": 16, "channels": 3,
                           "val_fraction": 0.2, "test_fraction": 0.2, "workers": 2, "stream": True, **data}
    return load_params(write_params(tmp_path, tiny_params)).data


def run(settings, out: Path, cache: Path, capsys) -> tuple[dict, dict]:
    """Prepare into `out` with the decode cache `cache`; (files decoded, files read) as it printed them."""
    capsys.readouterr()
    prepare(settings, 3, out / "prepared", out / "report.json", cache)
    printed = capsys.readouterr().out
    decoded, total, read = map(int, re.search(r": (\d+) of (\d+) image files decoded, (\d+) read", printed).groups())
    return {"decoded": decoded, "files": total, "read": read}


def contents(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture
def small_shards(monkeypatch):
    """Shards of 20 images, decode tasks of 16 files, manifest row groups of 32 rows: several of each
    on a small folder."""
    monkeypatch.setattr(tfrecords, "SHARD_EXAMPLES", 20)
    monkeypatch.setattr(manifest, "MANIFEST_ROWS", 32)
    monkeypatch.setattr(folder_source, "CHUNK_BYTES", 16 * 16 * 16 * 3)


@pytest.fixture(scope="module")
def dask_scheduler():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                                  processes=True) as cluster:
        yield cluster.scheduler_address


def test_streamed_dask_and_in_memory_paths_write_the_same_dataset(tmp_path, tiny_params, capsys, small_shards,
                                                                 dask_scheduler):
    source = image_folder(tmp_path / "images")
    streamed = run(data_settings(tmp_path, tiny_params, source), tmp_path / "streamed", tmp_path / "cache1", capsys)
    assert streamed == {"decoded": 120, "files": 120, "read": 120}
    on_dask = run(data_settings(tmp_path, tiny_params, source, dask_scheduler=dask_scheduler),
                  tmp_path / "dask", tmp_path / "cache2", capsys)
    assert on_dask == streamed
    assert contents(tmp_path / "dask") == contents(tmp_path / "streamed")
    shards = sorted(p.name for p in (tmp_path / "streamed" / "prepared").glob("*.tfrecord"))
    assert len(shards) >= 5, shards
    manifest = pq.ParquetFile(tmp_path / "streamed" / "prepared" / "manifest.parquet")
    assert (manifest.metadata.num_row_groups, manifest.metadata.num_rows) == (4, 120)
    assert pd.read_parquet(tmp_path / "streamed" / "prepared" / "manifest.parquet")["sha256"].str.len().eq(64).all()

    run(data_settings(tmp_path, tiny_params, source, stream=False), tmp_path / "arrays", tmp_path / "cache3", capsys)
    arrays, streamed_out = tmp_path / "arrays" / "prepared", tmp_path / "streamed" / "prepared"
    for name in ("manifest.parquet", "stats.json"):
        assert (arrays / name).read_bytes() == (streamed_out / name).read_bytes(), name
    summaries = [json.loads((folder / "summary.json").read_text()) for folder in (arrays, streamed_out)]
    for summary in summaries:
        summary.pop("format")
        for split in summary["splits"].values():
            split.pop("files")
    assert summaries[0] == summaries[1]
    for split in ("train", "val", "test"):
        in_memory, read_back = read_split(arrays, split), read_split(streamed_out, split)
        assert np.array_equal(in_memory.images, read_back.images) and np.array_equal(in_memory.labels, read_back.labels)
        assert read_back.sha256() == summaries[1]["splits"][split]["sha256"]


def test_re_prepare_decodes_only_what_changed_and_equals_a_fresh_prepare(tmp_path, tiny_params, capsys, small_shards):
    source = image_folder(tmp_path / "images")
    settings = data_settings(tmp_path, tiny_params, source)
    run(settings, tmp_path / "first", tmp_path / "cache", capsys)
    assert run(settings, tmp_path / "again", tmp_path / "cache", capsys) == {"decoded": 0, "files": 120, "read": 0}
    assert contents(tmp_path / "again") == contents(tmp_path / "first")

    for i in range(5):  # added
        (source / "dog" / f"new-{i}.jpg").write_bytes(image_bytes("JPEG", (24, 20), seed=50_000 + i))
    for i in range(3):  # removed
        (source / "cat" / f"{i:03d}.jpg").unlink()
    for i in range(2):  # changed in place
        (source / "owl" / f"{i:03d}.jpg").write_bytes(image_bytes("JPEG", (24, 20), seed=60_000 + i))
    incremental = run(settings, tmp_path / "incremental", tmp_path / "cache", capsys)
    assert incremental == {"decoded": 7, "files": 122, "read": 7}
    fresh = run(settings, tmp_path / "fresh", tmp_path / "empty-cache", capsys)
    assert fresh == {"decoded": 122, "files": 122, "read": 122}
    assert contents(tmp_path / "incremental") == contents(tmp_path / "fresh")

    # The cache holds what the current folder needs: a pack whose every file is gone is deleted.
    (other := tmp_path / "other").mkdir()
    image_folder(other, per_class=10, first_seed=70_000)
    run(data_settings(tmp_path, tiny_params, other), tmp_path / "other-out", tmp_path / "cache", capsys)
    indexed = sum(len(np.load(f)) for f in (tmp_path / "cache").glob("*/*.index.npy"))
    assert indexed == 30


def test_bad_files_get_the_same_verdict_from_the_cache_and_on_dask(tmp_path, tiny_params, capsys, dask_scheduler):
    source = image_folder(tmp_path / "images", per_class=12)
    jpeg = image_bytes("JPEG", (40, 40), seed=99)
    (source / "cat" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (source / "cat" / "zero.jpg").write_bytes(b"")
    (source / "dog" / "text.png").write_text("not a picture\n")
    (source / "dog" / "tiny.png").write_bytes(image_bytes("PNG", (4, 4), seed=98))
    expected = {"cat/truncated.jpg": "undecodable", "cat/zero.jpg": "empty_file", "dog/text.png": "undecodable",
                "dog/tiny.png": "too_small"}
    reports = []
    for out, cache, extra in (("cold", "cache", {}), ("warm", "cache", {}),
                              ("dask", "dask-cache", {"dask_scheduler": dask_scheduler})):
        counts = run(data_settings(tmp_path, tiny_params, source, **extra), tmp_path / out, tmp_path / cache, capsys)
        assert counts["decoded"] == (0 if out == "warm" else 40)
        report = json.loads((tmp_path / out / "report.json").read_text())
        assert {p["path"]: p["kind"] for p in report["problems"]} == expected
        reports.append(report)
    assert reports[0] == reports[1] == reports[2]
    for path, cache in ((tmp_path / "fail-warm", "cache"), (tmp_path / "fail-cold", "fresh-cache")):
        with pytest.raises(UserError, match=r"cat/truncated\.jpg: undecodable .*4 problem\(s\)"):
            run(data_settings(tmp_path, tiny_params, source, on_error="fail"), path, tmp_path / cache, capsys)
        assert not (path / "prepared").exists()


def test_an_unreachable_dask_scheduler_is_one_clear_error(tmp_path, tiny_params, capsys):
    source = image_folder(tmp_path / "images", per_class=3)
    settings = data_settings(tmp_path, tiny_params, source, dask_scheduler="tcp://127.0.0.1:9")
    with pytest.raises(UserError, match=r"data\.dask_scheduler: cannot reach a Dask scheduler at tcp://127\.0\.0\.1:9"):
        run(settings, tmp_path / "out", tmp_path / "cache", capsys)


# The peak is VmHWM, this process's own: ru_maxrss would carry over pytest's peak through exec.
PREPARE_AND_MEASURE = """
import json, sys
from resnet_mlops.config import load_params
from resnet_mlops.data.prepare import prepare
from resnet_mlops.data import folder
from resnet_mlops.dataset import prepared
folder.CHUNK_BYTES = prepared.BLOCK_BYTES = 1 << 20  # the small folder fills the tasks in flight too
settings = load_params(sys.argv[1]).data
prepare(settings, 3, sys.argv[2] + "/prepared", sys.argv[2] + "/report.json", sys.argv[2] + "/cache")
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": peak_kb / 1024}))
"""


def peak_mb(tmp_path, tiny_params, source, name) -> float:
    (tmp_path / name).mkdir()
    settings_file = write_params(tmp_path / name, {**tiny_params, "data": {
        "source": "folder", "path": str(source), "image_size": 96, "channels": 3, "val_fraction": 0.1,
        "test_fraction": 0.1, "workers": 1, "stream": True}})
    done = subprocess.run([sys.executable, "-c", PREPARE_AND_MEASURE, str(settings_file), str(tmp_path / name)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def test_memory_is_bounded_by_the_blocks_not_the_dataset(tmp_path, tiny_params):
    """8x the images, 8x the decoded pixels (12 MB -> 95 MB at 96x96): the peak grows by a few MB."""
    small = image_folder(tmp_path / "small", per_class=150)
    large = image_folder(tmp_path / "large", per_class=1200)
    pixels_mb = 3 * 1200 * 96 * 96 * 3 / 2**20
    small_peak, large_peak = peak_mb(tmp_path, tiny_params, small, "s"), peak_mb(tmp_path, tiny_params, large, "l")
    assert pixels_mb > 90
    assert large_peak - small_peak < 0.15 * pixels_mb, (small_peak, large_peak)


# The manifest's own peak in a child: rows of plausible paths and random hashes, N row groups of them.
WRITE_MANIFEST_AND_MEASURE = """
import sys
from pathlib import Path
import numpy as np
from resnet_mlops.data import manifest
from resnet_mlops.data.examples import NO_HINT, ArrayPixels, Examples, PathsBuilder
rows = int(sys.argv[1]) * manifest.MANIFEST_ROWS
paths = PathsBuilder()
paths.extend(f"train/class-{i % 10}/image-{i:07d}-variant.jpg" for i in range(rows))
examples = Examples(ArrayPixels(np.zeros((rows, 1, 1, 1), np.uint8)), np.arange(rows) % 10,
                    tuple(f"class-{c}" for c in range(10)), paths.build(),
                    np.frombuffer(np.random.default_rng(0).bytes(32 * rows), "S32"),
                    np.full((rows, 2), 32, np.int32), np.full(rows, NO_HINT, np.int8))
split_of = (np.arange(rows) % 3).astype(np.int8)  # the split codes: train, val, test in turn
status = lambda key: next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))
open("/proc/self/clear_refs", "w").write("5")  # VmHWM starts again from VmRSS
before = status("VmRSS:")
with manifest.ManifestColumns(Path(sys.argv[2]).parent, examples) as columns:
    columns.write(Path(sys.argv[2]), examples.labels, examples.class_names, split_of)
print((status("VmHWM:") - before) / 1024)
"""


def test_the_manifest_holds_one_row_group_at_a_time(tmp_path):
    """Arrow's allocator kept what each row group freed: 8 groups took 19 MB more than 1 did."""
    grown = {}
    for groups in (1, 8):
        args = [sys.executable, "-c", WRITE_MANIFEST_AND_MEASURE, str(groups), str(tmp_path / f"{groups}.parquet")]
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        grown[groups] = float(done.stdout.strip().splitlines()[-1])
    assert pq.ParquetFile(tmp_path / "8.parquet").metadata.num_row_groups == 8
    assert grown[8] - grown[1] < 10, grown


def test_a_killed_prepare_leaves_no_output_and_the_next_run_reuses_its_work(tmp_path, tiny_params, capsys):
    source = image_folder(tmp_path / "images", per_class=700)
    settings_file = write_params(tmp_path, {**tiny_params, "data": {
        "source": "folder", "path": str(source), "image_size": 64, "channels": 3, "val_fraction": 0.2,
        "test_fraction": 0.2, "workers": 1, "stream": True}})
    script = ("import sys; from resnet_mlops.config import load_params; from resnet_mlops.data.prepare import prepare; "
              "prepare(load_params(sys.argv[1]).data, 3, sys.argv[2] + '/prepared', sys.argv[2] + '/report.json', "
              "sys.argv[2] + '/cache')")
    child = subprocess.Popen([sys.executable, "-c", script, str(settings_file), str(tmp_path)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cache").glob("*/*.index.npy")) and time.monotonic() < deadline:
        assert child.poll() is None, "prepare finished before it could be killed"
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "report.json").exists()
    done_before = sum(len(np.load(f)) for f in (tmp_path / "cache").glob("*/*.index.npy"))
    assert 0 < done_before < 2100

    counts = run(load_params(settings_file).data, tmp_path, tmp_path / "cache", capsys)
    assert counts["decoded"] == 2100 - done_before and counts["files"] == 2100
    manifest = pd.read_parquet(tmp_path / "prepared" / "manifest.parquet")
    assert len(manifest) == 2100
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
