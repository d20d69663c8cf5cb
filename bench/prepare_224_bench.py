"""Peak memory of prepare at 224x224 (issue 15): 8x the images against 1x, and README's bound.

Run:  .venv/bin/python bench/prepare_224_bench.py [--repeats 3] [--workdir /tmp/prepare-scale]

The folders are hard links to the first 300, 1,200 and 2,400 train files of each class of the
60k folder that bench/prepare_scale_bench.py makes (3,000, 12,000 and 24,000 images,
`<class>/<file>`). Each is prepared from an empty decode cache at `data.image_size: 224` (150 KB
of pixels per image: 0.45, 1.8 and 3.6 GB decoded), `data.stream: true`, `data.workers: 2`, by the scale bench's child runner.
Prints the peak RSS of each (main process and largest worker), the ratio 24k / 3k, and each
against README's bound ("Memory, in numbers"; `readme_bound_mb`) for 2 workers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from pathlib import Path

from prepare_scale_bench import child, show
from support.scratch import CIFAR_ARCHIVE
from support.synthetic import image_folder

SIZES = (300, 1200, 2400)  # train files per class


def linked_subset(full: Path, folder: Path, per_class: int) -> Path:
    """`folder/<class>/` holding hard links to the first `per_class` train files of each class of `full`."""
    shutil.rmtree(folder, ignore_errors=True)
    for class_folder in sorted((full / "train").iterdir()):
        (folder / class_folder.name).mkdir(parents=True)
        for path in sorted(class_folder.iterdir())[:per_class]:
            os.link(path, folder / class_folder.name / path.name)
    return folder


def readme_bound_mb(folder: Path, workers: int = 2) -> tuple[float, float]:
    """README's bound at 224x224 ("Memory, in numbers") for `folder`: (main process, each worker), MB.

    Main: 120 MB, plus twice the decode tasks in flight (2 x workers + 2 of them, each 16 MiB of
    pixels and its 111 files' bytes: the second time for what glibc keeps of freed buffers), plus
    200 bytes per image. Each worker: 150 MB."""
    sizes = [path.stat().st_size for path in folder.rglob("*.jpg")]
    per_task_mb = 16 + 111 * statistics.mean(sizes) / 2**20
    return 120 + 2 * (2 * workers + 2) * per_task_mb + 200 * len(sizes) / 2**20, 150.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/prepare-scale"))
    args = parser.parse_args()
    if not CIFAR_ARCHIVE.exists():
        print(f"skipped: {CIFAR_ARCHIVE} is absent; this benchmark needs the shared CIFAR-10 JPEG archive")
        return
    work = args.workdir.resolve()
    full = image_folder(CIFAR_ARCHIVE, work / "synth60k", 1)
    folders = {n: linked_subset(full, work / f"at224-{n}", n) for n in SIZES}
    runs = {n: [] for n in SIZES}
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}:", flush=True)
        for n, folder in folders.items():
            cache = work / "cache" / "at224"
            shutil.rmtree(cache, ignore_errors=True)
            run = child(folder, work / "out" / "at224", cache, size=224)
            show(f"{10 * n // 1000}k", run)
            runs[n].append(run)
    shutil.rmtree(work / "cache" / "at224")
    shutil.rmtree(work / "out" / "at224")
    print(f"\nmedians of {args.repeats} repeats, 224x224x3:")
    peaks = {}
    for n in SIZES:
        main_mb = statistics.median(r["main_mb"] for r in runs[n])
        worker_mb = statistics.median(r["worker_mb"] for r in runs[n])
        peaks[n] = main_mb + worker_mb
        bound_main, bound_worker = readme_bound_mb(folders[n])
        within = main_mb <= bound_main and worker_mb <= bound_worker
        print(f"  {10 * n:>6,} images  peak {peaks[n]:.0f} MB (main {main_mb:.0f} + worker {worker_mb:.0f}); "
              f"README's bound: main {bound_main:.0f} MB, worker {bound_worker:.0f} MB: within it {within}")
    print(f"  24k / 3k peak memory  {peaks[SIZES[-1]] / peaks[SIZES[0]]:.2f}x for 8x the images "
          f"({SIZES[-1] * 10 * 150_528 / 2**30:.1f} GB of pixels)")


if __name__ == "__main__":
    main()
