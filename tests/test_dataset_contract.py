"""The data paths' promises, checked against expectations computed without the project's helpers.

- EXIF orientation: a photo stored sideways or upside down becomes the model's pixels upright, in
  the decoder, in serving and in `prepare`: the expected pixels come from plain Pillow
  (`support/images_by_pillow.py`) and, coarser, from numpy rotations of the source pixels.
- TFRecord shards: a split written as several shards is read back whole, every example exactly
  once (`read_split`), and streamed every example exactly once per epoch (`streaming_dataset`,
  also across epochs repeated as the trainer repeats it), in an order the seed fixes and that
  changes from epoch to epoch. The expectation is the same data prepared as plain arrays.
- `data.max_imbalance`: a folder source whose largest/smallest class ratio exceeds it is flagged
  in reports/data_validation.json; one at or under it is not.
- The checkpoint fingerprint, through the real trainer (in-process, on the tiny digits repository):
  a training that died after its first epoch's checkpoint is resumed when nothing changed, and
  started afresh (new MLflow run) when the learning rate or the prepared data changed. No other
  test covers the changed case: test_checkpoints.py tests `Checkpoints` with hand-made
  fingerprints, test_training_resume.py resumes a killed process with unchanged params.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import yaml
from PIL import Image

from resnet_mlops.config import load_params
from resnet_mlops.data import prepare
from resnet_mlops.dataset import images, tfrecords
from resnet_mlops.dataset.prepared import read_split, read_summary
from resnet_mlops.project import Layout
from resnet_mlops.serving.inputs import decode_image
from resnet_mlops.training import inputs, trainer
from support.images_by_pillow import UPRIGHT_ROT90, jpeg_with_orientation, policy_pixels
from support.tracking_uri import restored_tracking_uri

SPLITS = ("train", "val", "test")


def params_file(folder: Path, params: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def random_png(seed: int, size: tuple[int, int] = (12, 12)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


# --- EXIF orientation -------------------------------------------------------------------------------

QUADRANTS = {"top left": (220, 30, 30), "top right": (30, 200, 40),
             "bottom left": (40, 40, 210), "bottom right": (235, 235, 235)}


def four_colours(width: int = 32, height: int = 16) -> np.ndarray:
    """A landscape RGB image of four flat quadrants, each of its own colour."""
    pixels = np.zeros((height, width, 3), np.uint8)
    half_h, half_w = height // 2, width // 2
    pixels[:half_h, :half_w] = QUADRANTS["top left"]
    pixels[:half_h, half_w:] = QUADRANTS["top right"]
    pixels[half_h:, :half_w] = QUADRANTS["bottom left"]
    pixels[half_h:, half_w:] = QUADRANTS["bottom right"]
    return pixels


def quadrant_centres(pixels: np.ndarray) -> np.ndarray:
    """The mean colour of the middle of each quadrant of a square image (away from the edges that
    JPEG and the resize blur), as [[top left, top right], [bottom left, bottom right]]."""
    half = pixels.shape[0] // 2
    inner = slice(half // 4, half - half // 4)
    return np.array([[pixels[r * half:(r + 1) * half, c * half:(c + 1) * half][inner, inner]
                      .reshape(-1, pixels.shape[2]).mean(axis=0) for c in (0, 1)] for r in (0, 1)])


@pytest.mark.parametrize("channels", [3, 1], ids=["rgb", "grey"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied_before_the_resize_as_pillow_would(orientation, channels):
    stored = four_colours()
    data = jpeg_with_orientation(stored, orientation)
    decoded = images.decode(data, 16, channels)

    expected = policy_pixels(data, 16, channels)
    assert decoded.pixels.shape == expected.shape == (16, 16, channels)
    assert decoded.pixels.dtype == np.uint8
    difference = np.abs(decoded.pixels.astype(int) - expected.astype(int))
    assert difference.max() <= 3 and difference.mean() <= 1  # same JPEG, decoders may round differently
    assert (decoded.width, decoded.height) == (32, 16)  # the size as stored in the file

    # Independently of any decoder: the source turned upright by numpy, then stretched to 16 x 16.
    upright = np.rot90(stored, UPRIGHT_ROT90[orientation])
    reference = np.asarray(Image.fromarray(np.ascontiguousarray(upright)).convert("L" if channels == 1 else "RGB")
                           .resize((16, 16), Image.Resampling.BILINEAR), dtype=np.uint8)
    reference = reference[..., np.newaxis] if channels == 1 else reference
    assert np.abs(quadrant_centres(decoded.pixels) - quadrant_centres(reference)).max() <= 12

    served = decode_image(data, (16, 16, channels), max_pixels=10_000)  # serving's path to the same pixels
    assert np.array_equal(served, decoded.pixels)


def test_each_orientation_gives_a_different_picture():
    """The premise of the test above: the four quadrants land in a different place for each tag."""
    layouts = {orientation: quadrant_centres(images.decode(jpeg_with_orientation(four_colours(), orientation),
                                                           16, 3).pixels).round(-1).tolist()
               for orientation in UPRIGHT_ROT90}
    assert len({json.dumps(layout) for layout in layouts.values()}) == len(UPRIGHT_ROT90)


def test_prepare_stores_a_sideways_photo_upright(tmp_path, tiny_params):
    root = tmp_path / "photos"
    for index, label in enumerate(("a", "b")):
        (root / label).mkdir(parents=True)
        for i in range(8):
            (root / label / f"{i}.png").write_bytes(random_png(seed=100 * index + i))
    sideways = jpeg_with_orientation(four_colours(), 6)
    (root / "a" / "sideways.jpg").write_bytes(sideways)
    tiny_params["data"] = {"source": "folder", "path": str(root), "image_size": 16, "channels": 3,
                           "val_fraction": 0.2, "test_fraction": 0.2, "workers": 1}
    params = load_params(params_file(tmp_path, tiny_params))
    layout = Layout(root=tmp_path)
    prepare.run(params, layout)
    assert json.loads(layout.validation_report.read_text())["kept"] == 17  # every file, the photo too

    prepared = np.concatenate([read_split(layout.prepared, name).images for name in SPLITS]).astype(int)
    upright, unturned = policy_pixels(sideways, 16, 3), np.asarray(
        Image.fromarray(four_colours()).resize((16, 16), Image.Resampling.BILINEAR))
    closest = np.abs(prepared - upright.astype(int)).max(axis=(1, 2, 3)).min()
    assert closest <= 3
    assert np.abs(prepared - unturned.astype(int)).max(axis=(1, 2, 3)).min() > 50  # not stored as it lay


# --- TFRecord shards --------------------------------------------------------------------------------

SHARD_EXAMPLES = 100  # digits: 12 train shards, 3 val shards, 4 test shards


def fingerprints(images_: np.ndarray, labels: np.ndarray) -> list[str]:
    """One hash per example (its pixels and label), in the order given."""
    return [hashlib.sha256(image.tobytes() + int(label).to_bytes(8, "little")).hexdigest()
            for image, label in zip(images_, labels, strict=True)]


def epoch_of(batches) -> list[str]:
    return [h for images_, labels in batches for h in fingerprints(np.asarray(images_), np.asarray(labels))]


@pytest.fixture(scope="module")
def prepared_two_ways(tmp_path_factory) -> tuple[Path, Path]:
    """The digits prepared with the same seed as arrays and as TFRecord shards of SHARD_EXAMPLES."""
    folder = tmp_path_factory.mktemp("shards")
    data = {"source": "digits", "path": None, "val_fraction": 0.15, "test_fraction": 0.2}
    params = {"seed": 7, "mlflow": {"experiment": "tests"}, "model": {"name": "resnet_cifar", "depth": 8},
              "train": {"epochs": 1, "batch_size": 64, "learning_rate": 0.01, "optimizer": "adam"},
              "evaluate": {}, "register": {"model_name": "tiny"}}
    arrays = load_params(params_file(folder / "arrays", {**params, "data": data}))
    shards = load_params(params_file(folder / "shards", {**params, "data": {**data, "stream": True}}))
    prepare.run(arrays, Layout(root=folder / "arrays"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tfrecords, "SHARD_EXAMPLES", SHARD_EXAMPLES)  # the shard size: configuration
        prepare.run(shards, Layout(root=folder / "shards"))
    return Layout(root=folder / "arrays").prepared, Layout(root=folder / "shards").prepared


def test_the_splits_are_written_as_several_shards(prepared_two_ways):
    _, shards = prepared_two_ways
    summary = read_summary(shards)
    for name in SPLITS:
        count, files = summary["splits"][name]["count"], summary["splits"][name]["files"]
        assert len(files) == -(-count // SHARD_EXAMPLES) >= 3, (name, files)
        assert all((shards / file).is_file() for file in files)


@pytest.mark.parametrize("split", SPLITS)
def test_read_split_gives_every_example_of_every_shard_exactly_once(prepared_two_ways, split):
    arrays, shards = prepared_two_ways
    written = read_split(arrays, split)
    expected = fingerprints(written.images, written.labels)
    assert len(set(expected)) == len(expected)  # the premise: "exactly once" can be told apart

    read = read_split(shards, split)
    assert read.images.dtype == np.uint8 and read.images.shape == written.images.shape
    assert sorted(fingerprints(read.images, read.labels)) == sorted(expected)


def test_read_split_gives_a_sharded_split_in_the_order_it_was_written(prepared_two_ways):
    arrays, shards = prepared_two_ways
    written, read = read_split(arrays, "test"), read_split(shards, "test")
    assert read.sha256() == read_summary(shards)["splits"]["test"]["sha256"] == written.sha256()


def test_streaming_gives_every_example_once_per_epoch_in_a_new_order_each_epoch(prepared_two_ways):
    arrays, shards = prepared_two_ways
    written = read_split(arrays, "train")
    expected = sorted(fingerprints(written.images, written.labels))

    dataset = inputs.streaming_dataset(shards, "train", 64, seed=5)
    first, second = epoch_of(dataset.as_numpy_iterator()), epoch_of(dataset.as_numpy_iterator())
    assert sorted(first) == expected and sorted(second) == expected
    assert first != second  # reshuffled for the second epoch
    assert first != sorted(first) and first != fingerprints(written.images, written.labels)  # shuffled at all

    again = inputs.streaming_dataset(shards, "train", 64, seed=5)
    assert epoch_of(again.as_numpy_iterator()) == first  # the same seed, the same order
    other = inputs.streaming_dataset(shards, "train", 64, seed=6)
    assert epoch_of(other.as_numpy_iterator()) != first


def test_repeated_as_the_trainer_repeats_it_each_epochs_steps_hold_every_example_once(prepared_two_ways):
    arrays, shards = prepared_two_ways
    written = read_split(arrays, "train")
    expected = sorted(fingerprints(written.images, written.labels))
    batch_size = 64
    steps = -(-len(expected) // batch_size)  # the trainer's steps_per_epoch
    stream = inputs.streaming_dataset(shards, "train", batch_size, seed=5).repeat()
    batches = list(stream.take(2 * steps).as_numpy_iterator())
    first, second = epoch_of(batches[:steps]), epoch_of(batches[steps:])
    assert sorted(first) == expected and sorted(second) == expected  # no epoch spills into the next
    assert first != second


# --- data.max_imbalance -----------------------------------------------------------------------------


@pytest.mark.parametrize("counts, max_imbalance, flagged", [
    ((24, 8), 2.0, True),    # 3.0 > 2
    ((16, 8), 2.0, False),   # 2.0: at the limit is not over it
    ((12, 8), 2.0, False),   # 1.5
    ((24, 8), 4.0, False),   # the same data under a looser limit
], ids=["over", "at-the-limit", "under", "looser-limit"])
def test_a_class_ratio_over_max_imbalance_is_flagged_in_the_validation_report(tmp_path, tiny_params, capsys,
                                                                             counts, max_imbalance, flagged):
    root = tmp_path / "classes"
    for index, (label, count) in enumerate(zip(("big", "small"), counts)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            (root / label / f"{i:02d}.png").write_bytes(random_png(seed=100 * index + i))
    tiny_params["data"] = {"source": "folder", "path": str(root), "image_size": 8, "channels": 3,
                           "val_fraction": 0.25, "test_fraction": 0.25, "workers": 1,
                           "max_imbalance": max_imbalance}
    layout = Layout(root=tmp_path)
    prepare.run(load_params(params_file(tmp_path, tiny_params)), layout)

    report = json.loads(layout.validation_report.read_text())
    assert layout.validation_report == tmp_path / "reports" / "data_validation.json"
    assert report["problems"] == [] and report["classes"] == {"big": counts[0], "small": counts[1]}
    assert report["imbalance_ratio"] == counts[0] / counts[1]
    assert report["imbalanced"] is flagged
    assert ("warning: classes are imbalanced" in capsys.readouterr().out) is flagged


# --- the checkpoint fingerprint, end to end -----------------------------------------------------------


class TrainingKilled(Exception):
    """Stands for the process dying: raised by the batch stream half-way through the second epoch."""


def wait_until(condition, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


@pytest.fixture
def interrupted(project_repo, monkeypatch) -> Iterator[dict]:
    """The tiny digits repository, prepared, whose 2-epoch training died in its second epoch, after the
    first epoch's checkpoint was written; yields that checkpoint's state.json. The batch stream is
    the one seam: it yields the trainer's real batches, then raises, as a killed process would stop."""
    monkeypatch.chdir(project_repo)
    # The trainer's `tracking.configure()` sets MLFLOW_TRACKING_URI (to the repository's store); recorded
    # here, so that monkeypatch puts the variable back as it was before the test.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "recorded")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    layout = Layout()
    params = load_params("params.yaml")
    prepare.run(params, layout)
    steps = -(-read_summary(layout.prepared)["splits"]["train"]["count"] // params.train.batch_size)
    real_batches = inputs.endless_batches

    def dying_batches(*args, **kwargs):
        for index, batch in enumerate(real_batches(*args, **kwargs)):
            if index == steps + steps // 2:
                raise TrainingKilled("killed in epoch 2")
            yield batch

    with restored_tracking_uri():
        with monkeypatch.context() as patch, pytest.raises(Exception) as died:
            patch.setattr(inputs, "endless_batches", dying_batches)
            trainer.run(params, layout)
        assert "killed in epoch 2" in str(died.value)
        first = layout.checkpoints / "epoch-0001"
        wait_until(first.is_dir, "the first epoch's checkpoint is written")  # written in the background
        assert not layout.model_file.exists() and not (layout.checkpoints / "epoch-0002").exists()
        yield json.loads((first / "state.json").read_text())


def history_rows(layout: Layout) -> list[dict]:
    with layout.history.open(newline="") as handle:
        return list(csv.DictReader(handle))


def train_again(params_change: dict | None = None) -> tuple[dict, dict]:
    """Optionally change params.yaml (and re-prepare when the data section changed), train to the end;
    return the run's record (models/run.json) and its MLflow tags."""
    import mlflow

    layout = Layout()
    raw = yaml.safe_load(Path("params.yaml").read_text())
    for section, values in (params_change or {}).items():
        raw[section].update(values)
    Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params("params.yaml")
    if "data" in (params_change or {}):
        before = read_summary(layout.prepared)["content_hash"]
        prepare.run(params, layout)
        assert read_summary(layout.prepared)["content_hash"] != before  # the premise: other data
    trainer.run(params, layout)
    record = json.loads(layout.run_file.read_text())
    return record, mlflow.get_run(record["run_id"]).data.tags


def test_an_interrupted_training_resumes_from_its_checkpoint_when_nothing_changed(interrupted, capsys):
    capsys.readouterr()
    record, tags = train_again()
    assert "train: resuming after epoch 1" in capsys.readouterr().out
    assert record["run_id"] == interrupted["run_id"]  # the dead attempt's run, continued
    assert tags["train.attempt"] == "2" and tags["train.resumed_from_epoch"] == "1"
    rows = history_rows(Layout())
    assert len(rows) == 2
    assert float(rows[0]["loss"]) == pytest.approx(interrupted["history"]["loss"][0], abs=1e-6)  # not retrained
    assert not Layout().checkpoints.exists()


@pytest.mark.parametrize("change", [{"train": {"learning_rate": 0.02}}, {"data": {"val_fraction": 0.2}}],
                         ids=["learning-rate", "prepared-data"])
def test_an_interrupted_training_starts_afresh_when_its_fingerprint_changed(interrupted, capsys, change):
    capsys.readouterr()
    record, tags = train_again(change)
    assert "resuming" not in capsys.readouterr().out
    assert record["run_id"] != interrupted["run_id"]  # a run of its own, not the dead attempt's
    assert tags["train.attempt"] == "1" and "train.resumed_from_epoch" not in tags
    rows = history_rows(Layout())
    assert len(rows) == 2
    assert float(rows[0]["loss"]) != pytest.approx(interrupted["history"]["loss"][0], abs=1e-6)  # retrained
    assert not Layout().checkpoints.exists()
