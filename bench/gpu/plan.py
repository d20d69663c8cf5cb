"""What a run of the GPU bench trains, which sides it runs, and for how long each may take."""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path

from support.scratch import ROOT, shipped_params

ENTRY = ROOT / "bench" / "gpu_train_bench.py"  # each side runs as `python ENTRY --side NAME`

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


def make_plan(args, archive: Path, work: Path) -> dict:
    """The run's plan from the command line, written to work/plan.json for the sides to read."""
    plan = {**RECIPE, "val_fraction": VAL_FRACTION, "seed": SEED, "tiny": args.tiny,
            "stretch_seconds": args.stretch_seconds, "stretch_epochs": args.stretch_epochs, "mixed": args.mixed}
    if args.tiny:
        plan.update(epochs=TINY["epochs"], batch_size=TINY["batch_size"], val_fraction=TINY["val_fraction"])
        archive = make_subset(archive, work / "cifar10-tiny.tar.gz", TINY["train_per_class"], TINY["test_per_class"])
    plan["epochs"] = args.epochs or plan["epochs"]
    plan["batch_size"] = args.batch_size or plan["batch_size"]
    plan["archive"] = str(archive)
    (work / "plan.json").write_text(json.dumps(plan, indent=2))
    return plan


def side_order(args, plan: dict) -> list[str]:
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    if args.warm_stage:
        sides.append("stage_warm")
    if args.stretch_seconds > 0:
        sides += ([] if plan["stretch_epochs"] else ["probe"]) + ["stretch"]
    return sides


def side_limit(side: str, stretch_seconds: float, left: float) -> float:
    """A side's timeout: its own limit (the stretch's from its seconds), within the `left` of the deadline."""
    if side == "stretch":
        return min(left, max(stretch_seconds * 1.5, stretch_seconds + 90))
    return min(SIDE_LIMITS[side], left)


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


def project_params(plan: dict, model: dict, epochs: int) -> dict:
    """params.yaml of a side's scratch project: the shipped one, on the plan's data and recipe."""
    params = shipped_params()
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


def model_name(spec: dict) -> str:
    return " ".join([spec["name"], *(f"{k}={v}" for k, v in spec.items() if k != "name")])


def plan_stretch(work: Path, plan: dict, sides: dict, deadline: float) -> None:
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
