"""The `prepare` stage: load the source, validate, split, write data/prepared/ atomically, streaming."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from resnet_mlops import atomic
from resnet_mlops.config import DataSettings, Params
from resnet_mlops.data import executors, memory
from resnet_mlops.data.cache import DecodeCache, policy_key
from resnet_mlops.data.examples import SPLITS, Examples
from resnet_mlops.data.manifest import ManifestColumns
from resnet_mlops.dataset.prepared import read_summary, write_split
from resnet_mlops.data.sources import load_source
from resnet_mlops.data.split import assign
from resnet_mlops.data.validate import summary_lines, validate
from resnet_mlops.errors import UserError
from resnet_mlops.project import Layout


def run(params: Params, layout: Layout) -> dict:
    """Prepare `data.*` into data/prepared/ and reports/data_validation.json; return `summary(layout)`."""
    prepare(params.data, params.seed, layout.prepared, layout.validation_report, layout.decode_cache)
    return summary(layout)


def summary(layout: Layout) -> dict:
    """Images per split, their shape and the prepared splits' content hash, from data/prepared/."""
    data = read_summary(layout.prepared)
    return {"splits": {name: split["count"] for name, split in data["splits"].items()},
            "image_shape": data["image_shape"], "content_hash": data["content_hash"]}


def prepare(settings: DataSettings, seed: int, out_dir: str | Path, report_path: str | Path,
            cache_dir: str | Path | None = None) -> dict:
    """Validate the source, then write the prepared dataset and the validation report.

    Both are replaced only when the stage succeeds. A run that must stop writes its
    report beside the last good one, as `<report>.failed.json`, and says so. Files already
    decoded by an earlier run are taken from the decode cache in `cache_dir` (default: `cache`
    beside `out_dir`); the images are streamed from it to the output one block at a time.
    """
    memory.map_large_buffers()
    report_path = Path(report_path)
    failed_report = report_path.with_name(f"{report_path.stem}.failed.json")
    shape = (settings.image_size, settings.image_size, settings.channels)
    with executors.executor(settings) as (pool, slots):
        # After the pool: its workers are forked before the cache's index of a large dataset is loaded.
        cache = DecodeCache(cache_dir or Path(out_dir).parent / "cache",
                            policy_key(settings.image_size, settings.channels, settings.min_size, settings.max_pixels),
                            shape)
        examples = load_source(settings, cache, pool, slots)
        memory.release_freed()
        clean, report, problems = validate(examples, settings.max_imbalance)
        del examples  # `clean` is it, or the part of it kept: one of them is held, not both
        memory.release_freed()
        report = {"source": settings.source, "path": settings.path, "test_path": settings.test_path,
                  "policy": settings.on_error, **report}
        print("\n".join(summary_lines(report)))
        try:
            split_of = _split(settings, seed, clean, problems, failed_report)
        except UserError as error:
            atomic.write_json(failed_report, {**report, "error": str(error)})
            kept = f"; {report_path} still holds the last good run's" if report_path.exists() else ""
            raise UserError(f"{error}{kept}") from None
        # Shards are framed on the workers; the arrays format is a plain copy, done here.
        in_order = functools.partial(executors.in_order, pool, slots) if settings.stream else map
        with atomic.atomic_directory(out_dir) as tmp:
            # Only the manifest needs the paths, hashes and sizes now: they wait on disk, not in memory.
            with ManifestColumns(tmp, clean) as manifest:
                pixels, labels, class_names = clean.pixels, clean.labels, clean.class_names
                del clean
                memory.release_freed()
                manifest.write(tmp / "manifest.parquet", labels, class_names, split_of)
            memory.release_freed()
            summary = _write_splits(settings, tmp, pixels, labels, class_names, split_of, in_order)
    atomic.write_json(report_path, report)
    failed_report.unlink(missing_ok=True)
    return summary


def _write_splits(settings: DataSettings, tmp: Path, pixels, labels: np.ndarray, class_names: tuple[str, ...],
                  split_of: np.ndarray, in_order) -> dict:
    """The splits (their blocks encoded by `in_order`, see dataset/prepared.write_split), summary.json
    and stats.json, into `tmp`; the summary."""
    summary = {
        "source": settings.source,
        "format": "tfrecord" if settings.stream else "arrays",
        "class_names": list(class_names),
        "image_shape": list(pixels.shape),
        "splits": {},
    }
    for code, name in enumerate(SPLITS):
        members = np.flatnonzero(split_of == code)
        images = lambda start, stop, members=members: pixels.take(members[start:stop])
        split_labels = labels[members]
        written = write_split(tmp, name, settings.stream, images, split_labels, tuple(pixels.shape),
                              moments=name == "train", in_order=in_order)
        counts = np.bincount(split_labels, minlength=len(class_names))
        summary["splits"][name] = {"count": int(len(members)), "files": written.files, "sha256": written.sha256,
                                   "per_class": {c: int(n) for c, n in zip(class_names, counts)}}
        if name == "train":
            train_moments = written.moments
    summary["content_hash"] = hashlib.sha256(
        "".join(summary["splits"][n]["sha256"] for n in SPLITS).encode()).hexdigest()
    _write_json(tmp / "summary.json", summary)
    _write_json(tmp / "stats.json", _stats(summary["splits"], train_moments))
    return summary


def _split(settings: DataSettings, seed: int, clean: Examples, problems: list, report: Path) -> np.ndarray:
    """Each image's split (int8: its index in SPLITS), or a UserError saying why this data cannot be used."""
    if problems and settings.on_error == "fail":
        raise UserError(f"{problems[0].sentence()}; {len(problems)} problem(s) in all, listed in {report} "
                        f"(set data.on_error: quarantine to exclude them and go on)")
    if len(clean.class_names) < 2:
        found = f"1 usable class ({clean.class_names[0]})" if clean.class_names else "no usable class"
        raise UserError(f"{settings.path or settings.source}: {found} found; a classifier needs at least 2 "
                        f"(see {report})")
    split_of = assign(clean.hashes, clean.split_hints, seed, settings.val_fraction, settings.test_fraction)
    empty = [name for code, name in enumerate(SPLITS) if not (split_of == code).any()]
    if empty:
        raise UserError(f"{settings.path or settings.source}: the {empty[0]} split is empty with "
                        f"{len(clean.labels)} images; use more images or larger data.val_fraction/test_fraction")
    return split_of


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _stats(splits: dict[str, dict], moments: np.ndarray) -> dict:
    """Counts per class and split; the train set's per-channel mean and std on the 0..1 scale.

    Exact: from the integer count, sum and sum of squares of the uint8 pixels, accumulated as
    the train split is written (no float copy of the dataset, no second pass over it).
    """
    mean, std = [], []
    for count, total, squares in moments.T:
        first, second = total / max(count, 1), squares / max(count, 1)
        mean.append(round(first / 255.0, 6))
        std.append(round(float(np.sqrt(max(second - first * first, 0.0))) / 255.0, 6))
    return {"counts": {name: split["per_class"] for name, split in splits.items()},
            "train_mean": mean, "train_std": std}
