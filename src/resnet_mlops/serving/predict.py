"""`resnet-mlops predict PATH...`: label image files, folders and archives with a registered model.

It runs the same pyfunc the server runs: each file is decoded by the served
model's image policy (`serving.inputs.decode_image`, the prepare stage's), and
the pixels go to the pyfunc's `predict` in batches. A file that cannot be
decoded becomes a row with an `error` instead of stopping the run (as `prepare`
quarantines it). Inside folders and archives only image files (by extension)
are read; archives are read in place, never extracted.
"""

from __future__ import annotations

import json
import posixpath
import sys
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from resnet_mlops.dataset import archive, images
from resnet_mlops.errors import UserError
from resnet_mlops.serving.inputs import decode_image

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
COLUMNS = ["path", "label", "class_index", "probability", "top_k", "error"]
FORMATS = ("csv", "json")


@dataclass(frozen=True)
class Item:
    path: str
    data: bytes | None
    problem: str | None = None


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def check_paths(paths: Iterable[str]) -> None:
    for given in paths:
        if not Path(given).exists():
            raise UserError(f"{given}: no such file or folder")


def _entries(paths: Iterable[str]) -> Iterator[tuple[str, Callable[[], bytes] | None, str | None]]:
    """(shown path, how to read it, why it must not be read): given files as they are, image files
    inside folders and archives; other files there are not images and are passed over."""
    for given in paths:
        path = Path(given)
        if path.is_file() and not _is_archive(path):
            yield given, path.read_bytes, None
            continue
        for entry in archive.entries(path):
            shown = f"{given.rstrip('/')}/{entry.path}"
            if entry.unsafe:
                yield shown, None, f"unsafe archive entry, not read: {entry.unsafe}"
            elif not entry.is_dir and posixpath.splitext(entry.path)[1].lower() in images.EXTENSIONS:
                yield shown, entry.read, None


def items(paths: Iterable[str]) -> Iterator[Item]:
    """The images to label, in order, read as they come (an archive's entries are readable only then)."""
    for shown, read, problem in _entries(paths):
        if problem:
            yield Item(shown, None, problem)
            continue
        try:
            yield Item(shown, read())
        except OSError as exc:
            yield Item(shown, None, f"unreadable: {exc.strerror or exc}")


def count(paths: list[str]) -> int | None:
    """How many items there are, when that is cheap to know (a tar must be read through to count)."""
    if any(_is_archive(Path(p)) and not p.lower().endswith(".zip") for p in paths):
        return None
    return sum(1 for _ in _entries(paths))


def load(model_uri: str):
    import mlflow
    from mlflow.exceptions import MlflowException

    from resnet_mlops import tracking
    from resnet_mlops.serving.pyfunc import quiet_mlflow

    tracking.configure()
    try:
        with quiet_mlflow():  # no download bars: the command has its own progress bar
            return mlflow.pyfunc.load_model(model_uri)
    except MlflowException as exc:
        raise UserError(f"{model_uri}: cannot load the model from {mlflow.get_tracking_uri()} "
                        f"({exc.message.splitlines()[0]})") from None


def _batches(iterable: Iterable, size: int) -> Iterator[list]:
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def _label_batch(model, batch: list[Item], shape, max_pixels: int, top_k: int) -> list[dict]:
    rows = [{"path": item.path, "error": item.problem} for item in batch]
    pixels, decoded = [], []
    for row, item in zip(rows, batch):
        if item.problem:
            continue
        try:
            pixels.append(decode_image(item.data, shape, max_pixels))
            decoded.append(row)
        except images.BadImage as problem:
            row["error"] = f"{problem.kind}: {problem.detail}"
    if pixels:
        frame = model.predict(np.stack(pixels), params={"top_k": top_k})
        for row, prediction in zip(decoded, frame.to_dict(orient="records")):
            row.update(prediction)
    return rows


def predict(paths: list[str], model_uri: str, top_k: int | None = None, batch_size: int = 64) -> pd.DataFrame:
    """One row per image: its path, then the pyfunc's answer or the reason it has none."""
    from tqdm import tqdm

    check_paths(paths)
    model = load(model_uri)
    classifier = model.unwrap_python_model()
    top_k = classifier.default_top_k if top_k is None else top_k
    if not 1 <= top_k <= len(classifier.class_names):
        raise UserError(f"--top-k {top_k}: must be from 1 to {len(classifier.class_names)} "
                        "(the model's number of classes)")
    size = max(1, min(batch_size, classifier.limits.max_batch))
    rows = []
    with tqdm(total=count(paths), unit="image", file=sys.stderr, disable=None) as bar:
        for batch in _batches(items(paths), size):
            rows += _label_batch(model, batch, classifier.image_shape, classifier.limits.max_image_pixels, top_k)
            bar.update(len(batch))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["class_index"] = frame["class_index"].astype("Int64")
    return frame


def output_format(output: str | None, chosen: str | None) -> str:
    if chosen:
        return chosen
    if output in (None, "-"):
        return "csv"
    suffix = Path(output).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UserError(f"{output}: cannot tell the format from the name; end it in .csv or .json, or pass --format")
    return suffix


def render(frame: pd.DataFrame, fmt: str) -> str:
    """CSV (top_k as a JSON string in its cell) or JSON records (top_k as a list)."""
    if fmt == "json":
        return frame.to_json(orient="records", indent=1) + "\n"
    flat = frame.assign(top_k=[json.dumps(k) if isinstance(k, list) else None for k in frame["top_k"]])
    return flat.to_csv(index=False)


def predict_files(paths: list[str], model_uri: str, output: str | None, fmt: str | None, top_k: int | None,
                  batch_size: int) -> str:
    """The `predict` command: label, write the CSV or JSON (stdout without `output`), return a summary line."""
    from resnet_mlops import atomic

    fmt = output_format(output, fmt)  # a bad name fails before any work
    frame = predict(paths, model_uri, top_k, batch_size)
    text = render(frame, fmt)
    to_stdout = output in (None, "-")
    if to_stdout:
        sys.stdout.write(text)
    else:
        atomic.write_text(output, text)
    failed = int(frame["error"].notna().sum())
    return (f"predict: {len(frame) - failed} images labelled, {failed} could not be (see the error column)"
            + ("" if to_stdout else f"; wrote {output}"))
