"""What the MLflow dashboard shows of the registry: one line per version, and the registered model's description."""

from __future__ import annotations


def version_description(promoted: bool, reason: str, metrics: dict) -> str:
    """One line for the version's page in the MLflow dashboard: its decision when registered (true for
    good: a later move of @champion does not make it stale) and its headline numbers (the reason
    gives the accuracy)."""
    verdict = "promoted" if promoted else "not promoted"
    return (f"{verdict} when registered (macro-F1 {metrics['test_macro_f1']:.4f}, ECE {metrics['test_ece']:.4f}, "
            f"{metrics['test_examples']} test images): {reason}")


def model_description(data: dict, champion_version, why: str) -> str:
    """The registered model's description: what it classifies, and which version is champion and why."""
    shape = "x".join(map(str, data["image_shape"]))
    what = (f"ResNet image classifier: {shape} {data['source']} images into "
            f"{describe_classes(data['class_names'])}.")
    return with_champion(what, champion_version, why)


def with_champion(description: str, champion_version, why: str) -> str:
    """`description` with its closing sentence on the champion (if any) replaced by one naming this
    one (None: no version holds it, `why` says why not)."""
    what = description.split(_CHAMPION_SENTENCE)[0].split(_NO_CHAMPION_SENTENCE)[0].rstrip()
    if champion_version is None:
        return f"{what}{_NO_CHAMPION_SENTENCE}{why}."
    return f"{what}{_CHAMPION_SENTENCE}{champion_version}: {why}."


_CHAMPION_SENTENCE = " @champion is version "
_NO_CHAMPION_SENTENCE = " No version holds @champion yet; the last one registered was not promoted: "


def describe(shape, classes) -> str:
    return f"{'x'.join(map(str, shape))} images of {describe_classes(classes)}"


def describe_classes(classes) -> str:
    names = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    return f"{len(classes)} classes ({names})"
