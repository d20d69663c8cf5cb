"""Prepare the CIFAR-10 JPEG archive (60,000 images) into the prepared dataset, against bare decode loops.

Run:  .venv/bin/python bench/prepare_bench.py [--archive PATH] [--repeats 3]

Each repeat times, side by side in this one script:
  - bare Pillow: one thread reading the archive with tarfile and decoding every JPEG with Pillow
    (the obvious loop a user would write);
  - bare libjpeg-turbo: the same loop with simplejpeg, the fastest single-thread decode here;
  - prepare: the real `prepare` stage (validation, hash split, shards, manifest, stats), in a
    child process so its peak memory (main process + largest worker) is its own.
Prints medians, images/s and the ratios prepare / bare loop.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

from support.memory import peak_rss_mb, worker_peak_mb
from support.scratch import CIFAR_ARCHIVE, prepare_here, scratch_project, shipped_params


def bare_loop(archive: Path, decode) -> tuple[float, int]:
    start, count = time.perf_counter(), 0
    with tarfile.open(archive) as bundle:
        for member in bundle:
            if member.isfile():
                decode(bundle.extractfile(member).read())
                count += 1
    return time.perf_counter() - start, count


def pillow(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def turbo(data: bytes) -> np.ndarray:
    return simplejpeg.decode_jpeg(data, colorspace="RGB")


def prepare_once(archive: Path) -> dict:
    """Runs in the child: the real stage, timed, with its peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        params = shipped_params()
        params["seed"] = 0
        params["data"].update(source="folder", path=str(archive.resolve()), val_fraction=0.1, test_fraction=0.2)
        project = scratch_project(Path(tmp), params)
        start = time.perf_counter()
        summary = prepare_here(project)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": sum(summary["splits"].values()),
            "main_mb": peak_rss_mb(), "worker_mb": worker_peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", type=Path, default=CIFAR_ARCHIVE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(prepare_once(args.archive)))
        return

    rows = []
    for repeat in range(args.repeats):
        pil_s, count = bare_loop(args.archive, pillow)
        turbo_s, _ = bare_loop(args.archive, turbo)
        child = subprocess.run([sys.executable, __file__, "--child", "--archive", str(args.archive)],
                               capture_output=True, text=True, check=True)
        ours = json.loads(child.stdout.strip().splitlines()[-1])
        assert ours["images"] == count
        rows.append({"pillow": pil_s, "turbo": turbo_s, **ours})
        print(f"repeat {repeat + 1}: bare Pillow {count / pil_s:,.0f} img/s, bare libjpeg-turbo "
              f"{count / turbo_s:,.0f} img/s, prepare {count / ours['seconds']:,.0f} img/s "
              f"(main {ours['main_mb']:.0f} MB + worker {ours['worker_mb']:.0f} MB peak)")
    med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    count = rows[0]["images"]
    print(f"\nmedian of {args.repeats}: {count} images")
    print(f"  bare Pillow loop        {med['pillow']:.2f} s  {count / med['pillow']:>9,.0f} img/s")
    print(f"  bare libjpeg-turbo loop {med['turbo']:.2f} s  {count / med['turbo']:>9,.0f} img/s")
    print(f"  prepare                 {med['seconds']:.2f} s  {count / med['seconds']:>9,.0f} img/s  "
          f"peak {med['main_mb'] + med['worker_mb']:.0f} MB (main {med['main_mb']:.0f} + largest worker "
          f"{med['worker_mb']:.0f})")
    print(f"  ratio prepare / bare Pillow {med['pillow'] / med['seconds']:.2f}x, "
          f"prepare / bare libjpeg-turbo {med['turbo'] / med['seconds']:.2f}x")


if __name__ == "__main__":
    main()
