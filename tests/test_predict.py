"""`resnet-mlops predict` over a folder and archives of real CIFAR-10 JPEGs, through the registered pyfunc."""

from __future__ import annotations

import json
import os
import sys
import tarfile
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from resnet_mlops.cli import main
from resnet_mlops.dataset import images
from support.image_files import huge_png, image_bytes
from support.project_repo import run
from support.served_model import (CIFAR_CLASSES, cifar_jpegs, cifar_labels, frame_records, mlflow_noise, register_model,
                                  same_predictions)
from support.tracking_uri import tracking_store

MODEL = "models:/tiny-cifar@champion"


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """(tracking URI, a folder of 20 JPEGs + a PNG + a broken file + a note, the expected answers by file name)."""
    files = cifar_jpegs(per_class=2)
    root = tmp_path_factory.mktemp("predict")
    pixels = np.stack([images.decode(data, 32, 3).pixels for _, data in files])
    uri = register_model(root / "store", "tiny-cifar", (32, 32, 3), CIFAR_CLASSES, train_on=(pixels, cifar_labels(files)))
    folder = root / "photos"
    for name, data in files:
        target = folder / "/".join(name.split("/")[2:])  # <class>/<n>.jpg
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (folder / "big.png").write_bytes(image_bytes("PNG", (70, 45), seed=1))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    (folder / "notes.txt").write_text("not an image: skipped")

    with tracking_store(uri):
        local = mlflow.pyfunc.load_model(MODEL)
        good = sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png") and p.name != "broken.jpg")
        batch = np.stack([images.decode(p.read_bytes(), 32, 3).pixels for p in good])
        answers = frame_records(local.predict(batch, params={"top_k": 3}))
    expected = {p.relative_to(folder).as_posix(): answer for p, answer in zip(good, answers)}
    return uri, folder, expected


def check(rows: list[dict], prefix: str, expected: dict) -> None:
    by_name = {row["path"].removeprefix(prefix): row for row in rows}
    assert set(by_name) == set(expected) | {"broken.jpg"}  # notes.txt is not an image file: skipped
    assert by_name["broken.jpg"]["label"] is None and "undecodable" in by_name["broken.jpg"]["error"]
    names = sorted(expected)
    assert all(by_name[name]["error"] is None for name in names)
    assert same_predictions([by_name[name] for name in names], [expected[name] for name in names])


def test_predict_a_folder_to_csv_with_the_real_command(champion, tmp_path):
    uri, folder, expected = champion
    done = run(["resnet-mlops", "predict", str(folder), "--model", MODEL, "--top-k", "3", "-o", "out.csv"], tmp_path,
               env={**os.environ, "MLFLOW_TRACKING_URI": uri})
    assert "predict: 21 images labelled, 1 could not be (see the error column); wrote out.csv" in done.stderr
    table = pd.read_csv(tmp_path / "out.csv")
    assert list(table.columns) == ["path", "label", "class_index", "probability", "top_k", "error"]
    rows = [{**row, "top_k": json.loads(row["top_k"]) if isinstance(row["top_k"], str) else None,
             "label": row["label"] if isinstance(row["label"], str) else None,
             "error": row["error"] if isinstance(row["error"], str) else None}
            for row in table.to_dict(orient="records")]
    check(rows, f"{folder}/", expected)
    assert all(len(row["top_k"]) == 3 for row in rows if row["error"] is None)


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_predict_an_archive_to_json_gives_the_folders_answers(champion, tmp_path, monkeypatch, capsys, kind):
    uri, folder, expected = champion
    archive = tmp_path / f"photos.{kind}"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as bundle:
            for path in files:
                bundle.write(path, f"photos/{path.relative_to(folder).as_posix()}")
    else:
        with tarfile.open(archive, "w:gz") as bundle:
            bundle.add(folder, "photos")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["predict", str(archive), "--model", MODEL, "--top-k", "3", "-o", str(tmp_path / "out.json")]) == 0
    rows = json.loads((tmp_path / "out.json").read_text())
    check(rows, f"{archive}/photos/", expected)
    assert "1 could not be" in capsys.readouterr().err


def test_predict_mistakes_are_one_line_before_any_work(champion, tmp_path, monkeypatch, capsys):
    uri, folder, _ = champion
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(["predict", str(folder), str(tmp_path / "missing"), "--model", MODEL]) == 2
    assert capsys.readouterr().err == f"resnet-mlops predict: error: {tmp_path / 'missing'}: no such file or folder\n"
    assert main(["predict", str(folder), "--model", MODEL, "-o", str(tmp_path / "out.xlsx")]) == 2
    assert "end it in .csv or .json" in capsys.readouterr().err
    assert main(["predict", str(folder), "--model", MODEL, "--top-k", "11"]) == 2
    assert "--top-k 11: must be from 1 to 10" in capsys.readouterr().err
    assert main(["predict", str(folder), "--model", "models:/nobody@champion"]) == 2
    assert "models:/nobody@champion: cannot load the model" in capsys.readouterr().err


def test_predict_single_files_to_stdout(champion, monkeypatch, capsys):
    uri, folder, expected = champion
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    given = [str(folder / "big.png"), str(folder / "cat" / "0000.jpg")]
    assert main(["predict", *given, "--model", MODEL, "--top-k", "3", "--format", "json"]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)
    assert [row["path"] for row in rows] == given
    assert same_predictions(rows, [expected["big.png"], expected["cat/0000.jpg"]])
    assert out.err.strip().endswith("predict: 2 images labelled, 0 could not be (see the error column)")


def test_predict_reports_an_image_over_the_pixel_limit_in_the_servings_words(champion, tmp_path, monkeypatch, capsys):
    """A 10000x10000 PNG (over Pillow's own 89 MP warning) is refused by the 50 MP serving limit, from its header."""
    uri, folder, expected = champion
    (tmp_path / "huge.png").write_bytes(huge_png(10000, 10000))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    given = [str(tmp_path / "huge.png"), str(folder / "cat" / "0000.jpg")]
    assert main(["predict", *given, "--model", MODEL, "--top-k", "3", "--format", "json"]) == 0
    huge, cat = json.loads(capsys.readouterr().out)
    assert huge["label"] is None
    assert huge["error"] == "too_many_pixels: 10000x10000 is over the limit of 50000000 pixels"
    assert cat["error"] is None and same_predictions([cat], [expected["cat/0000.jpg"]])


def test_logging_the_model_and_predicting_print_none_of_mlflows_noise(tmp_path):
    """No "Add type hints" warning, CloudPickle notice or artifact progress bar, in a fresh process each."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}
    store = tmp_path / "store"
    logging_it = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                  "from pathlib import Path\n"
                  "from support.served_model import CIFAR_CLASSES, register_model\n"
                  f"register_model(Path({str(store)!r}), 'quiet', (32, 32, 3), CIFAR_CLASSES)\n"
                  "print('logged')\n")
    logged = run([sys.executable, "-c", logging_it], tmp_path, env=env)  # pyfunc.log_classifier, as `register` calls it
    assert "logged" in logged.stdout
    assert mlflow_noise(logged.stdout + logged.stderr) == []

    (tmp_path / "one.png").write_bytes(image_bytes("PNG", (40, 30), seed=3))
    done = run(["resnet-mlops", "predict", "one.png", "--model", "models:/quiet@champion", "--top-k", "2"], tmp_path,
               env={**env, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"})
    assert done.stdout.startswith("path,label,class_index,probability,top_k,error\none.png,")
    assert done.stderr.strip().endswith("predict: 1 images labelled, 0 could not be (see the error column)")
    assert mlflow_noise(done.stdout + done.stderr) == []
