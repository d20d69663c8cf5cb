"""`resnet-mlops sweep -S 'train.learning_rate=0.05,0.1' -S 'model.name=resnet20,resnet32' [-j N]`.

A grid of DVC experiments, and only the best of them through the promotion gate:

1. `dvc exp run evaluate --queue -S ...` queues one experiment per point of the grid (DVC expands
   comma-separated values into their product), each run up to `evaluate` only, so that no
   member of the sweep registers a version or meets the gate;
2. `dvc exp run --run-all -j N` runs them (it blocks until all are done);
3. every experiment's MLflow run (found by its `dvc.experiment` tag) gets the tag `sweep.id` and
   is nested under one parent run named after the sweep, which holds the grid: the MLflow
   dashboard shows the sweep as one expandable row;
4. the experiment with the best `test_accuracy` is applied to the workspace (`dvc exp apply`) and
   `dvc repro` runs what it still needs, the register stage: the best version is registered and
   judged by the gate against the current champion, exactly as a plain run would be.

`dvc exp show` lists the experiments afterwards (as DVC experiments they stay comparable,
applicable and shareable).
"""

from __future__ import annotations

import json
import re
import uuid

from resnet_mlops import project
from resnet_mlops.errors import UserError
from resnet_mlops.project import Layout

METRIC = "test_accuracy"
SWEEP_TAG = "sweep.id"
_QUEUED = re.compile(r"Queued experiment '([^']+)'")


def sweep(grid: list[str], jobs: int, experiment: str) -> str:
    """Run the sweep over `grid` (`-S` values) with `jobs` parallel experiments; what to print."""
    if not grid:
        raise UserError("a sweep needs at least one -S key=value1,value2,... to vary")
    names = _queue(grid)
    project.dvc(["exp", "run", "--run-all", "-j", str(jobs)])
    scored = _scores(names)
    if not scored:
        raise UserError(f"none of the sweep's {len(names)} experiments finished ({', '.join(names)}); "
                        f"`dvc queue logs <name>` says why")
    sweep_id = uuid.uuid4().hex[:12]
    runs = _group(sweep_id, grid, names, experiment)
    best = max(scored, key=scored.get)
    before = Layout().registration.read_text() if Layout().registration.exists() else None
    project.dvc(["exp", "apply", best])
    project.dvc(["repro"])  # the best experiment's outputs are in place: only `register` is left to run
    registration = Layout().registration.read_text() if Layout().registration.exists() else None
    if registration is None or registration == before:
        outcome = "the same state as the workspace's before the sweep: nothing new to register"
    else:
        verdict = json.loads(Layout().promotion.read_text())
        outcome = f"registered as version {verdict['version']}: {verdict['decision']}; {verdict['reason']}"
    lines = [f"sweep {sweep_id}: {len(names)} experiments, {len(scored)} finished (MLflow: runs tagged "
             f"{SWEEP_TAG}={sweep_id}, under the parent run 'sweep {sweep_id}')",
             *(f"  {name:<24} {_describe(name, scored, runs)}" for name in names),
             f"best: {best} ({METRIC} {scored[best]:.4f}), applied to the workspace; {outcome}"]
    return "\n".join(lines)


def _describe(name: str, scored: dict, runs: dict) -> str:
    if name not in scored:
        return "failed"
    again = "" if name in runs else "  (no new MLflow run: DVC found this state already run)"
    return f"{METRIC} {scored[name]:.4f}{again}"


def _scores(names: list[str]) -> dict[str, float]:
    """Each finished experiment's test accuracy, as DVC records it (`dvc exp show --json`)."""
    found: dict[str, float] = {}

    def walk(entry: dict) -> None:
        metrics = ((entry.get("data") or {}).get("metrics") or {}).get("reports/metrics.json") or {}
        value = (metrics.get("data") or {}).get(METRIC)
        if entry.get("name") in names and value is not None:
            found[entry["name"]] = float(value)
        for child in entry.get("experiments") or []:
            for rev in child.get("revs") or []:
                walk(rev)

    for entry in json.loads(project.dvc(["exp", "show", "--json"])):
        walk(entry)
    return found


def _queue(grid: list[str]) -> list[str]:
    """Queue the grid's experiments, up to the evaluate stage; their names."""
    printed = project.dvc(["exp", "run", "evaluate", "--queue", *(arg for value in grid for arg in ("-S", value))])
    names = _QUEUED.findall(printed)
    if not names:
        raise UserError(f"`dvc exp run --queue` queued nothing for {' '.join(grid)}")
    return names


def _group(sweep_id: str, grid: list[str], names: list[str], experiment: str) -> dict:
    """Tag every experiment's MLflow run with the sweep and nest it under one parent run; the runs by name
    (an experiment whose state DVC had run before, restored rather than rerun, has no run of its own)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from resnet_mlops import tracking

    tracking.configure()
    client = MlflowClient()
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return {}
    with mlflow.start_run(experiment_id=found.experiment_id, run_name=f"sweep {sweep_id}") as parent:
        mlflow.set_tags({SWEEP_TAG: sweep_id, "sweep.grid": " ".join(grid), "sweep.experiments": " ".join(names)})
    runs = {}
    for name in names:
        matches = client.search_runs([found.experiment_id], f"tags.`dvc.experiment` = '{name}'",
                                     order_by=["attributes.start_time DESC"], max_results=1)
        if matches:
            runs[name] = matches[0]
            client.set_tag(matches[0].info.run_id, SWEEP_TAG, sweep_id)
            client.set_tag(matches[0].info.run_id, "mlflow.parentRunId", parent.info.run_id)
    return runs
