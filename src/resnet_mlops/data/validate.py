"""Validation of a source's examples, before anything is written.

File-level problems (unsafe archive entries, non-image files, empty, corrupt,
too small or too large images, files outside a class folder) arrive from the
source. This module adds the dataset-level ones: exact duplicates, the same
image under two labels, the same image in a fixed test set and in training
(leakage), classes left with no or a single image, and class imbalance.

Under `data.on_error: quarantine` problem files are listed and excluded; under
`fail` the stage stops naming the first one. Either way the full list goes to
reports/data_validation.json.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict

import numpy as np

from resnet_mlops.data.examples import NO_HINT, SPLITS, TEST, VAL, Examples, Problem, digest_prefixes


def _same_content(hashes: np.ndarray) -> list[list[int]]:
    """The groups of two or more images with the same hash (S32), in order of their first image.

    By sorting each hash's first 8 bytes, not a dict of every hash nor the hashes themselves: memory
    stays two integers per image on large datasets. Only the runs of equal prefixes (the duplicates,
    and a very rare shared prefix) are told apart by their whole hash."""
    prefixes = digest_prefixes(hashes)
    order = np.argsort(prefixes, kind="stable")  # stable: each run in file order
    prefixes.sort()
    starts = np.flatnonzero(np.concatenate([[True], prefixes[1:] != prefixes[:-1]]))
    ends = np.append(starts[1:], len(order))
    del prefixes
    groups = []
    for run in np.flatnonzero(ends - starts > 1):
        by_hash: dict[bytes, list[int]] = {}
        for i in order[starts[run]:ends[run]].tolist():
            by_hash.setdefault(hashes[i:i + 1].tobytes(), []).append(i)
        groups += [members for members in by_hash.values() if len(members) > 1]
    return sorted(groups, key=lambda members: members[0])


def _duplicates(examples: Examples) -> tuple[np.ndarray, list[Problem]]:
    keep = np.ones(len(examples.paths), dtype=bool)
    problems = []
    for members in _same_content(examples.hashes):
        labels = {examples.class_names[examples.labels[i]] for i in members}
        if len(labels) > 1:
            for i in members:
                keep[i] = False
                problems.append(Problem("conflicting_labels", examples.paths[i],
                                        f"the same image is labelled {', '.join(sorted(labels))}"))
            continue
        hints = examples.split_hints[members].tolist()
        fixed = [k for k, hint in enumerate(hints) if hint in (TEST, VAL)]
        first, first_hint = (members[fixed[0]], hints[fixed[0]]) if fixed else (members[0], hints[0])
        for i, hint in zip(members, hints):
            if i == first:
                continue
            keep[i] = False
            across = hint != first_hint
            kind = "duplicate_across_splits" if across else "duplicate"
            where = f" in {SPLITS[first_hint] if first_hint != NO_HINT else None}" if across else ""
            problems.append(Problem(kind, examples.paths[i], f"same content as {examples.paths[first]}{where}"))
    return keep, problems


def _thin_classes(examples: Examples, keep: np.ndarray) -> tuple[list[str], list[Problem]]:
    """Classes with fewer than two usable images cannot be split: drop them."""
    counts = Counter(examples.labels[keep].tolist())
    dropped, problems = [], []
    for label, name in enumerate(examples.class_names):
        if counts[label] == 0:
            dropped.append(name)
            problems.append(Problem("empty_class", name, "the class folder has no usable image"))
        elif counts[label] == 1:
            dropped.append(name)
            (only,) = np.flatnonzero(keep & (examples.labels == label))
            keep[only] = False
            problems.append(Problem("single_example_class", examples.paths[only],
                                    f"the only usable image of class {name!r}; a class needs two to be split"))
    return dropped, problems


def _relabel(examples: Examples, keep: np.ndarray, dropped: list[str]) -> Examples:
    if keep.all() and not dropped:
        return examples  # the common case: no copy of a large image array
    kept = examples.subset(keep)
    names = tuple(n for n in examples.class_names if n not in dropped)
    new_index = {examples.class_names.index(n): i for i, n in enumerate(names)}
    kept.labels = np.array([new_index[int(label)] for label in kept.labels], dtype=np.int64)
    kept.class_names = names
    return kept


def validate(examples: Examples, max_imbalance: float) -> tuple[Examples, dict, list[Problem]]:
    """The examples worth keeping, the report, and every problem found (file order)."""
    keep, duplicate_problems = _duplicates(examples)
    dropped, class_problems = _thin_classes(examples, keep)
    problems = examples.problems + duplicate_problems + class_problems
    clean = _relabel(examples, keep, dropped)

    counts = Counter(clean.labels.tolist())
    per_class = {name: counts[i] for i, name in enumerate(clean.class_names)}
    ratio = (max(per_class.values()) / min(per_class.values())) if per_class else 0.0
    report = {
        "examined": len(examples.paths) + len(examples.problems),
        "kept": len(clean.paths),
        "excluded": len(examples.paths) + len(examples.problems) - len(clean.paths),
        "classes": per_class,
        "dropped_classes": dropped,
        "imbalance_ratio": round(ratio, 3),
        "imbalanced": ratio > max_imbalance,
        "problem_counts": dict(sorted(Counter(p.kind for p in problems).items())),
        "problems": [asdict(p) for p in problems],
    }
    return clean, report, problems


def summary_lines(report: dict, limit: int = 20) -> list[str]:
    """The report as a person reads it."""
    lines = [f"validation: {report['examined']} files examined, {report['kept']} kept, "
             f"{report['excluded']} excluded; {len(report['classes'])} classes"]
    for kind, count in report["problem_counts"].items():
        lines.append(f"  {count:>6}  {kind.replace('_', ' ')}")
    for problem in report["problems"][:limit]:
        lines.append(f"  - {Problem(**problem).sentence()}")
    if len(report["problems"]) > limit:
        lines.append(f"  ... and {len(report['problems']) - limit} more in reports/data_validation.json")
    if report["imbalanced"]:
        lines.append(f"  warning: classes are imbalanced (largest/smallest = {report['imbalance_ratio']})")
    return lines
