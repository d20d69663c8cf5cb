"""The promotion gate's arithmetic (`registry.gate`): McNemar's exact test against hand-computed
values, the paired comparison's counts, and each check of the verdict blocking on its own.

The stage around it (real registry, real models, the fresh-process servability check) is
tests/test_register_stage.py.
"""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from resnet_mlops.config import REGISTER_DEFAULTS, RegisterSettings
from resnet_mlops.registry.gate import compare, judge, mcnemar_p_value, recalls

CLASSES = ["zero", "one", "two"]
SERVES = (True, "it serves")


def settings(**changes) -> RegisterSettings:
    return RegisterSettings(model_name="gate-tests", **{**REGISTER_DEFAULTS, **changes})


@pytest.mark.parametrize("b, c, expected", [
    (0, 0, 1.0),                      # no discordant pair: no evidence at all
    (0, 5, 1 / 32),                   # all five go the challenger's way: 2^-5
    (2, 3, (10 + 5 + 1) / 32),        # P(X >= 3), X ~ Bin(5, 1/2) = (C(5,3) + C(5,4) + C(5,5)) / 2^5
    (1, 9, (10 + 1) / 1024),          # (C(10,9) + C(10,10)) / 2^10
    (5, 0, 1.0),                      # P(X >= 0)
    (3, 20, 2048 / 2 ** 23),          # (C(23,20) + C(23,21) + C(23,22) + C(23,23)) / 2^23 = 2^-12
])
def test_mcnemar_exact_one_sided_p_values_by_hand(b, c, expected):
    assert mcnemar_p_value(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_is_the_binomial_tail_for_every_small_table():
    for b in range(12):
        for c in range(12):
            n = b + c
            tail = sum(comb(n, k) for k in range(c, n + 1)) / 2 ** n if n else 1.0
            assert mcnemar_p_value(b, c) == pytest.approx(tail, rel=1e-12), (b, c)


def test_the_comparison_counts_discordant_pairs_and_the_worst_class_drop():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    champion = np.array([0, 0, 0, 0, 1, 0, 0, 0, 2, 0])    # class 0: 4/4, class 1: 1/4, class 2: 1/2
    challenger = np.array([0, 0, 1, 1, 1, 1, 1, 1, 2, 2])  # class 0: 2/4, class 1: 4/4, class 2: 2/2
    comparison = compare(labels, challenger, champion, CLASSES)
    assert (comparison.b, comparison.c) == (2, 4)
    assert comparison.champion_accuracy == pytest.approx(0.6) and comparison.challenger_accuracy == pytest.approx(0.8)
    assert comparison.accuracy_delta == pytest.approx(0.2)
    assert comparison.p_value == pytest.approx((15 + 6 + 1) / 64)  # P(X >= 4), X ~ Bin(6, 1/2)
    assert (comparison.worst_class, comparison.worst_class_drop) == ("zero", pytest.approx(0.5))


def test_no_class_falling_is_no_worst_class():
    labels = np.array([0, 1, 2])
    comparison = compare(labels, labels, np.array([1, 1, 1]), CLASSES)
    assert (comparison.worst_class, comparison.worst_class_drop) == (None, 0.0)


def test_a_class_without_test_images_has_no_recall():
    assert np.isnan(recalls(np.array([0, 0]), np.array([0, 1]), 3)[2])


def better(b: int = 0, c: int = 12, n: int = 60):
    """A challenger right on `c` images the champion gets wrong, wrong on `b` it gets right."""
    labels = np.zeros(n, np.int64)
    champion = np.where(np.arange(n) < c, 1, 0)            # wrong on the first c
    challenger = np.where((np.arange(n) >= c) & (np.arange(n) < c + b), 1, 0)  # wrong on the next b
    return compare(labels, challenger, champion, CLASSES)


def test_a_clearly_better_challenger_is_promoted_with_its_numbers_in_the_reason():
    comparison = better()
    verdict = judge(comparison.challenger_accuracy, SERVES, settings(), champion_version=3, comparison=comparison)
    assert verdict.promote
    assert verdict.reason == ("test accuracy 1.0000 vs champion v3's 0.8000 re-scored on the same 60 images "
                              "(b=0, c=12, p=0.000244): better by McNemar's test, and no class's recall falls "
                              "past the limit")
    record = verdict.record()
    assert record["decision"] == "promoted" and record["b"] == 0 and record["c"] == 12
    assert record["p_value"] == pytest.approx(2 ** -12) and record["champion_version"] == 3


def test_noise_is_not_promoted_and_its_p_value_is_recorded():
    comparison = better(b=2, c=3)
    verdict = judge(comparison.challenger_accuracy, SERVES, settings(), champion_version=3, comparison=comparison)
    assert not verdict.promote and "McNemar's test does not show it better (p >= register.alpha 0.05)" in verdict.reason
    assert verdict.record()["p_value"] == pytest.approx(0.5)


def test_worse_is_not_promoted():
    comparison = better(b=12, c=0)
    verdict = judge(comparison.challenger_accuracy, SERVES, settings(), champion_version=3, comparison=comparison)
    assert not verdict.promote and "is not ahead by register.min_delta 0" in verdict.reason


def test_min_delta_asks_for_more_than_significance():
    comparison = better(b=0, c=6)  # +0.10, p = 2^-6
    assert judge(1.0, SERVES, settings(min_delta=0.05), 3, comparison).promote
    blocked = judge(1.0, SERVES, settings(min_delta=0.2), 3, comparison)
    assert not blocked.promote and "not ahead by register.min_delta 0.2" in blocked.reason


def test_alpha_is_the_threshold_of_the_p_value():
    comparison = better(b=0, c=5)  # p = 1/32 = 0.03125
    assert judge(1.0, SERVES, settings(alpha=0.05), 3, comparison).promote
    assert not judge(1.0, SERVES, settings(alpha=0.01), 3, comparison).promote


def test_a_class_regression_blocks_and_names_the_class():
    labels = np.repeat([0, 1, 2], 20)
    champion = np.where(np.arange(60) < 40, labels, (labels + 1) % 3)    # class 0 and 1 all right, class 2 none
    challenger = labels.copy()
    challenger[[0, 1, 2]] = 1                                           # class 0 loses 3 of 20: recall -0.15
    comparison = compare(labels, challenger, champion, CLASSES)
    assert comparison.p_value < 0.001  # a far better model overall
    verdict = judge(comparison.challenger_accuracy, SERVES, settings(), 2, comparison)
    assert not verdict.promote
    assert verdict.reason.startswith("recall of class 'zero' falls by 0.1500, more than register.max_class_drop 0.05")
    assert judge(comparison.challenger_accuracy, SERVES, settings(max_class_drop=0.2), 2, comparison).promote


def test_the_floor_blocks_even_the_first_version():
    verdict = judge(0.6, SERVES, settings(min_accuracy=0.9))
    assert not verdict.promote
    assert verdict.reason == "test accuracy 0.6000 is under the floor register.min_accuracy 0.9"
    first = judge(0.6, SERVES, settings())
    assert first.promote and first.reason == ("the first version (no champion before it): test accuracy 0.6000 passes the floor "
                                          "(register.min_accuracy 0) and it serves")


def test_a_version_that_does_not_serve_is_never_promoted_unless_forced():
    verdict = judge(1.0, (False, "models:/m/2 fails in a fresh process (exit 1): ImportError: x"), settings(), 1,
                    better())
    assert not verdict.promote and verdict.reason.startswith("it failed the servability check: models:/m/2 fails")


def test_the_champions_own_training_run_needs_only_to_serve():
    verdict = judge(0.1, SERVES, settings(), champion_version=4, same_run_as_champion=True)
    assert verdict.promote
    assert verdict.reason == "the same training run as champion v4, packaged with the current serving code"


def test_force_promotes_over_the_gate_and_says_who_and_what_the_gate_said():
    comparison = better(b=12, c=0)
    verdict = judge(0.8, SERVES, settings(force=True), 3, comparison, forced_by="ana@host at 2026-12-01T10:00:00+00:00")
    assert verdict.promote and verdict.forced_by == "ana@host at 2026-12-01T10:00:00+00:00"
    assert verdict.reason.startswith("forced by ana@host at 2026-12-01T10:00:00+00:00 (register.force: true) over "
                                     "the gate, which said: test accuracy 0.8000 vs champion v3's 1.0000")
    assert verdict.record()["forced_by"] == "ana@host at 2026-12-01T10:00:00+00:00"


def test_force_on_a_version_the_gate_promotes_anyway_is_no_override():
    verdict = judge(1.0, SERVES, settings(force=True), 3, better(), forced_by="ana@host")
    assert verdict.promote and verdict.forced_by is None
