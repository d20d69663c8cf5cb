"""gpu_bench.json, the ratios of the stage to the bare reference, and the summary table."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path

# The figures for the bare Keras-on-JAX reference on one H200, printed beside ours.
H200_REFERENCE = {"epoch_seconds": 0.42, "images_per_second": 116_000, "compile_seconds": 15}
VERSIONED = ("jax", "jaxlib", "jax-cuda13-plugin", "keras", "numpy", "ml-dtypes", "mlflow-skinny", "mlflow",
             "simplejpeg", "optree", "pillow", "pandas", "pyarrow", "sqlalchemy", "pydantic", "protobuf",
             "typing-extensions", "anyio", "packaging")
SIDE_ORDER = ("prepare", "bare", "stage", "stage_warm", "probe", "stretch")
COLUMNS = [("side", 11, None), ("status", 8, None), ("model", 22, None), ("epochs", 6, 0),
           ("fit wall s", 11, 1), ("epochs s", 9, 1), ("compile s", 10, 1), ("steady s/ep", 12, 3),
           ("steady img/s", 13, 0), ("test acc", 9, 4), ("process s", 10, 1)]
COLUMN_KEYS = ["epochs", "fit_wall_seconds", "epochs_wall_seconds", "compile_seconds", "steady_epoch_seconds",
               "steady_images_per_second", "test_accuracy", "process_seconds"]


def new_report(plan: dict) -> dict:
    return {"bench": "gpu_train_bench", "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "host": {"python": platform.python_version(), "machine": platform.machine(),
                     "cpus": os.cpu_count(), "nvidia_smi": _nvidia_smi()},
            "versions": _versions(), "plan": plan, "device": None, "sides": {}}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _nvidia_smi() -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def ratios(sides: dict) -> dict:
    """The stage against the bare reference, where both sides have the figure."""
    bare, stage = sides.get("bare", {}), sides.get("stage", {})
    found = {}
    if bare.get("steady_images_per_second") and stage.get("steady_images_per_second"):
        found["stage_over_bare_steady_images_per_second"] = round(
            stage["steady_images_per_second"] / bare["steady_images_per_second"], 3)
    if bare.get("fit_wall_seconds") and stage.get("fit_wall_seconds"):
        # bare: just before fit -> last epoch's end; stage: train() called -> last epoch's end
        found["bare_over_stage_fit_wall"] = round(bare["fit_wall_seconds"] / stage["fit_wall_seconds"], 3)
    if bare.get("epochs_wall_seconds") and stage.get("epochs_wall_seconds"):
        # both from epoch 1's begin to the last epoch's end: the set-up before fit left out
        found["bare_over_stage_epochs_wall"] = round(bare["epochs_wall_seconds"] / stage["epochs_wall_seconds"], 3)
    return found


def write_report(out: Path, report: dict, started: float) -> None:
    """(Re)write out/gpu_bench.json, atomically: a kill between sides still leaves the figures so far."""
    report["bench_seconds"] = round(time.perf_counter() - started, 2)
    report["ratios"] = ratios(report["sides"])
    tmp = out / "gpu_bench.json.tmp"
    tmp.write_text(json.dumps(finite(report), indent=2) + "\n")
    tmp.replace(out / "gpu_bench.json")


def finite(value):
    """Strict JSON: NaN and infinities (a diverged loss, say) become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite(item) for item in value]
    return value


def print_summary(report: dict) -> None:
    print(f"\n=== gpu_train_bench: {report['device'] or 'device unknown'}; "
          f"jax {report['versions'].get('jax')}, keras {report['versions'].get('keras')}; "
          f"{report['plan']['epochs']} epochs of batch {report['plan']['batch_size']}"
          f"{' (TINY)' if report['plan']['tiny'] else ''} ===")
    _print_table(report["sides"])
    _print_notes(report)
    print(f"whole bench: {report.get('bench_seconds', 0):.1f} s")


def _print_table(sides: dict) -> None:
    header = "".join(f"{name:<{width}}" if digits is None else f"{name:>{width}}" for name, width, digits in COLUMNS)
    print(header)
    print("-" * len(header))
    for name in SIDE_ORDER:
        side = sides.get(name)
        if not side:
            continue
        if name == "prepare":
            side = {**side, "fit_wall_seconds": side.get("prepare_seconds"),
                    "steady_images_per_second": side.get("images_per_second")}
        cells = [f"{name:<11}", f"{side['status'].split()[0]:<8}", f"{str(side.get('model', '-'))[:21]:<22}"]
        cells += [f"{_f(side.get(key), digits):>{width}}" for key, (_, width, digits) in zip(COLUMN_KEYS, COLUMNS[3:])]
        print("".join(cells))
    print("fit wall: bare from just before fit(), stage from train() called, to the last epoch's end "
          "(prepare: the stage's seconds); epochs: epoch 1's begin to the last epoch's end; compile: epoch 1 "
          "minus the median of epochs 2..N; process: the side's whole process")


def _print_notes(report: dict) -> None:
    sides = report["sides"]
    for name, side in sides.items():
        if side.get("status") != "ok":
            print(f"{name}: {side.get('status')}{': ' + side['why'] if side.get('why') else ''}")
    for key, value in report.get("ratios", {}).items():
        print(f"{key}: {value:.3f}x")
    for name, side in sides.items():
        bad = side.get("nonfinite_test_predictions") or str(side.get("test_loss")) in ("nan", "inf", "-inf")
        if bad:
            print(f"WARNING: {name}: non-finite test predictions/loss (NaN at inference): accuracy is not valid")
    stage = sides.get("stage", {})
    if stage.get("device_line"):
        print(f"stage device line: {stage['device_line']}")
    print(f"prepare images/s counts all splits; stage epochs include validation of "
          f"{stage.get('val_count', '?')} images; reference (issue): bare "
          f"{H200_REFERENCE['epoch_seconds']} s/epoch, {H200_REFERENCE['images_per_second']:,} img/s, "
          f"{H200_REFERENCE['compile_seconds']} s compile on one H200")


def _f(value, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"
