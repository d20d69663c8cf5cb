"""The orchestrator: runs the sides one after the other, each in its own Python process.

A fresh process per side: fresh JAX/XLA state, no shared compile cache, no GPU memory held over.
Each has a timeout, inside one overall deadline, so that one hang cannot eat the lease; the
report is rewritten after every side, so a kill still leaves the figures so far. No JAX, no
Keras in this process (a child must find the GPU's memory free).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu.plan import ENTRY, JAX_CACHES, make_plan, plan_stretch, side_limit, side_order
from gpu.report import new_report, print_summary, write_report
from support.scratch import ROOT


def orchestrate(args) -> None:
    started = time.perf_counter()
    deadline = started + args.deadline
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    archive = args.archive.resolve()
    if not archive.exists():
        sys.exit(f"{archive} is missing (copy ../shared/datasets/cifar10-jpeg.tar.gz into .gpudata/)")

    plan = make_plan(args, archive, work)
    report = new_report(plan)
    sides = side_order(args, plan)
    print(f"bench: sides {', '.join(sides)}; work in {work}; deadline {args.deadline:.0f} s; "
          f"epochs {plan['epochs']} of batch {plan['batch_size']}", flush=True)
    for side in sides:
        if _run_side(side, args, work, report, deadline):
            _collect_csv(work, out, side)
            write_report(out, report, started)
    write_report(out, report, started)
    print_summary(report)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    if any(side["status"] != "ok" for side in report["sides"].values()):
        sys.exit(1)


def _run_side(side: str, args, work: Path, report: dict, deadline: float) -> bool:
    """Run `side` in a child process within the deadline (True), or record why it was skipped."""
    left = deadline - time.perf_counter() - 5
    limit = side_limit(side, args.stretch_seconds, left)
    if limit < 20:
        report["sides"][side] = {"status": "skipped", "why": f"only {left:.0f} s of the deadline left"}
        print(f"bench: {side}: skipped, {left:.0f} s left", flush=True)
        return False
    if "prepare" in report["sides"] and report["sides"]["prepare"]["status"] != "ok":
        report["sides"][side] = {"status": "skipped", "why": "no prepared data"}
        return False
    if side == "stretch":
        plan_stretch(work, report["plan"], report["sides"], deadline)
    report["sides"][side] = run_child(side, work, limit)
    if report["device"] is None and report["sides"][side].get("device_kind"):
        report["device"] = report["sides"][side]["device_kind"]
    return True


def _child_env(side: str, work: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("KERAS_BACKEND", "jax")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if side in JAX_CACHES:
        env["JAX_COMPILATION_CACHE_DIR"] = str(work / JAX_CACHES[side])
    return env


def run_child(side: str, work: Path, limit: float) -> dict:
    """`gpu_train_bench.py --side SIDE` in its own process group, killed after `limit` seconds; its result."""
    command = [sys.executable, str(ENTRY), "--side", side, "--workdir", str(work)]
    print(f"\n===== {side} (limit {limit:.0f} s) =====", flush=True)
    result_file = work / f"{side}.json"
    result_file.unlink(missing_ok=True)
    started = time.perf_counter()
    child = subprocess.Popen(command, env=_child_env(side, work), start_new_session=True)
    try:
        code = child.wait(timeout=limit)
        status = "ok" if code == 0 else f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        _kill_group(child)
        code, status = None, f"timeout after {limit:.0f} s"
    seconds = time.perf_counter() - started
    _kill_group(child)  # decode workers or threads it may have left behind
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    result.update(status=status if result or code != 0 else "failed (no result written)",
                  process_seconds=round(seconds, 2))
    print(f"===== {side}: {result['status']} in {seconds:.1f} s =====", flush=True)
    return result


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


def _collect_csv(work: Path, out: Path, side: str) -> None:
    source = work / f"{side}_history.csv"
    if source.exists():
        shutil.copy(source, out / source.name)
