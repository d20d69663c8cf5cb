"""reports/model_card.md: what a registered version is, how it was made, how good it is, what it is for.

After Mitchell et al., "Model Cards for Model Reporting" (2019), cut to what this pipeline
knows for certain: every figure comes from the stage outputs of this execution, nothing is
typed in by hand.
"""

from __future__ import annotations

import csv
from pathlib import Path

_SPLITS = ("train", "val", "test")
_RECIPE = ("train.preset", "train.epochs", "train.batch_size", "train.optimizer", "train.learning_rate",
           "train.schedule", "train.weight_decay", "train.label_smoothing", "train.augment.crop",
           "train.augment.flip", "seed")


def model_card(data: dict, run_params: dict[str, str], run_tags: dict[str, str], metrics: dict,
               per_class_csv: Path, verdict: dict) -> str:
    """The card as Markdown, from the prepared data's summary, the params and tags the training run
    logged (flat: `train.epochs`), the test metrics, the per-class table and the promotion gate's
    verdict (reports/promotion.json)."""
    name, version = verdict["model_name"], verdict["version"]
    shape = "x".join(map(str, data["image_shape"]))
    model = run_params.get("model.name", "not recorded")
    options = ", ".join(f"{key.removeprefix('model.')}={value}" for key, value in sorted(run_params.items())
                        if key.startswith("model.") and key not in ("model.name", "model.pretrained"))
    recipe = ", ".join(f"{key} {run_params[key]}" for key in _RECIPE if run_params.get(key) not in (None, "None"))
    lines = [
        f"# Model card: {name} v{version}",
        "",
        f"ResNet image classifier of {shape} images into {len(data['class_names'])} classes, trained by "
        f"resnet-mlops (MLflow run `{verdict['run_id']}`).",
        "",
        "## Data",
        "",
        f"- Source: `{data['source']}`; content hash `{data['content_hash']}`; test-set hash "
        f"`{verdict['test_set_hash']}`.",
        "- Splits (by each image's content hash and the seed, so adding images never moves an old one):",
        "",
        "| split | images |",
        "|---|---|",
        *(f"| {split} | {data['splits'][split]['count']} |" for split in _SPLITS if split in data["splits"]),
        "",
        "## Model and recipe",
        "",
        f"- Model: `{model}`{f' ({options})' if options else ''}.",
        f"- Starting weights: {starting_weights(run_tags)}.",
        f"- Recipe: {recipe or 'not recorded'} (every param: the MLflow run's Parameters).",
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {key} | {_figure(value)} |" for key, value in metrics.items()),
        "",
        "Per class:",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
        *_per_class_rows(per_class_csv),
        "",
        "## Calibration",
        "",
        f"Expected calibration error (top label, equal-width confidence bins): "
        f"{metrics['test_ece']:.4f}: on average the stated confidence and the accuracy at that confidence "
        f"differ by that much (reports/reliability.png shows it per bin).",
        "",
        "## Promotion gate",
        "",
        f"- Decision: **{verdict['decision']}**. {verdict['reason'][0].upper()}{verdict['reason'][1:]}.",
        *_gate_numbers(verdict),
        f"- Servability check (loaded in a fresh process, answers compared): "
        f"{'passed' if verdict['servable'] else 'failed'}.",
        *([f"- Forced by {verdict['forced_by']}."] if verdict.get("forced_by") else []),
        "",
        "## Intended use and limits",
        "",
        f"- For images like the test set's: {data['source']} images, brought to {shape} pixels by the "
        f"pipeline's image policy. Its figures hold for that distribution only.",
        "- Classes outside the list below are never predicted; an image of anything else is still given one "
        "of these labels, often with high confidence.",
        f"- Classes: {', '.join(data['class_names'])}.",
        "- Not evaluated for fairness, robustness to corruptions or adversarial input.",
        "",
    ]
    return "\n".join(lines)


def starting_weights(tags: dict[str, str]) -> str:
    """Where a run's training started from, from its `pretrained.*` tags (training/pretrained.py)."""
    source = tags.get("pretrained.source")
    if source is None:
        return "random initialisation"
    version = tags.get("pretrained.model_version")
    of_version = f", {version} of run {tags.get('pretrained.run_id')}" if version else ""
    return f"{source} (sha256 {tags.get('pretrained.sha256')}{of_version})"


def _figure(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _per_class_rows(path: Path) -> list[str]:
    with Path(path).open(newline="") as handle:
        return [f"| {row['class']} | {float(row['precision']):.4f} | {float(row['recall']):.4f} | "
                f"{float(row['f1']):.4f} | {row['support']} |" for row in csv.DictReader(handle)]


def _gate_numbers(verdict: dict) -> list[str]:
    if verdict.get("champion_version") is None:
        return ["- There was no champion to compare with."]
    if "b" not in verdict:
        return [f"- Compared with champion v{verdict['champion_version']}: the same training run."]
    return [f"- Against champion v{verdict['champion_version']} re-scored on the same {verdict['examples']} test "
            f"images: accuracy {verdict['champion_accuracy']:.4f} -> {verdict['challenger_accuracy']:.4f} "
            f"(delta {verdict['accuracy_delta']:+.4f}).",
            f"- McNemar's exact test (one-sided): b = {verdict['b']} images only the champion gets right, "
            f"c = {verdict['c']} only this version gets right, p = {verdict['p_value']:.4g}.",
            "- Largest fall of one class's recall: "
            + (f"{verdict['worst_class_drop']:.4f} ({verdict['worst_class']})." if verdict["worst_class"] else "none.")]
