"""The `register` stage: log the servable model, add it to the MLflow registry, run the promotion gate.

The served pyfunc (`serving/`) is logged here, into the execution's run, rather
than by `train`: registering is what it is for, and a change in the serving code
then re-registers the trained model without training it again.

In order, so that a failure leaves the registry as it was:
1. the current `@champion` is loaded and checked comparable (same image shape and classes;
   otherwise one sentence, and nothing is registered);
2. the new version is registered with its lineage and headline metrics, and the servability
   check starts in a fresh process (`servability.py`) while
3. the champion is re-scored on the current test set, through the same scorer (`rescore.py`);
4. the gate judges (`gate.py`); a promotion moves `@champion` under the registry-wide lock, only if
   the champion is still the one compared against (another `register` may have moved it
   meanwhile: then the new one is re-scored and judged again), and enters the champion history;
5. `@challenger` moves to the new version; the verdict is written, promoted or not: version tags,
   reports/promotion.json, the model card, the dashboard descriptions.

MLflow is imported inside the functions that use it: `make run` reads `summary`
after every run, and that should cost milliseconds.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from resnet_mlops import atomic
from resnet_mlops.config import Params
from resnet_mlops.dataset.prepared import read_split, read_summary
from resnet_mlops.errors import UserError
from resnet_mlops.evaluation.tables import read_probabilities, test_hashes
from resnet_mlops.project import Layout, champion_uri
from resnet_mlops.registry import champions
from resnet_mlops.registry.descriptions import model_description, version_description
from resnet_mlops.registry.gate import Verdict, judge
from resnet_mlops.registry.lock import user_at_host, utc_iso
from resnet_mlops.registry.model_card import model_card
from resnet_mlops.registry.rescore import load_comparable, rescore
from resnet_mlops.registry.servability import SAMPLE, ServabilityCheck
from resnet_mlops.registry.store import current_champion

HEADLINE = ("test_accuracy", "test_top_k_accuracy", "test_macro_f1", "test_ece", "test_loss")
_MOVE_ATTEMPTS = 5  # re-judgements when racing registrations keep moving @champion


def run(params: Params, layout: Layout) -> dict:
    """Log and register this execution's model and judge it; return `summary(layout)`."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from resnet_mlops import tracking
    from resnet_mlops.serving.pyfunc import log_classifier

    settings, name = params.register, params.register.model_name
    run_id = tracking.read_run_file(layout.run_file)["run_id"]
    try:
        metrics = json.loads(layout.metrics.read_text())
    except OSError:
        raise UserError(f"{layout.metrics} is missing; run the evaluate stage first") from None
    data = read_summary(layout.prepared)
    test = read_split(layout.prepared, "test")
    probabilities = read_probabilities(layout.predictions, test_hashes(layout.prepared))
    predictions = probabilities.argmax(axis=1)

    tracking.configure()
    client = MlflowClient()
    champion = current_champion(client, name)
    served_champion = _comparable(champion, run_id, data)  # before anything is registered
    with tracking.reopen_run(layout.run_file) as active:
        number = int(mlflow.register_model(log_classifier(layout.model_file, data["class_names"]).model_uri,
                                           name).version)
        for key, value in _version_tags(active.data.tags, run_id, metrics, data).items():
            client.set_model_version_tag(name, number, key, value)
        check = ServabilityCheck(f"models:/{name}/{number}", test.images[:SAMPLE], probabilities[:SAMPLE])
        comparison = None if served_champion is None else rescore(  # while the check runs
            served_champion, test.images, test.labels, predictions, data["class_names"])
        servability, by = check.result(), _who_and_when()

        def verdict_against(holder, comparison) -> Verdict:
            return judge(metrics["test_accuracy"], servability, settings,
                         champion_version=None if holder is None else int(holder.version), comparison=comparison,
                         same_run_as_champion=holder is not None and holder.run_id == run_id, forced_by=by)

        def rejudge(holder) -> Verdict:
            """The verdict against a champion that another registration put in place meanwhile."""
            try:
                served = _comparable(holder, run_id, data)
            except UserError as error:
                return Verdict(False, f"@champion moved to v{holder.version} meanwhile, which cannot be compared "
                                      f"with this version ({error})", metrics["test_accuracy"], servability[0])
            return verdict_against(holder, None if served is None else rescore(
                served, test.images, test.labels, predictions, data["class_names"]))

        source = f"register{' --force' if settings.force else ''} (run {run_id})"
        verdict = _promote(client, name, number, verdict_against(champion, comparison), champion, rejudge, source)
        champions.set_challenger(client, name, number)
        record = {"model_name": name, "version": number, "run_id": run_id,
                  "test_set_hash": data["splits"]["test"]["sha256"], **verdict.record()}
        for key, value in _verdict_tags(record).items():
            client.set_model_version_tag(name, number, key, value)
        client.update_model_version(name, number, version_description(verdict.promote, verdict.reason, metrics))
        holder = current_champion(client, name)
        why = verdict.reason if holder is None else holder.tags.get("champion_reason", "decided before versions "
                                                                                        "said why")
        client.update_registered_model(name, model_description(data, holder and holder.version, why))
        mlflow.set_tags({"registered_model": name, "registered_version": number,
                         "champion_decision": record["decision"], "champion_reason": verdict.reason})
        result = {"model_name": name, "version": number, "run_id": run_id, "test_accuracy": metrics["test_accuracy"],
                  "champion": verdict.promote, "reason": verdict.reason,
                  "previous_champion_version": verdict.champion_version,
                  "previous_champion_accuracy": verdict.comparison.champion_accuracy if verdict.comparison else None,
                  "model_uri": champion_uri(name)}
        with atomic.replace_together(layout.promotion, layout.model_card, layout.registration) as staged:
            atomic.write_json(staged[layout.promotion], record)
            card = model_card(data, active.data.params, active.data.tags, metrics, layout.per_class, record)
            staged[layout.model_card].write_text(card)
            atomic.write_json(staged[layout.registration], result)
            for output in (layout.promotion, layout.model_card):
                mlflow.log_artifact(str(staged[output]), artifact_path="reports")
    return summary(layout)


def _comparable(champion, run_id: str, data: dict):
    """The champion's served model to re-score, or None: no champion, or one of this very training run
    (the same weights; nothing to compare)."""
    if champion is None or champion.run_id == run_id:
        return None
    return load_comparable(champion, data)


def _promote(client, name: str, number: int, verdict: Verdict, holder, rejudge, source: str) -> Verdict:
    """Move @champion to version `number` if `verdict` says so and the champion is still `holder`;
    when another registration moved it meanwhile, judge again against the new holder."""
    for _ in range(_MOVE_ATTEMPTS):
        if not verdict.promote:
            return verdict
        try:
            champions.move_champion(client, name, number, verdict.reason, source,
                                    expected=None if holder is None else int(holder.version))
            return verdict
        except champions.ChampionChanged:
            holder = current_champion(client, name)
            verdict = rejudge(holder)
    raise UserError(f"@champion of '{name}' moved {_MOVE_ATTEMPTS} times while v{number} was judged; v{number} "
                    f"is registered but not promoted; run the register stage again")


def _who_and_when() -> str:
    """user@host at the time, UTC: who a forced promotion is recorded as (as the champion history says it)."""
    return f"{user_at_host()} at {utc_iso(datetime.now(timezone.utc))}"


def _version_tags(run_tags: dict[str, str], run_id: str, metrics: dict, data: dict) -> dict[str, str]:
    """What every version carries from the start: its run's lineage and params hash, its headline metrics."""
    from resnet_mlops import tracking

    lineage = ("git.commit", "git.dirty", "data.dvc_hash", "data.content_hash", "params.hash", "reproduce",
               tracking.FLOW_RUN_TAG, "pretrained.source", "pretrained.sha256", "pretrained.model_version")
    return {**{key: run_tags[key] for key in lineage if key in run_tags},
            "run_id": run_id, "test_set_hash": data["splits"]["test"]["sha256"],
            **{key: f"{metrics[key]:.4f}" for key in HEADLINE if key in metrics}}


def _verdict_tags(record: dict) -> dict[str, str]:
    """The gate's verdict as version tags: the decision and reason, and each number it rests on."""
    tags = {"champion_decision": record["decision"], "champion_reason": record["reason"]}
    numbers = ("p_value", "b", "c", "accuracy_delta", "worst_class", "worst_class_drop", "champion_version",
               "servable", "forced_by")
    tags.update({f"gate.{key}": _shown(record[key]) for key in numbers if record.get(key) is not None})
    return tags


def _shown(value) -> str:
    """A tag's value as the dashboard shows it: floats to 4 significant digits (reports/promotion.json
    keeps them whole)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary(layout: Layout) -> dict:
    """What was registered and the champion decision, from reports/registration.json."""
    return json.loads(layout.registration.read_text())
