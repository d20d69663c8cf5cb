"""The `register` stage: log the servable model, add it to the MLflow registry, decide on `@champion`.

The served pyfunc (`serving/`) is logged here, into the execution's run, rather
than by `train`: registering is what it is for, and a change in the serving code
then re-registers the trained model without training it again.

The new version takes `@champion` when there is none, when it repackages the
champion's own training run (the same weights with the current serving code), or
when its test accuracy beats the champion's on the same test set. "Same test set" is checked by the
test split's content hash: when the champion was scored on another test set, it
is re-scored on this one before the comparison, so two versions are never
ranked on different data. The decision and its reason are tags on the version.

MLflow is imported inside the functions that use it: `make run` reads `summary`
after every run, and that should cost milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from resnet_mlops import atomic
from resnet_mlops.config import Params
from resnet_mlops.dataset.prepared import read_split, read_summary
from resnet_mlops.errors import UserError
from resnet_mlops.evaluation.metrics import classification_metrics
from resnet_mlops.project import CHAMPION, Layout, champion_uri


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    champion_version: int | None = None  # as MLflow numbers versions
    champion_accuracy: float | None = None


# What the registry answers for a model it does not have, and for an alias no version holds.
_NO_CHAMPION = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def current_champion(client, name: str):
    """The version `client`'s registry has under @champion for model `name`, or None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if error.error_code in _NO_CHAMPION:
            return None
        raise UserError(f"the model registry at {mlflow.get_registry_uri()} could not be read "
                        f"({_first_line(error)}); nothing was registered") from None


def _first_line(error: Exception) -> str:
    return (str(getattr(error, "message", "") or error).strip().splitlines() or [type(error).__name__])[0]


def champion_accuracy(champion, layout: Layout, test_hash: str) -> tuple[float, str]:
    """The champion's test accuracy on this test set, and where the figure came from."""
    tags = champion.tags
    if tags.get("test_set_hash") == test_hash and "test_accuracy" in tags:
        return float(tags["test_accuracy"]), "recorded on the same test set"
    served = _comparable_champion(champion, read_summary(layout.prepared))
    test = read_split(layout.prepared, "test")
    probabilities = served.probabilities(test.images)
    return classification_metrics(probabilities, test.labels)["test_accuracy"], "re-scored on this test set"


def _comparable_champion(champion, data: dict):
    """The champion's served model, loaded, when it takes this data's images and classes.

    A champion of another image shape or class set cannot be scored on this test set, so no
    version of this data may be ranked against it under the same name: the rule is to refuse,
    before anything is registered, and to name the way out.
    """
    import mlflow

    which = f"champion v{champion.version} of '{champion.name}'"
    try:
        served = mlflow.pyfunc.load_model(f"models:/{champion.name}/{champion.version}").unwrap_python_model()
        shape, classes = list(served.image_shape), list(served.class_names)
    except Exception as error:  # noqa: BLE001 - whatever a broken model raises, say it in one line
        raise UserError(f"{which} no longer loads ({_first_line(error)}), so this model cannot be compared "
                        f"with it; nothing was registered (fix or move @champion, or set another "
                        f"register.model_name)") from None
    if (shape, classes) != (list(data["image_shape"]), list(data["class_names"])):
        raise UserError(f"{which} takes {_describe(shape, classes)}, this data has "
                        f"{_describe(data['image_shape'], data['class_names'])}: they cannot be compared on "
                        f"one test set; nothing was registered (set another register.model_name for this data)")
    return served


def _describe(shape, classes) -> str:
    return f"{'x'.join(map(str, shape))} images of {_describe_classes(classes)}"


def _describe_classes(classes) -> str:
    names = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
    return f"{len(classes)} classes ({names})"


def decide(accuracy: float, run_id: str, champion, layout: Layout, test_hash: str) -> Decision:
    """Whether the version of run `run_id`, of this test accuracy on the test set `test_hash`,
    takes `@champion` from `champion` (a registered version, or None), and why."""
    if champion is None:
        return Decision(True, "no champion yet")
    if champion.run_id == run_id:
        return Decision(True, f"the same training run as champion v{champion.version}, packaged with the "
                              f"current serving code", int(champion.version), accuracy)
    best, source = champion_accuracy(champion, layout, test_hash)
    versus = f"champion v{champion.version}'s {best:.4f} ({source})"
    if accuracy > best:
        return Decision(True, f"test accuracy {accuracy:.4f} beats {versus}", int(champion.version), best)
    return Decision(False, f"test accuracy {accuracy:.4f} does not beat {versus}", int(champion.version), best)


def run(params: Params, layout: Layout) -> dict:
    """Log and register this execution's model, decide on `@champion`; return `summary(layout)`."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from resnet_mlops import tracking
    from resnet_mlops.serving.pyfunc import log_classifier

    settings = params.register
    run_info = tracking.read_run_file(layout.run_file)
    try:
        metrics = json.loads(layout.metrics.read_text())
    except OSError:
        raise UserError(f"{layout.metrics} is missing; run the evaluate stage first") from None
    data = read_summary(layout.prepared)
    test_hash = data["splits"]["test"]["sha256"]
    accuracy = metrics["test_accuracy"]

    tracking.configure()
    client = MlflowClient()
    champion = current_champion(client, settings.model_name)
    decision = decide(accuracy, run_info["run_id"], champion, layout, test_hash)  # before anything changes
    with tracking.reopen_run(layout.run_file) as active:
        served = log_classifier(layout.model_file, data["class_names"])
        version = mlflow.register_model(served.model_uri, settings.model_name)
        tags = {"test_accuracy": repr(accuracy), "test_set_hash": test_hash,
                "champion_decision": "promoted" if decision.promote else "not promoted",
                "champion_reason": decision.reason, **_lineage(active.data.tags, tracking.FLOW_RUN_TAG)}
        for key, value in tags.items():
            client.set_model_version_tag(settings.model_name, version.version, key, value)
        if decision.promote:
            client.set_registered_model_alias(settings.model_name, CHAMPION, version.version)
        client.update_model_version(settings.model_name, version.version,
                                    _version_description(decision, metrics))
        holder = (version.version, decision.reason) if decision.promote else (
            champion.version, champion.tags.get("champion_reason", "decided before versions said why"))
        client.update_registered_model(settings.model_name, _model_description(data, *holder))
        mlflow.set_tags({"registered_model": settings.model_name,
                         "registered_version": version.version,
                         "champion_reason": decision.reason})

    result = {"model_name": settings.model_name, "version": int(version.version),
              "run_id": run_info["run_id"], "test_accuracy": accuracy,
              "champion": decision.promote, "reason": decision.reason,
              "previous_champion_version": decision.champion_version,
              "previous_champion_accuracy": decision.champion_accuracy,
              "model_uri": champion_uri(settings.model_name)}
    atomic.write_json(layout.registration, result)
    return summary(layout)


def _version_description(decision: Decision, metrics: dict) -> str:
    """One line for the version's page in the MLflow dashboard: its decision and headline numbers."""
    verdict = "@champion" if decision.promote else "not promoted"
    return (f"{verdict}: test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_examples']} images; "
            f"{decision.reason}")


def _model_description(data: dict, champion_version, why: str) -> str:
    """The registered model's description: what it classifies, and which version is champion and why."""
    shape = "x".join(map(str, data["image_shape"]))
    return (f"ResNet image classifier: {shape} images from data.source {data['source']} into "
            f"{_describe_classes(data['class_names'])}. @champion is version {champion_version}: {why}.")


def _lineage(run_tags: dict[str, str], *more: str) -> dict[str, str]:
    """The run's lineage tags that the version carries too (`more`: further tag names)."""
    keys = ("git.commit", "git.dirty", "data.dvc_hash", "data.content_hash", "reproduce", *more)
    return {key: run_tags[key] for key in keys if key in run_tags}


def registered_version(model_uri: str):
    """The registry's version that `models:/<name>@<alias>` or `models:/<name>/<number>` names now;
    None for any other URI (a run, a path, `latest`), which MLflow resolves itself."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name, _, alias = model_uri.removeprefix("models:/").partition("@")
    number = name.rpartition("/")[2]
    if not model_uri.startswith("models:/") or not (alias or number.isdigit()):
        return None
    client = mlflow.MlflowClient()
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name.rpartition("/")[0], number)
    except MlflowException as error:
        raise UserError(f"{model_uri}: not in the model registry at {mlflow.get_tracking_uri()} "
                        f"({_first_line(error)}); run the pipeline first, or pass --model") from None


def lineage(model_uri: str) -> str:
    """What `resnet-mlops lineage` prints: the version, its commit, data and params, and the
    commands that rebuild it (from the tags `train` and `register` recorded)."""
    import mlflow

    version = registered_version(model_uri)
    if version is None:
        raise UserError(f"{model_uri}: lineage is kept for registered versions; give "
                        f"models:/<name>@<alias> or models:/<name>/<version>")
    run = mlflow.MlflowClient().get_run(version.run_id)
    tags = {**run.data.tags, **version.tags}
    unknown = "not recorded"
    dirty = " (with uncommitted changes)" if tags.get("git.dirty") == "true" else ""
    lines = [f"{model_uri} = models:/{version.name}/{version.version} (run {version.run_id})",
             f"commit     {tags.get('git.commit', unknown)}{dirty}",
             f"data       {tags.get('data.source', unknown)}: data/prepared {tags.get('data.dvc_hash', unknown)} "
             f"(content {tags.get('data.content_hash', unknown)})",
             f"params     {len(run.data.params)} (hash {tags.get('params.hash', unknown)})",
             *(f"  {key} = {value}" for key, value in sorted(run.data.params.items())),
             f"reproduce  {tags.get('reproduce', unknown)}"]
    return "\n".join(lines)


def summary(layout: Layout) -> dict:
    """What was registered and the champion decision, from reports/registration.json."""
    return json.loads(layout.registration.read_text())

