"""`resnet-mlops sweep`: a grid of DVC experiments on the tiny pipeline, grouped in MLflow, and only
the best registered and judged by the promotion gate."""

from __future__ import annotations

import json
import re

import pytest
from mlflow.tracking import MlflowClient

from support.project_repo import run

pytestmark = pytest.mark.slow


def test_a_sweep_runs_the_grid_as_experiments_and_registers_only_the_best(reproduced_repo):
    repo = reproduced_repo
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "--quiet", "-m", "baseline"], repo)
    client = MlflowClient(tracking_uri=f"sqlite:///{repo.resolve()}/mlflow.db")
    versions_before = client.search_model_versions("name = 'tiny-digits'")

    done = run(["resnet-mlops", "sweep", "-S", "train.epochs=1,3", "-S", "train.learning_rate=0.01"], repo)
    printed = done.stdout
    found = re.search(r"^sweep ([0-9a-f]{12}): 2 experiments, 2 finished", printed, re.M)
    assert found, printed + done.stderr
    sweep_id = found.group(1)

    experiment = client.get_experiment_by_name("tests")
    members = client.search_runs([experiment.experiment_id], f"tags.`sweep.id` = '{sweep_id}'")
    parent = [r for r in members if r.info.run_name == f"sweep {sweep_id}"]
    children = [r for r in members if r.info.run_name != f"sweep {sweep_id}"]
    assert len(parent) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent[0].info.run_id}
    assert sorted(r.data.params["train.epochs"] for r in children) == ["1", "3"]
    best = max(children, key=lambda r: r.data.metrics["test_accuracy"])

    # Only the best was registered, and the gate judged it against the champion the baseline made.
    versions = client.search_model_versions("name = 'tiny-digits'")
    assert len(versions) == len(versions_before) + 1
    verdict = json.loads((repo / "reports/promotion.json").read_text())
    assert verdict["run_id"] == best.info.run_id and verdict["champion_version"] == 1
    assert f"best: {best.data.tags['dvc.experiment']} " in printed and verdict["decision"] in printed
    assert all("registered_version" not in r.data.tags for r in children if r.info.run_id != best.info.run_id)
    # They are DVC experiments: `dvc exp show` lists them.
    shown = run(["dvc", "exp", "show", "--md", "--no-pager"], repo).stdout
    assert all(r.data.tags["dvc.experiment"] in shown for r in children)
