"""The promotion gate: whether a challenger takes `@champion`, judged image by image.

Both models' predictions on the *current* test set are paired per image. Test accuracy
alone would crown noise: on 364 test images one image is 0.27 points, so a retrain that
changes nothing real would beat the champion about half the time. McNemar's exact test
looks only at the discordant pairs, the images exactly one of the two gets right:

    b = images the champion gets right and the challenger wrong
    c = images the challenger gets right and the champion wrong

Under "neither is better" each discordant image is a fair coin, so c ~ Binomial(b + c, 1/2);
the one-sided p-value is P(X >= c), the chance of the challenger winning at least this many of
them by luck. No discordant pair (b = c = 0) is no evidence at all: p = 1.

The challenger is promoted only when every check passes (`register.*` params): the
servability check, the accuracy floor, accuracy >= champion's + min_delta, p < alpha, and no
class's recall falling by more than max_class_drop. `force` promotes regardless and says
what the gate would have said. This module is numbers in, verdict out: no MLflow, no models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from resnet_mlops.config import RegisterSettings


def mcnemar_p_value(b: int, c: int) -> float:
    """McNemar's exact one-sided p-value that the challenger (right on the `c` discordant
    images) is better than the champion (right on the `b`): P(X >= c), X ~ Binomial(b + c, 1/2)."""
    from scipy.stats import binomtest  # here: SciPy takes a second to import, and `summary` must not

    if b + c == 0:
        return 1.0
    return float(binomtest(c, b + c, 0.5, alternative="greater").pvalue)


def recalls(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Each class's recall (NaN for a class without test images)."""
    support = np.bincount(labels, minlength=num_classes).astype(float)
    hits = np.bincount(labels[predictions == labels], minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, hits / support, np.nan)


@dataclass(frozen=True)
class Comparison:
    """The challenger against the champion on one test set, image by image."""

    examples: int
    challenger_accuracy: float
    champion_accuracy: float
    b: int                      # the champion right, the challenger wrong
    c: int                      # the challenger right, the champion wrong
    p_value: float
    worst_class: str | None     # the class whose recall falls the most (None: none falls)
    worst_class_drop: float     # that fall (0.0 when none falls)

    @property
    def accuracy_delta(self) -> float:
        return self.challenger_accuracy - self.champion_accuracy


def compare(labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray, class_names: list[str]) -> Comparison:
    """Pair two models' predicted classes (`challenger`, `champion`) on the same test images."""
    labels, challenger, champion = (np.asarray(a, np.int64) for a in (labels, challenger, champion))
    challenger_right, champion_right = challenger == labels, champion == labels
    drops = recalls(labels, champion, len(class_names)) - recalls(labels, challenger, len(class_names))
    worst = int(np.nanargmax(drops)) if np.any(drops > 0) else None
    b = int(np.sum(champion_right & ~challenger_right))
    c = int(np.sum(challenger_right & ~champion_right))
    return Comparison(examples=int(len(labels)),
                      challenger_accuracy=float(challenger_right.mean()),
                      champion_accuracy=float(champion_right.mean()),
                      b=b, c=c, p_value=mcnemar_p_value(b, c),
                      worst_class=None if worst is None else class_names[worst],
                      worst_class_drop=0.0 if worst is None else float(drops[worst]))


@dataclass(frozen=True)
class Verdict:
    """The gate's decision, its one-sentence reason, and every number it rests on."""

    promote: bool
    reason: str
    accuracy: float
    servable: bool
    champion_version: int | None = None   # the champion judged against (None: there was none)
    comparison: Comparison | None = None  # None: no champion, or one of the same training run
    forced_by: str | None = None          # who forced it (register.force), and when
    same_run_as_champion: bool = False

    def record(self) -> dict:
        """The verdict as reports/promotion.json holds it (flat numbers for tags and reports)."""
        compared = asdict(self.comparison) if self.comparison else {}
        if self.comparison:
            compared["accuracy_delta"] = self.comparison.accuracy_delta
        return {"decision": "promoted" if self.promote else "not promoted", "reason": self.reason,
                "accuracy": self.accuracy, "servable": self.servable, "forced_by": self.forced_by,
                "same_run_as_champion": self.same_run_as_champion, **compared,
                "champion_version": self.champion_version}


def judge(accuracy: float, servability: tuple[bool, str], settings: RegisterSettings,
          champion_version: int | None = None, comparison: Comparison | None = None,
          same_run_as_champion: bool = False, forced_by: str | None = None) -> Verdict:
    """The verdict on a challenger of test `accuracy`, given the servability check's (passed, why), the
    gate's thresholds, and the current champion (None: there is none) with the `comparison` against it.
    A version of the champion's own training run (the same weights, newer serving code) needs only to
    serve. `forced_by` (who and when) is recorded only when register.force overrides the gate."""
    servable, why_not = servability
    promote, reason = _checks(accuracy, servable, why_not, settings, champion_version, comparison,
                              same_run_as_champion)
    if settings.force and not promote:
        return Verdict(True, f"forced by {forced_by} (register.force: true) over the gate, which said: {reason}",
                       accuracy, servable, champion_version, comparison, forced_by, same_run_as_champion)
    return Verdict(promote, reason, accuracy, servable, champion_version, comparison, None, same_run_as_champion)


def _checks(accuracy: float, servable: bool, why_not_servable: str, settings: RegisterSettings,
            champion_version: int | None, comparison: Comparison | None,
            same_run_as_champion: bool) -> tuple[bool, str]:
    """(promote, the reason in one sentence): the first check that fails, or why all pass."""
    if not servable:
        return False, f"it failed the servability check: {why_not_servable}"
    if accuracy < settings.min_accuracy:
        return False, f"test accuracy {accuracy:.4f} is under the floor register.min_accuracy {settings.min_accuracy:g}"
    if champion_version is None:
        return True, (f"the first version (no champion before it): test accuracy {accuracy:.4f} passes the floor "
                      f"(register.min_accuracy {settings.min_accuracy:g}) and it serves")
    champion = f"champion v{champion_version}"
    if same_run_as_champion or comparison is None:
        return True, f"the same training run as {champion}, packaged with the current serving code"
    numbers = (f"{accuracy:.4f} vs {champion}'s {comparison.champion_accuracy:.4f} re-scored on the same "
               f"{comparison.examples} images (b={comparison.b}, c={comparison.c}, p={comparison.p_value:.3g})")
    if comparison.accuracy_delta < settings.min_delta:
        return False, f"test accuracy {numbers} is not ahead by register.min_delta {settings.min_delta:g}"
    if comparison.p_value >= settings.alpha:
        return False, (f"test accuracy {numbers}: McNemar's test does not show it better "
                       f"(p >= register.alpha {settings.alpha:g})")
    if comparison.worst_class_drop > settings.max_class_drop:
        return False, (f"recall of class '{comparison.worst_class}' falls by {comparison.worst_class_drop:.4f}, "
                       f"more than register.max_class_drop {settings.max_class_drop:g} (test accuracy {numbers})")
    return True, f"test accuracy {numbers}: better by McNemar's test, and no class's recall falls past the limit"
