"""The `prepare` stage: load the source, validate, split, write data/prepared/ atomically."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_mlops import atomic
from resnet_mlops.config import DataSettings, Params
from resnet_mlops.data.examples import Examples
from resnet_mlops.dataset.prepared import Split, read_summary, write_arrays
from resnet_mlops.dataset.tfrecords import write_tfrecords
from resnet_mlops.data.sources import load_source
from resnet_mlops.data.split import SPLITS, assign
from resnet_mlops.data.validate import summary_lines, validate
from resnet_mlops.errors import UserError
from resnet_mlops.project import Layout


def run(params: Params, layout: Layout) -> dict:
    """Prepare `data.*` into data/prepared/ and reports/data_validation.json; return `summary(layout)`."""
    prepare(params.data, params.seed, layout.prepared, layout.validation_report)
    return summary(layout)


def summary(layout: Layout) -> dict:
    """Images per split, their shape and the prepared splits' content hash, from data/prepared/."""
    data = read_summary(layout.prepared)
    return {"splits": {name: split["count"] for name, split in data["splits"].items()},
            "image_shape": data["image_shape"], "content_hash": data["content_hash"]}


def prepare(settings: DataSettings, seed: int, out_dir: str | Path, report_path: str | Path) -> dict:
    """Validate the source, then write the prepared dataset and the validation report.

    Both are replaced only when the stage succeeds. A run that must stop writes its
    report beside the last good one, as `<report>.failed.json`, and says so.
    """
    report_path = Path(report_path)
    failed_report = report_path.with_name(f"{report_path.stem}.failed.json")
    examples = load_source(settings)
    clean, report, problems = validate(examples, settings.max_imbalance)
    report = {"source": settings.source, "path": settings.path, "test_path": settings.test_path,
              "policy": settings.on_error, **report}
    print("\n".join(summary_lines(report)))
    try:
        split_of, splits = _splits(settings, seed, clean, problems, failed_report)
    except UserError as error:
        atomic.write_json(failed_report, {**report, "error": str(error)})
        kept = f"; {report_path} still holds the last good run's" if report_path.exists() else ""
        raise UserError(f"{error}{kept}") from None

    write = write_tfrecords if settings.stream else write_arrays
    summary = {
        "source": settings.source,
        "format": "tfrecord" if settings.stream else "arrays",
        "class_names": list(clean.class_names),
        "image_shape": list(clean.images.shape[1:]),
        "splits": {},
    }
    with atomic.atomic_directory(out_dir) as tmp:
        for name in SPLITS:
            files = write(tmp, name, splits[name])
            summary["splits"][name] = {**_describe(splits[name], clean.class_names), "files": files}
        summary["content_hash"] = hashlib.sha256(
            "".join(summary["splits"][n]["sha256"] for n in SPLITS).encode()).hexdigest()
        _write_json(tmp / "summary.json", summary)
        _write_json(tmp / "stats.json", _stats(summary["splits"], splits["train"].images))
        _manifest(clean, split_of).to_parquet(tmp / "manifest.parquet", index=False)
    atomic.write_json(report_path, report)
    failed_report.unlink(missing_ok=True)
    return summary


def _splits(settings: DataSettings, seed: int, clean: Examples, problems: list,
            report: Path) -> tuple[np.ndarray, dict[str, Split]]:
    """Each image's split and the splits themselves, or a UserError saying why this data cannot be used."""
    if problems and settings.on_error == "fail":
        raise UserError(f"{problems[0].sentence()}; {len(problems)} problem(s) in all, listed in {report} "
                        f"(set data.on_error: quarantine to exclude them and go on)")
    if len(clean.class_names) < 2:
        found = f"1 usable class ({clean.class_names[0]})" if clean.class_names else "no usable class"
        raise UserError(f"{settings.path or settings.source}: {found} found; a classifier needs at least 2 "
                        f"(see {report})")
    split_of = assign(clean.hashes, clean.split_hints, seed, settings.val_fraction, settings.test_fraction)
    splits = {name: Split(clean.images[split_of == name], clean.labels[split_of == name]) for name in SPLITS}
    empty = [name for name in SPLITS if len(splits[name].labels) == 0]
    if empty:
        raise UserError(f"{settings.path or settings.source}: the {empty[0]} split is empty with "
                        f"{len(clean.labels)} images; use more images or larger data.val_fraction/test_fraction")
    return split_of, splits


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _describe(split: Split, class_names: tuple[str, ...]) -> dict:
    counts = np.bincount(split.labels, minlength=len(class_names))
    return {"count": int(len(split.labels)),
            "per_class": {name: int(n) for name, n in zip(class_names, counts)},
            "sha256": split.sha256()}


def _stats(splits: dict[str, dict], train: np.ndarray) -> dict:
    """Counts per class and split; the train set's per-channel mean and std on the 0..1 scale.

    Computed exactly from per-channel histograms of the uint8 pixels: fast, and no
    float copy of the dataset.
    """
    values = np.arange(256, dtype=np.float64)
    mean, std = [], []
    for channel in range(train.shape[-1]):
        histogram = np.bincount(train[..., channel].ravel(), minlength=256).astype(np.float64)
        count = max(histogram.sum(), 1.0)
        first = (histogram * values).sum() / count
        second = (histogram * values * values).sum() / count
        mean.append(round(first / 255.0, 6))
        std.append(round(float(np.sqrt(max(second - first * first, 0.0))) / 255.0, 6))
    return {"counts": {name: split["per_class"] for name, split in splits.items()},
            "train_mean": mean, "train_std": std}


def _manifest(examples: Examples, split_of: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "path": examples.paths,
        "label": [examples.class_names[i] for i in examples.labels],
        "label_index": examples.labels,
        "split": split_of,
        "sha256": examples.hashes,
        "width": [w for w, _ in examples.sizes],
        "height": [h for _, h in examples.sizes],
    })
