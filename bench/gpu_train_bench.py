"""ResNet-20 on CIFAR-10 on one GPU: bare Keras-on-JAX `model.fit` against our `train` stage (issue 5).

What: the issue's GPU target is that `resnet-mlops train` (MLflow tracking, a checkpoint every
epoch, validation, model logging) keeps at least 0.9x the throughput of a bare Keras-on-JAX
script training the same ResNet-20 with the same recipe (reference: about 0.42 s/epoch,
116,000 images/s on one H200 after a 15 s XLA compile). This bench measures both on the same
prepared data, in one command, and writes every figure to $OUT/gpu_bench.json.

Why this shape: a GPU is lent for minutes, without TensorFlow or internet, so the bench runs
under KERAS_BACKEND=jax from wheels carried beside the tree (bench/gpu/run.sh installs them),
and each side runs in its own Python process (fresh JAX/XLA state, no shared compile cache,
no GPU memory held over) with a timeout, inside one overall deadline, so one hang cannot eat
the lease; gpu_bench.json is rewritten after every side, so a kill still leaves the figures.

Sides, in order:
  prepare  the project's `prepare` stage on the CIFAR-10 JPEG archive (train/ and test/ folders
           read in place; val drawn from train) into a scratch project; images/s.
  bare     a plain ResNet-20 written here with keras.layers (He et al. 2016, option A
           shortcuts, 16/32/64 channels), pad-4 crop and flip on the device inside the model,
           `model.fit(x_uint8, y_onehot, batch_size=512, epochs=30)`, no callbacks but a timer;
           the stage's recipe: mixed bfloat16 on GPU, Nesterov SGD 0.9, linear warm-up then
           linear decay from a peak of 0.1 x 512/128, label smoothing 0.1, weight decay 5e-4.
           Epoch times: epoch 1 from its begin, then from one epoch's end to the next, an end
           being when the epoch's logs were read back from the device (JAX dispatches ahead).
  stage    resnet_mlops.training.trainer.train() with params.yaml `train: {preset: fast,
           epochs: 30, batch_size: 512, warmup_fraction: 0.2}` and 2% of train held out for
           validation, MLflow into a SQLite store, checkpoints on: exactly what `resnet-mlops
           train` does; epoch times, as the bare side's, from the timestamps of the per-epoch
           metrics in the MLflow run (so they include validation, logging and the checkpoint);
           test accuracy of the saved models/model.keras. The trainer keeps XLA's compiled
           programs on disk (training/devices.py); each bench run gives it a new, empty cache,
           so it compiles cold like the bare side.
  stage_warm (only with --warm-stage): the stage again on the programs the stage left on
           disk, as a retrain on the same machine.
  probe, stretch (only with --stretch-seconds S > 0): our trainer on the CIFAR ResNet-18
           (`resnet18` with `stem: cifar`; resnet56 where that option is unknown), as many
           epochs as a short throughput probe says fit in S seconds (or --stretch-epochs).

Run (on the GPU machine, through the kit):   bash bench/gpu/run.sh [--stretch-seconds 200]
Try it at toy size on a CPU (about a minute): PYTHON=.venv/bin/python bash bench/gpu/run.sh --tiny
Directly:  KERAS_BACKEND=jax PYTHONPATH=src python3 bench/gpu_train_bench.py \
               --archive ../shared/datasets/cifar10-jpeg.tar.gz --out /tmp/gpu-out [--tiny]
--mixed forces mixed_bfloat16 on a CPU too; there, under jax 0.11.2 (not 0.10.2), XLA's CPU
inference goes NaN for both ResNet-20s, so --tiny --mixed checks only that the path runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
H200_REFERENCE = {"epoch_seconds": 0.42, "images_per_second": 116_000, "compile_seconds": 15}

# The recipe both ResNet-20 sides train with: the `fast` preset at batch 512 (its rate scaled
# linearly from 0.1 at 128, Goyal et al. 2017).
RECIPE = {"epochs": 30, "batch_size": 512, "learning_rate": 0.1, "lr_batch_reference": 128,
          "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "label_smoothing": 0.1,
          "warmup_fraction": 0.2, "crop": 4, "flip": True}
VAL_FRACTION = 0.02          # ~1,000 of the 50,000 training images validate each stage epoch
SEED = 42
# Each side's own limit in seconds (then cut to what the overall deadline leaves).
SIDE_LIMITS = {"prepare": 150, "bare": 200, "stage": 260, "stage_warm": 200, "probe": 150, "stretch": 600}
# The trainer keeps XLA's compiled programs on disk (training/devices.py): each run of the bench
# gives it a new, empty cache, so the stage compiles cold like the bare side (which gets none);
# --warm-stage then trains again on that cache, as a retrain on the same machine would.
JAX_CACHES = {"stage": "jax-cache-stage", "stage_warm": "jax-cache-stage", "probe": "jax-cache-probe",
              "stretch": "jax-cache-stretch"}
TINY = {"train_per_class": 60, "test_per_class": 20, "epochs": 3, "batch_size": 64, "val_fraction": 0.1}
STRETCH_MODELS = (("resnet18", {"stem": "cifar"}), ("resnet56", {}))
VERSIONED = ("jax", "jaxlib", "jax-cuda13-plugin", "keras", "numpy", "ml-dtypes", "mlflow-skinny", "mlflow",
             "simplejpeg", "optree", "pillow", "pandas", "pyarrow", "sqlalchemy", "pydantic", "protobuf",
             "typing-extensions", "anyio", "packaging")


# ---------------------------------------------------------------------------------------------
# The orchestrator: no JAX, no Keras in this process (a child must find the GPU's memory free).

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=ROOT.parent / "shared/datasets/cifar10-jpeg.tar.gz")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/gpu-out"))
    parser.add_argument("--tiny", action="store_true",
                        help=f"a {TINY['train_per_class']}+{TINY['test_per_class']}-per-class subset, "
                             f"{TINY['epochs']} epochs of batch {TINY['batch_size']}: proves the kit on a CPU")
    parser.add_argument("--epochs", type=int, help=f"ResNet-20 epochs (default {RECIPE['epochs']})")
    parser.add_argument("--batch-size", type=int, help=f"default {RECIPE['batch_size']}")
    parser.add_argument("--stretch-seconds", type=float, default=0.0, help="0: no stretch side")
    parser.add_argument("--stretch-epochs", type=int, help="skip the probe and train this many epochs")
    parser.add_argument("--deadline", type=float, default=float(os.environ.get("GPU_BENCH_DEADLINE", 500)),
                        help="seconds for the whole bench; each side's timeout is cut to what is left")
    parser.add_argument("--sides", default="prepare,bare,stage",
                        help="comma-separated subset of prepare,bare,stage (stretch: --stretch-seconds)")
    parser.add_argument("--warm-stage", action="store_true",
                        help="after the stage, train it again on the compiled programs it left on disk")
    parser.add_argument("--mixed", action="store_true",
                        help="mixed_bfloat16 on every side even without a GPU (checks the GPU's dtype path on a CPU)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one, removed)")
    parser.add_argument("--side", help=argparse.SUPPRESS)      # internal: run one side in this process
    args = parser.parse_args()
    if args.side:
        return run_side(args.side, Path(args.workdir))
    orchestrate(args)


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

    plan = {**RECIPE, "val_fraction": VAL_FRACTION, "seed": SEED, "tiny": args.tiny,
            "stretch_seconds": args.stretch_seconds, "stretch_epochs": args.stretch_epochs, "mixed": args.mixed}
    if args.tiny:
        plan.update(epochs=TINY["epochs"], batch_size=TINY["batch_size"], val_fraction=TINY["val_fraction"])
        archive = make_subset(archive, work / "cifar10-tiny.tar.gz", TINY["train_per_class"], TINY["test_per_class"])
    plan["epochs"] = args.epochs or plan["epochs"]
    plan["batch_size"] = args.batch_size or plan["batch_size"]
    plan["archive"] = str(archive)
    (work / "plan.json").write_text(json.dumps(plan, indent=2))

    report = {"bench": "gpu_train_bench", "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "host": {"python": platform.python_version(), "machine": platform.machine(),
                       "cpus": os.cpu_count(), "nvidia_smi": _nvidia_smi()},
              "versions": _versions(), "plan": plan, "device": None, "sides": {}}
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if args.warm_stage:
        sides.append("stage_warm")
    if args.stretch_seconds > 0:
        sides += ([] if plan["stretch_epochs"] else ["probe"]) + ["stretch"]
    print(f"bench: sides {', '.join(sides)}; work in {work}; deadline {args.deadline:.0f} s; "
          f"epochs {plan['epochs']} of batch {plan['batch_size']}", flush=True)

    for side in sides:
        left = deadline - time.perf_counter() - 5
        limit = min(SIDE_LIMITS[side], left)
        if side == "stretch":
            limit = min(left, max(args.stretch_seconds * 1.5, args.stretch_seconds + 90))
        if limit < 20:
            report["sides"][side] = {"status": "skipped", "why": f"only {left:.0f} s of the deadline left"}
            print(f"bench: {side}: skipped, {left:.0f} s left", flush=True)
            continue
        if "prepare" in report["sides"] and report["sides"]["prepare"]["status"] != "ok":
            report["sides"][side] = {"status": "skipped", "why": "no prepared data"}
            continue
        if side == "stretch":
            _plan_stretch(work, plan, report["sides"], deadline)
        report["sides"][side] = _run_child(side, work, args, limit)
        if report["device"] is None and report["sides"][side].get("device_kind"):
            report["device"] = report["sides"][side]["device_kind"]
        _collect_csv(work, out, side)
        _write_report(out, report, started)
    _write_report(out, report, started)
    print_summary(report)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    if any(side["status"] != "ok" for side in report["sides"].values()):
        sys.exit(1)


def _run_child(side: str, work: Path, args, limit: float) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("KERAS_BACKEND", "jax")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if side in JAX_CACHES:
        env["JAX_COMPILATION_CACHE_DIR"] = str(work / JAX_CACHES[side])
    command = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--workdir", str(work)]
    print(f"\n===== {side} (limit {limit:.0f} s) =====", flush=True)
    result_file = work / f"{side}.json"
    result_file.unlink(missing_ok=True)
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, start_new_session=True)
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


def _plan_stretch(work: Path, plan: dict, sides: dict, deadline: float) -> None:
    """Write stretch.plan.json: the model and how many epochs fit the stretch's seconds."""
    probe = sides.get("probe", {})
    stage = sides.get("stage", {})
    seconds = plan["stretch_seconds"]
    if plan["stretch_epochs"]:
        chosen = {"epochs": plan["stretch_epochs"], "why": "--stretch-epochs"}
        model = probe.get("model_spec")
    elif probe.get("status") == "ok":
        # The trainer compiles its train step twice (full and last partial batch) and its
        # validation step: about 2.5 probe compiles. Its fixed costs (imports, the MLflow store,
        # model logging): the stage side's, or 30 s.
        fixed = stage.get("fixed_seconds", 30.0)
        available = min(seconds, deadline - time.perf_counter() - 30)
        compile_seconds = 2.5 * probe["compile_seconds"]
        epochs = max(1, int((available - compile_seconds - fixed) // probe["epoch_seconds_estimate"]))
        chosen = {"epochs": epochs, "why": f"({available:.0f} s - compile ~{compile_seconds:.0f} s - fixed "
                                           f"{fixed:.0f} s) / {probe['epoch_seconds_estimate']:.2f} s per epoch"}
        model = probe["model_spec"]
    else:
        chosen = {"epochs": 1, "why": "the probe failed: one epoch"}
        model = None
    (work / "stretch.plan.json").write_text(json.dumps({**chosen, "model": model}))
    print(f"bench: stretch plan: {chosen['epochs']} epoch(s): {chosen['why']}", flush=True)


def _collect_csv(work: Path, out: Path, side: str) -> None:
    source = work / f"{side}_history.csv"
    if source.exists():
        shutil.copy(source, out / source.name)


def _write_report(out: Path, report: dict, started: float) -> None:
    report["bench_seconds"] = round(time.perf_counter() - started, 2)
    bare, stage = report["sides"].get("bare", {}), report["sides"].get("stage", {})
    ratios = {}
    if bare.get("steady_images_per_second") and stage.get("steady_images_per_second"):
        ratios["stage_over_bare_steady_images_per_second"] = round(
            stage["steady_images_per_second"] / bare["steady_images_per_second"], 3)
    if bare.get("fit_wall_seconds") and stage.get("fit_wall_seconds"):
        # bare: just before fit -> last epoch's end; stage: train() called -> last epoch's end
        ratios["bare_over_stage_fit_wall"] = round(bare["fit_wall_seconds"] / stage["fit_wall_seconds"], 3)
    if bare.get("epochs_wall_seconds") and stage.get("epochs_wall_seconds"):
        # both from epoch 1's begin to the last epoch's end: the set-up before fit left out
        ratios["bare_over_stage_epochs_wall"] = round(bare["epochs_wall_seconds"] / stage["epochs_wall_seconds"], 3)
    report["ratios"] = ratios
    tmp = out / "gpu_bench.json.tmp"
    tmp.write_text(json.dumps(_finite(report), indent=2) + "\n")
    tmp.replace(out / "gpu_bench.json")


def _finite(value):
    """Strict JSON: NaN and infinities (a diverged loss, say) become strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def print_summary(report: dict) -> None:
    sides = report["sides"]
    print(f"\n=== gpu_train_bench: {report['device'] or 'device unknown'}; "
          f"jax {report['versions'].get('jax')}, keras {report['versions'].get('keras')}; "
          f"{report['plan']['epochs']} epochs of batch {report['plan']['batch_size']}"
          f"{' (TINY)' if report['plan']['tiny'] else ''} ===")
    columns = [("side", 11, None), ("status", 8, None), ("model", 22, None), ("epochs", 6, 0),
               ("fit wall s", 11, 1), ("epochs s", 9, 1), ("compile s", 10, 1), ("steady s/ep", 12, 3),
               ("steady img/s", 13, 0), ("test acc", 9, 4), ("process s", 10, 1)]
    keys = ["epochs", "fit_wall_seconds", "epochs_wall_seconds", "compile_seconds", "steady_epoch_seconds",
            "steady_images_per_second", "test_accuracy", "process_seconds"]
    header = "".join(f"{name:<{width}}" if digits is None else f"{name:>{width}}" for name, width, digits in columns)
    print(header)
    print("-" * len(header))
    for name in ("prepare", "bare", "stage", "stage_warm", "probe", "stretch"):
        side = sides.get(name)
        if not side:
            continue
        if name == "prepare":
            side = {**side, "fit_wall_seconds": side.get("prepare_seconds"),
                    "steady_images_per_second": side.get("images_per_second")}
        cells = [f"{name:<11}", f"{side['status'].split()[0]:<8}", f"{str(side.get('model', '-'))[:21]:<22}"]
        cells += [f"{_f(side.get(key), digits):>{width}}" for key, (_, width, digits) in zip(keys, columns[3:])]
        print("".join(cells))
    print("fit wall: bare from just before fit(), stage from train() called, to the last epoch's end "
          "(prepare: the stage's seconds); epochs: epoch 1's begin to the last epoch's end; compile: epoch 1 "
          "minus the median of epochs 2..N; process: the side's whole process")
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
    print(f"whole bench: {report.get('bench_seconds', 0):.1f} s")


def _f(value, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


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


def make_subset(archive: Path, target: Path, train_per_class: int, test_per_class: int) -> Path:
    """A small copy of the archive with the same layout: the first N JPEGs of each class and split."""
    taken: dict[tuple[str, str], int] = {}
    limits = {"train": train_per_class, "test": test_per_class}
    with tarfile.open(archive, "r:gz") as source, tarfile.open(target, "w:gz") as copy:
        for member in source:
            parts = member.name.split("/")
            split = next((p for p in parts if p in limits), None)
            if not member.isfile():
                if member.isdir():
                    copy.addfile(member)
                continue
            if split is None or len(parts) < 3:
                continue
            key = (split, parts[-2])
            if taken.get(key, 0) < limits[split]:
                taken[key] = taken.get(key, 0) + 1
                copy.addfile(member, source.extractfile(member))
            if len(taken) == 20 and all(taken[k] >= limits[k[0]] for k in taken):
                break
    print(f"bench: tiny archive {target.name}: {sum(taken.values())} images", flush=True)
    return target


# ---------------------------------------------------------------------------------------------
# The sides, each in its own process.

def run_side(side: str, work: Path) -> None:
    plan = json.loads((work / "plan.json").read_text())
    result = {"prepare": side_prepare, "bare": side_bare, "stage": side_stage, "stage_warm": side_stage_warm,
              "probe": side_probe, "stretch": side_stretch}[side](work, plan)
    (work / f"{side}.json").write_text(json.dumps(_finite(result), indent=2))


def _project_params(plan: dict, model: dict, epochs: int) -> dict:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["seed"] = plan["seed"]
    params["data"].update(source="folder", path=plan["archive"], test_path=None, image_size=32, channels=3,
                          val_fraction=plan["val_fraction"], on_error="quarantine", stream=False)
    params["model"] = model
    params["train"] = {"preset": "fast", "epochs": epochs, "batch_size": plan["batch_size"],
                       "warmup_fraction": plan["warmup_fraction"],
                       "augment": {"crop": plan["crop"], "flip": plan["flip"]}}
    if plan["mixed"]:
        params["train"]["mixed_precision"] = True
    params["register"]["model_name"] = "gpu-bench"
    return params


def side_prepare(work: Path, plan: dict) -> dict:
    import yaml

    from resnet_mlops.config import load_params
    from resnet_mlops.data.prepare import prepare
    from resnet_mlops.project import Layout

    project = work / "stage"
    project.mkdir(parents=True, exist_ok=True)
    (project / "params.yaml").write_text(yaml.safe_dump(
        _project_params(plan, {"name": "resnet20"}, plan["epochs"]), sort_keys=False))
    params = load_params(project / "params.yaml")
    layout = Layout(project)
    started = time.perf_counter()
    summary = prepare(params.data, params.seed, layout.prepared, layout.validation_report)
    seconds = time.perf_counter() - started
    counts = {name: split["count"] for name, split in summary["splits"].items()}
    total = sum(counts.values())
    print(f"prepare: {total} images in {seconds:.2f} s = {total / seconds:,.0f} images/s; splits {counts}; "
          f"{params.data.workers or os.cpu_count()} decode workers", flush=True)
    return {"prepare_seconds": round(seconds, 3), "images": total, "images_per_second": round(total / seconds, 1),
            "splits": counts, "workers": params.data.workers or os.cpu_count(), "archive": plan["archive"]}


def _device_info() -> dict:
    import jax
    import keras

    device = jax.devices()[0]
    return {"device_kind": device.device_kind, "platform": device.platform, "device_count": jax.device_count(),
            "jax": jax.__version__, "keras": keras.__version__, "backend": keras.backend.backend()}


def _steady(epoch_seconds: list[float], images: int) -> dict:
    """Compile time and steady-state speed from per-epoch times (steady: median of epochs 2..N)."""
    steady = statistics.median(epoch_seconds[1:]) if len(epoch_seconds) > 1 else None
    return {"epoch_seconds": [round(s, 4) for s in epoch_seconds], "first_epoch_seconds": round(epoch_seconds[0], 3),
            "steady_epoch_seconds": steady and round(steady, 4),
            "compile_seconds": steady and round(epoch_seconds[0] - steady, 3),
            "steady_images_per_second": steady and round(images / steady, 1)}


def _load_split(prepared: Path, name: str):
    import numpy as np

    return (np.load(prepared / f"{name}_images.npy", allow_pickle=False),
            np.load(prepared / f"{name}_labels.npy", allow_pickle=False))


def side_bare(work: Path, plan: dict) -> dict:
    """The reference: nothing of resnet_mlops, just Keras on JAX and the prepared arrays."""
    started = time.perf_counter()
    import jax
    import keras
    import numpy as np
    from keras import layers, ops

    imported = time.perf_counter() - started
    info = _device_info()
    precision = "mixed_bfloat16" if jax.default_backend() == "gpu" or plan["mixed"] else "float32"
    keras.mixed_precision.set_dtype_policy(precision)
    keras.utils.set_random_seed(plan["seed"])
    prepared = work / "stage" / "data" / "prepared"
    x_train, y_train = _load_split(prepared, "train")
    x_test, y_test = _load_split(prepared, "test")
    eye = np.eye(10, dtype="float32")
    batch, epochs = plan["batch_size"], plan["epochs"]

    class PadCropFlip(layers.Layer):
        """Pad by `pad`, crop back at a random offset per image, flip half: on the device, training only."""

        def __init__(self, pad, **kwargs):
            super().__init__(**kwargs)
            self.pad, self.generator = pad, keras.random.SeedGenerator(plan["seed"])

        def call(self, images, training=None):
            x = ops.cast(images, self.compute_dtype)
            if not training:
                return x
            n, h, w, c = ops.shape(x)
            padded = ops.pad(x, [[0, 0], [self.pad, self.pad], [self.pad, self.pad], [0, 0]])
            offsets = keras.random.randint((2, n), 0, 2 * self.pad + 1, seed=self.generator)
            rows = (offsets[0][:, None] + ops.arange(h))[:, :, None, None]
            x = ops.take_along_axis(padded, ops.broadcast_to(rows, (n, h, w + 2 * self.pad, c)), axis=1)
            cols = ops.broadcast_to((offsets[1][:, None] + ops.arange(w))[:, None, :, None], (n, h, w, c))
            x = ops.take_along_axis(x, cols, axis=2)
            flip = keras.random.randint((n, 1, 1, 1), 0, 2, seed=self.generator)
            return ops.where(flip == 1, ops.flip(x, axis=2), x)

    class ShortcutA(layers.Layer):
        """He et al.'s option A: subsample by 2, zero-pad the new channels."""

        def __init__(self, filters, **kwargs):
            super().__init__(**kwargs)
            self.filters = filters

        def call(self, x):
            x = x[:, ::2, ::2, :]
            extra = self.filters - x.shape[-1]
            return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def conv_bn(x, filters, strides=1, relu=True):
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                          kernel_initializer="he_normal")(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        return layers.ReLU()(x) if relu else x

    inputs = keras.Input(x_train.shape[1:], dtype="uint8")
    x = PadCropFlip(plan["crop"])(inputs)
    x = layers.Rescaling(1 / 255.0)(x)
    x = conv_bn(x, 16)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            strides = 2 if stage and not block else 1
            y = conv_bn(conv_bn(x, filters, strides), filters, relu=False)
            shortcut = ShortcutA(filters)(x) if strides != 1 else x
            x = layers.ReLU()(layers.Add()([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(10)(x)
    outputs = layers.Activation("softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name="bare_resnet20")

    steps = math.ceil(len(x_train) / batch)
    total, warmup = epochs * steps, round(plan["warmup_fraction"] * epochs * steps)
    peak = plan["learning_rate"] * batch / plan["lr_batch_reference"]

    class WarmupLinear(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = ops.cast(step, "float32")
            decay = peak * (1.0 - ops.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0))
            return ops.where(step < warmup, peak * (step + 1.0) / max(warmup, 1), decay)

    # Keras decays weights decoupled (w -= lr * wd * w); the L2 coefficient 5e-4 of SGD with
    # momentum m corresponds to wd / (1 - m), which is what the stage's optimizer applies too.
    model.compile(keras.optimizers.SGD(WarmupLinear(), momentum=plan["momentum"], nesterov=plan["nesterov"],
                                       weight_decay=plan["weight_decay"] / (1 - plan["momentum"])),
                  keras.losses.CategoricalCrossentropy(label_smoothing=plan["label_smoothing"]),
                  metrics=["accuracy"])

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.begins, self.ends, self.logs = [], [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.begins.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.logs.append({k: float(v) for k, v in (logs or {}).items()})  # reads back: waits for the device
            self.ends.append(time.perf_counter())

    timer = Timer()
    before_fit = time.perf_counter()
    model.fit(x_train, eye[y_train], batch_size=batch, epochs=epochs, callbacks=[timer], verbose=2)
    fit_wall = timer.ends[-1] - before_fit
    # epoch 1 from its begin, then end to end (JAX dispatches ahead: only a read-back marks the end)
    times = [timer.ends[0] - timer.begins[0]] + [b - a for a, b in zip(timer.ends, timer.ends[1:])]
    eval_started = time.perf_counter()
    loss, accuracy = model.evaluate(x_test, eye[y_test], batch_size=batch, verbose=0)
    eval_seconds = time.perf_counter() - eval_started
    with (work / "bare_history.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        keys = sorted(timer.logs[0])
        writer.writerow(["epoch", *keys, "epoch_seconds"])
        for index, (logs, seconds) in enumerate(zip(timer.logs, times)):
            writer.writerow([index + 1, *(f"{logs[k]:.6f}" for k in keys), f"{seconds:.4f}"])
    result = {**info, "model": "resnet20 (inline)", "precision": precision, "epochs": epochs,
              "train_count": len(x_train), "test_count": len(x_test), "batch_size": batch, "peak_learning_rate": peak,
              "import_seconds": round(imported, 2), "fit_wall_seconds": round(fit_wall, 3),
              "pre_epoch_seconds": round(timer.begins[0] - before_fit, 3),
              "epochs_wall_seconds": round(timer.ends[-1] - timer.begins[0], 3), **_steady(times, len(x_train)),
              "final_train_accuracy": round(timer.logs[-1].get("accuracy", 0), 4),
              "test_accuracy": round(float(accuracy), 4), "test_loss": round(float(loss), 4),
              "eval_seconds": round(eval_seconds, 2), "params": model.count_params(),
              "side_seconds": round(time.perf_counter() - started, 2)}
    print(f"bare: {json.dumps(result)}", flush=True)
    return result


class _Tee:
    """stdout that also keeps what was written (the trainer prints its device line)."""

    def __init__(self, stream):
        self.stream, self.lines = stream, []

    def write(self, text):
        self.lines.append(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _train_side(work: Path, project: Path, history_name: str) -> dict:
    """Our trainer exactly as `resnet-mlops train` runs it, in `project`; then the test accuracy."""
    started = time.perf_counter()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{project}/mlflow.db"
    os.chdir(project)   # as under DVC: artifacts (./mlruns) land in the project
    import keras
    import mlflow
    import numpy as np

    from resnet_mlops.config import load_params
    from resnet_mlops.data.prepared import read_split
    from resnet_mlops.models import load_model
    from resnet_mlops.project import Layout
    from resnet_mlops.training.trainer import train

    imported = time.perf_counter() - started
    info = _device_info()
    cache = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR", "/nonexistent"))
    cached_before = sum(1 for _ in cache.iterdir()) if cache.is_dir() else 0
    params = load_params(project / "params.yaml")
    layout = Layout(project)
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    wall_started, train_started = time.time(), time.perf_counter()
    try:
        outcome = train(params, layout)
    finally:
        sys.stdout = tee.stream
    train_seconds = time.perf_counter() - train_started

    client = mlflow.tracking.MlflowClient()
    metrics = {key: sorted(client.get_metric_history(outcome["run_id"], key), key=lambda m: m.step)
               for key in ("epoch_seconds", "images_per_second")}
    # MlflowEpochLogger reads the clock before the epoch's logs are read back (JAX dispatches
    # ahead), then logs: its metrics' timestamps mark when each epoch's work was done, so the
    # epoch times here are end-to-end intervals of those, as the bare side's are (ms resolution).
    logger_seconds = [m.value for m in metrics["epoch_seconds"]]
    ends = [m.timestamp / 1000.0 for m in metrics["epoch_seconds"]]
    fit_start = ends[0] - logger_seconds[0]  # epoch 1's begin, to the read-back's few ms
    fit_end = ends[-1]
    epoch_seconds = [ends[0] - fit_start] + [b - a for a, b in zip(ends, ends[1:])]
    summary = json.loads((layout.prepared / "summary.json").read_text())
    train_count = summary["splits"]["train"]["count"]
    device_line = next((line.strip() for line in "".join(tee.lines).splitlines() if line.startswith("train: ")), None)

    eval_started = time.perf_counter()
    test = read_split(layout.prepared, "test")
    model = load_model(layout.model_file)
    predictions = model.predict(test.images, batch_size=params.train.batch_size, verbose=0)
    accuracy = float(np.mean(np.argmax(predictions, axis=1) == test.labels))
    nonfinite = int(np.sum(~np.isfinite(predictions).all(axis=1)))  # rows with a NaN or inf
    eval_seconds = time.perf_counter() - eval_started
    if layout.history.exists():
        shutil.copy(layout.history, work / history_name)
    fit_wall = fit_end - wall_started
    result = {**info, "model": _model_name({"name": params.model.name, **params.model.options}),
              "precision": keras.mixed_precision.dtype_policy().name, "epochs": outcome["epochs"],
              "train_count": train_count, "val_count": summary["splits"]["val"]["count"],
              "test_count": len(test.labels), "batch_size": params.train.batch_size,
              "peak_learning_rate": params.train.peak_learning_rate, "device_line": device_line,
              "jax_cache_entries_before": cached_before,
              "jax_cache_entries_after": sum(1 for _ in cache.iterdir()) if cache.is_dir() else 0,
              "import_seconds": round(imported, 2), "train_call_seconds": round(train_seconds, 3),
              "fit_wall_seconds": round(fit_wall, 3), "epochs_wall_seconds": round(fit_end - fit_start, 3),
              "fixed_seconds": round(imported + train_seconds - sum(epoch_seconds), 2),
              **_steady(epoch_seconds, train_count),
              "logger_epoch_seconds": [round(v, 4) for v in logger_seconds],
              "mlflow_images_per_second": [round(m.value, 1) for m in metrics["images_per_second"]],
              "final_train_accuracy": round(outcome.get("accuracy", 0.0), 4),
              "final_val_accuracy": round(outcome.get("val_accuracy", 0.0), 4),
              "test_accuracy": round(accuracy, 4), "nonfinite_test_predictions": nonfinite,
              "eval_seconds": round(eval_seconds, 2), "run_id": outcome["run_id"],
              "side_seconds": round(time.perf_counter() - started, 2)}
    print(f"{project.name}: {json.dumps(result)}", flush=True)
    return result


def side_stage(work: Path, plan: dict) -> dict:
    return _train_side(work, work / "stage", "stage_history.csv")


def side_stage_warm(work: Path, plan: dict) -> dict:
    return _train_side(work, work / "stage", "stage_warm_history.csv")


def _stretch_project(work: Path, plan: dict, model: dict, epochs: int) -> Path:
    import yaml

    project = work / "stretch"
    (project / "data").mkdir(parents=True, exist_ok=True)
    link = project / "data" / "prepared"
    if not link.exists():
        link.symlink_to(work / "stage" / "data" / "prepared")
    (project / "params.yaml").write_text(yaml.safe_dump(_project_params(plan, model, epochs), sort_keys=False))
    return project


def _model_name(spec: dict) -> str:
    return " ".join([spec["name"], *(f"{k}={v}" for k, v in spec.items() if k != "name")])


def _stretch_model() -> dict:
    """The CIFAR ResNet-18 where the catalogue has `stem: cifar`, else ResNet-56."""
    from resnet_mlops.models import validate

    for name, options in STRETCH_MODELS:
        try:
            validate(name, options, input_shape=(32, 32, 3), num_classes=10)
        except ValueError as exc:
            print(f"probe: {name} {options} refused ({exc}); trying the next", flush=True)
            continue
        return {"name": name, **options}
    raise SystemExit("no stretch model is available")


def side_probe(work: Path, plan: dict) -> dict:
    """Steady seconds per training step of the stretch model, built and compiled as the trainer does."""
    started = time.perf_counter()
    import keras
    import numpy as np

    from resnet_mlops.config import load_params
    from resnet_mlops.models import build_model
    from resnet_mlops.training import devices
    from resnet_mlops.training.augment import augment_layer
    from resnet_mlops.training.schedules import make_optimizer

    model_spec = _stretch_model()
    project = _stretch_project(work, plan, model_spec, 1)
    params = load_params(project / "params.yaml")
    settings = params.train
    device = devices.plan(settings, params.seed)
    x, labels = _load_split(project / "data" / "prepared", "train")
    _, val_labels = _load_split(project / "data" / "prepared", "val")
    steps_per_epoch = math.ceil(len(labels) / settings.batch_size)
    classifier = build_model(params.model.name, x.shape[1:], 10, **params.model.options)
    model = keras.Sequential([augment_layer(settings.augment, params.seed), classifier])
    model.compile(make_optimizer(settings, steps_per_epoch),
                  keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")], jit_compile=device.jit_compile)
    batch = settings.batch_size
    steps = max(2, min(20, len(labels) // batch))
    rows = np.resize(np.arange(len(labels)), steps * batch)
    xs, ys = x[rows], np.eye(10, dtype="float32")[labels[rows]]
    first = time.perf_counter()
    model.fit(xs[:batch], ys[:batch], batch_size=batch, epochs=1, verbose=0)
    compile_seconds = time.perf_counter() - first
    timed = time.perf_counter()
    model.fit(xs, ys, batch_size=batch, epochs=1, verbose=0)
    step_seconds = (time.perf_counter() - timed) / steps
    train_epoch = steps_per_epoch * step_seconds
    # validation runs at about three times the training speed (forward only)
    estimate = train_epoch + len(val_labels) / batch * step_seconds / 3
    result = {**_device_info(), "model": _model_name(model_spec), "model_spec": model_spec,
              "device_line": device.description,
              "compile_seconds": round(compile_seconds, 2), "step_seconds": round(step_seconds, 5),
              "steady_images_per_second": round(batch / step_seconds, 1),
              "epoch_seconds_estimate": round(estimate, 3), "params": classifier.count_params(),
              "side_seconds": round(time.perf_counter() - started, 2)}
    print(f"probe: {json.dumps(result)}", flush=True)
    return result


def side_stretch(work: Path, plan: dict) -> dict:
    chosen = json.loads((work / "stretch.plan.json").read_text())
    model_spec = chosen.get("model") or _stretch_model()
    project = _stretch_project(work, plan, model_spec, chosen["epochs"])
    return {**_train_side(work, project, "stretch_history.csv"), "epochs_planned": chosen["epochs"],
            "epochs_why": chosen["why"]}


if __name__ == "__main__":
    main()
