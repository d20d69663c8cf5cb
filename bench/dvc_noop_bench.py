"""`dvc repro` with nothing changed, against DVC's own start-up, side by side.

Run:  .venv/bin/python bench/dvc_noop_bench.py [--repeats 5]

Builds a throw-away git+DVC copy of this project on the default params (digits), runs the
pipeline once, then alternates `dvc repro` (nothing to do) with `dvc version` (the cost of
starting DVC's Python environment at all). Target: the no-op repro under 3 s excluding that
start-up. Prints medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support.scratch import scratch_project


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as tmp:
        repo = scratch_project(Path(tmp) / "repo", repo=True)
        subprocess.run(["dvc", "repro"], cwd=repo, check=True, capture_output=True)
        noop, version = [], []
        for _ in range(args.repeats):
            noop.append(timed(["dvc", "repro"], repo))
            version.append(timed(["dvc", "version"], repo))
    repro_s, start_s = statistics.median(noop), statistics.median(version)
    print(f"median of {args.repeats}: dvc repro (no-op) {repro_s:.2f} s, dvc version {start_s:.2f} s")
    print(f"  no-op repro excluding DVC start-up: {repro_s - start_s:.2f} s; ratio repro / start-up {repro_s / start_s:.2f}x")


if __name__ == "__main__":
    main()
