"""The `register` stage: add the run's model to the MLflow registry and decide on `@champion`.

The new version takes `@champion` when there is none, or when its test accuracy
beats the champion's on the same test set. "Same test set" is checked by the
test split's content hash: when the champion was scored on another test set, it
is re-scored on this one before the comparison, so two versions are never
ranked on different data. The decision and its reason are tags on the version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from resnet_mlops import atomic, tracking
from resnet_mlops.config import RegisterSettings
from resnet_mlops.data.prepared import read_split, read_summary
from resnet_mlops.errors import UserError
from resnet_mlops.evaluation.metrics import classification_metrics
from resnet_mlops.project import Layout

CHAMPION = "champion"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    champion_version: str | None = None
    champion_accuracy: float | None = None


def current_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no such model yet, or no version holds the alias


def champion_accuracy(champion, layout: Layout, test_hash: str) -> tuple[float, str]:
    """The champion's test accuracy on this test set, and where the figure came from."""
    tags = champion.tags
    if tags.get("test_set_hash") == test_hash and "test_accuracy" in tags:
        return float(tags["test_accuracy"]), "recorded on the same test set"
    test = read_split(layout.prepared, "test")
    served = mlflow.pyfunc.load_model(f"models:/{champion.name}/{champion.version}")
    probabilities = served.unwrap_python_model().probabilities(test.images)
    return classification_metrics(probabilities, test.labels)["test_accuracy"], "re-scored on this test set"


def decide(accuracy: float, champion, layout: Layout, test_hash: str) -> Decision:
    if champion is None:
        return Decision(True, "no champion yet")
    best, source = champion_accuracy(champion, layout, test_hash)
    versus = f"champion v{champion.version}'s {best:.4f} ({source})"
    if accuracy > best:
        return Decision(True, f"test accuracy {accuracy:.4f} beats {versus}", champion.version, best)
    return Decision(False, f"test accuracy {accuracy:.4f} does not beat {versus}", champion.version, best)


def register(settings: RegisterSettings, layout: Layout) -> dict:
    """Register this execution's model; return what was registered and the champion decision."""
    run_info = tracking.read_run_file(layout.run_file)
    try:
        metrics = json.loads(layout.metrics.read_text())
    except OSError:
        raise UserError(f"{layout.metrics} is missing; run the evaluate stage first") from None
    test_hash = read_summary(layout.prepared)["splits"]["test"]["sha256"]
    accuracy = metrics["test_accuracy"]

    with tracking.reopen_run(layout.run_file) as run:
        client = MlflowClient()
        decision = decide(accuracy, current_champion(client, settings.model_name), layout, test_hash)
        version = mlflow.register_model(run_info["model_uri"], settings.model_name)
        tags = {"test_accuracy": repr(accuracy), "test_set_hash": test_hash,
                "champion_decision": "promoted" if decision.promote else "not promoted",
                "champion_reason": decision.reason, **_lineage(run.data.tags)}
        for key, value in tags.items():
            client.set_model_version_tag(settings.model_name, version.version, key, value)
        if decision.promote:
            client.set_registered_model_alias(settings.model_name, CHAMPION, version.version)
        mlflow.set_tags({"registered_model": settings.model_name,
                         "registered_version": version.version,
                         "champion_reason": decision.reason})

    result = {"model_name": settings.model_name, "version": int(version.version),
              "run_id": run_info["run_id"], "test_accuracy": accuracy,
              "champion": decision.promote, "reason": decision.reason,
              "previous_champion_version": decision.champion_version,
              "previous_champion_accuracy": decision.champion_accuracy,
              "model_uri": f"models:/{settings.model_name}@{CHAMPION}"}
    atomic.write_json(layout.registration, result)
    return result


def _lineage(run_tags: dict[str, str]) -> dict[str, str]:
    keys = ("git.commit", "git.dirty", "data.dvc_hash", "data.content_hash", "reproduce",
            tracking.FLOW_RUN_TAG)
    return {key: run_tags[key] for key in keys if key in run_tags}
