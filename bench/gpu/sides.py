"""One side, in the child process the orchestrator starts: its result in work/<side>.json."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from gpu.report import finite

# Each side's function, imported only in its own process (the bare reference imports Keras at once).
SIDES = {"prepare": ("gpu.stage", "side_prepare"), "bare": ("gpu.reference", "side_bare"),
         "stage": ("gpu.stage", "side_stage"), "stage_warm": ("gpu.stage", "side_stage_warm"),
         "probe": ("gpu.stage", "side_probe"), "stretch": ("gpu.stage", "side_stretch")}


def run_side(side: str, work: Path) -> None:
    plan = json.loads((work / "plan.json").read_text())
    module, name = SIDES[side]
    result = getattr(importlib.import_module(module), name)(work, plan)
    (work / f"{side}.json").write_text(json.dumps(finite(result), indent=2))
