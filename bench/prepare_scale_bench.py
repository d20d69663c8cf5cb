"""Prepare at 10x CIFAR-10, incrementally, and on Dask (issue 15), against the 60,000-image run side by side.

Run:  .venv/bin/python bench/prepare_scale_bench.py [--repeats 3] [--workdir /tmp/prepare-scale]

From the shared CIFAR-10 JPEG archive it writes two synthetic folders (bench/support/synthetic.py;
kept in --workdir between runs): the 60,000 images as files, and 600,000 (ten variants of each,
every one its own content hash). Each repeat then runs the real `prepare` (`data.stream: true`,
TFRecord shards; `data.workers` 2) in a child process of its own, so peak memory (the main process
and its largest worker) is that run's alone:

  60k       the 60,000-image folder, empty decode cache: the reference
  600k      the 600,000-image folder, empty decode cache
  +1%       the 600k folder with 6,000 new images (1%) added, the decode cache of the 600k run
  dask 60k  the 60k folder on a dask.distributed LocalCluster (2 worker processes, 127.0.0.1),
            empty decode cache; its data/prepared must equal the local run's byte for byte

Prints each run and the medians: images/s (600k against 60k, and against the 12,400/s of the
pre-streaming code on the archive, bench/RESULTS.md), peak RSS 600k / 60k, the incremental time
against the 600k from scratch and against its rewrite floor (the time to stat every file and to
hash and write every output byte once: what any re-prepare with byte-identical shards must do, since
1% new images land in every shard), and Dask's throughput against local processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from support.memory import peak_rss_mb, worker_peak_mb
from support.scratch import CIFAR_ARCHIVE, shipped_params
from support.synthetic import image_folder

ADDED_PER_CLASS = 600  # 10 classes: 6,000 new train images, 1% of 600,000
BEFORE_STREAMING = 12_400  # images/s of the pre-streaming prepare on the 60,000-image archive


def prepare_once(folder: Path, out: Path, cache: Path, scheduler: str | None, size: int = 32) -> dict:
    """In the child: the real stage, timed, with its peak memory and what it printed."""
    import contextlib
    import io

    from resnet_mlops.config import load_params
    from resnet_mlops.data.prepare import prepare

    params_file = out / "params.yaml"
    params = shipped_params()
    params["data"] = {**params["data"], "source": "folder", "path": str(folder), "image_size": size, "channels": 3,
                      "val_fraction": 0.1, "test_fraction": 0.2, "stream": True, "workers": 2,
                      "dask_scheduler": scheduler}
    params_file.write_text(json.dumps(params))
    settings = load_params(params_file).data
    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        summary = prepare(settings, 0, out / "prepared", out / "report.json", cache)
    seconds = time.perf_counter() - start
    cache_line = next(line for line in printed.getvalue().splitlines() if line.startswith("decode cache"))
    return {"seconds": seconds, "images": sum(split["count"] for split in summary["splits"].values()),
            "main_mb": peak_rss_mb(), "worker_mb": worker_peak_mb(),
            "cache": cache_line.split(": ", 1)[1]}


def child(folder: Path, out: Path, cache: Path, scheduler: str | None = None, size: int = 32) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = [sys.executable, __file__, "--child", str(folder), str(out), str(cache), scheduler or "", str(size)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"prepare of {folder} failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def rewrite_floor(folder: Path, prepared: Path, scratch: Path) -> float:
    """Seconds of the least any +1% re-prepare with byte-identical outputs must do here: stat every
    file of the folder (to see what changed) and hash and write every byte of data/prepared/ again
    (1% new images spread over the path order land in every shard of 10,000, 1 - 0.99 ** 10000 = 1)."""
    import os

    start = time.perf_counter()
    for top, _, names in os.walk(folder):
        for name in names:
            os.stat(os.path.join(top, name))
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    for path in sorted(prepared.iterdir()):
        data = path.read_bytes()
        hashlib.sha256(data).digest()
        (scratch / path.name).write_bytes(data)
    seconds = time.perf_counter() - start
    shutil.rmtree(scratch)
    return seconds


def show(name: str, run: dict) -> None:
    print(f"  {name:<9} {run['seconds']:7.2f} s {run['images'] / run['seconds']:>9,.0f} img/s  peak main "
          f"{run['main_mb']:.0f} MB + worker {run['worker_mb']:.0f} MB  ({run['cache']})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prepare-scale"))
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, out, cache, scheduler, size = args.child
        print(json.dumps(prepare_once(Path(folder), Path(out), Path(cache), scheduler or None, int(size))))
        return
    if not CIFAR_ARCHIVE.exists():
        print(f"skipped: {CIFAR_ARCHIVE} is absent; this benchmark needs the shared CIFAR-10 JPEG archive")
        return

    work = args.workdir.resolve()
    started = time.perf_counter()
    small = image_folder(CIFAR_ARCHIVE, work / "synth60k", 1)
    large = image_folder(CIFAR_ARCHIVE, work / "synth600k", 10)
    print(f"synthetic folders ready in {time.perf_counter() - started:.0f} s", flush=True)

    from distributed import LocalCluster

    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        for repeat in range(args.repeats):
            print(f"repeat {repeat + 1}:", flush=True)
            row = {}
            for name, folder, scheduler in (("60k", small, None), ("dask 60k", small, cluster.scheduler_address)):
                cache = work / "cache" / name
                shutil.rmtree(cache, ignore_errors=True)
                row[name] = child(folder, work / "out" / name, cache, scheduler)
                show(name, row[name])
            same = tree_digest(work / "out/60k/prepared") == tree_digest(work / "out/dask 60k/prepared")
            row["dask identical"] = same
            print(f"  dask 60k data/prepared identical to the local run's: {same}", flush=True)

            cache = work / "cache" / "600k"
            shutil.rmtree(cache, ignore_errors=True)
            row["600k"] = child(large, work / "out" / "600k", cache)
            show("600k", row["600k"])
            added = work / "synth600k-added"  # the new images, written into the folder for the +1% run only
            image_folder(CIFAR_ARCHIVE, added, 1, extra=(10, ADDED_PER_CLASS))
            moved = [(path, large / path.relative_to(added)) for path in added.rglob("*.jpg")]
            for source, target in moved:
                source.rename(target)
            try:
                row["+1%"] = child(large, work / "out" / "600k", cache)
                row["floor"] = rewrite_floor(large, work / "out/600k/prepared", work / "floor")
            finally:
                for source, target in moved:
                    target.rename(source)
            show("+1%", row["+1%"])
            print(f"  rewrite floor of +1% (stat every file, hash and write every output byte): {row['floor']:.2f} s",
                  flush=True)
            rows.append(row)

    med = lambda name, key: statistics.median(r[name][key] for r in rows)
    rate = lambda name: statistics.median(r[name]["images"] / r[name]["seconds"] for r in rows)
    peak = lambda name: statistics.median(r[name]["main_mb"] + r[name]["worker_mb"] for r in rows)
    print(f"\nmedians of {args.repeats} repeats:")
    for name in ("60k", "600k", "+1%", "dask 60k"):
        print(f"  {name:<9} {med(name, 'seconds'):7.2f} s {rate(name):>9,.0f} img/s  peak {peak(name):.0f} MB "
              f"(main {med(name, 'main_mb'):.0f} + worker {med(name, 'worker_mb'):.0f})")
    print(f"  600k / 60k throughput          {rate('600k') / rate('60k'):.2f}x   (target >= 0.9x)")
    print(f"  600k / pre-streaming 12,400/s  {rate('600k') / BEFORE_STREAMING:.2f}x")
    print(f"  600k / 60k peak memory         {peak('600k') / peak('60k'):.2f}x   (target <= 1.1x)")
    print(f"  +1% re-prepare / 600k scratch  {med('+1%', 'seconds') / med('600k', 'seconds'):.3f}x  (target <= 0.05x)")
    floor = statistics.median(r["floor"] for r in rows)
    print(f"  rewrite floor / 600k scratch   {floor / med('600k', 'seconds'):.3f}x  (+1% / floor "
          f"{med('+1%', 'seconds') / floor:.1f}x): the least byte-identical shards allow")
    print(f"  dask / local throughput (60k)  {rate('dask 60k') / rate('60k'):.2f}x, outputs identical in "
          f"{sum(r['dask identical'] for r in rows)} of {len(rows)} repeats")


if __name__ == "__main__":
    main()
