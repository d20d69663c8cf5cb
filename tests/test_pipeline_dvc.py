"""`dvc repro` end to end in a temporary git repository, on the tiny config.

One test walks a realistic sequence, because every step costs several stage
processes (each imports TensorFlow): a first run, a no-op rerun, a worse config
that must not take @champion, a train-only change that must not rerun prepare,
and a `dvc exp run --temp` whose run must land in the repository's one store.
"""

from __future__ import annotations

import json
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from support.console import NOISE
from support.image_files import good_tree, image_bytes
from support.project_repo import run, write_params
from support.tracking_uri import tracking_store

pytestmark = pytest.mark.slow


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '(\w+)'", output))


def repro(repo) -> str:
    done = run(["dvc", "repro"], repo)
    return done.stdout + done.stderr


STORE_NAMES = ("mlflow.db", "mlruns", "mlartifacts")


@contextmanager
def stores_appearing(repo: Path, every_s: float = 0.1):
    """Yield a set that fills, while the block runs, with every MLflow store (by STORE_NAMES) that appears
    under `repo` besides its own: a poll, since a `dvc exp run --temp` copy is gone once it ends."""
    own = {repo / name for name in STORE_NAMES}
    skipped = own | {repo / ".dvc" / "cache"}
    found: set[Path] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(every_s):
            for folder, subfolders, files in os.walk(repo):
                here = Path(folder)
                found.update(here / name for name in (*subfolders, *files) if name in STORE_NAMES)
                subfolders[:] = [d for d in subfolders if d != ".git" and here / d not in skipped]
            found.difference_update(own)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield found
    finally:
        done.set()
        watcher.join(timeout=30)


def test_dvc_repro_end_to_end(project_repo, tiny_params):
    repo = project_repo
    client_uri = f"sqlite:///{repo.resolve()}/mlflow.db"

    # 1. First run: every stage, one MLflow run, version 1 is @champion; only our own lines on the console.
    printed = repro(repo)
    assert ran_stages(printed) == {"prepare", "train", "evaluate", "register"}
    # (Plain `dvc repro` ends with DVC's own `dvc push` hint; `make run` leaves it out, see test_run.py.)
    noise = [n for n in NOISE if n != "Use `dvc push`"]
    noisy = [line for line in printed.splitlines() if any(n in line for n in noise)]
    assert not noisy, "\n".join(noisy)
    for output in ("data/prepared/train_images.npy", "data/prepared/summary.json", "models/model.keras",
                   "models/run.json", "reports/history.csv", "reports/curves.png", "reports/metrics.json",
                   "reports/confusion.csv", "reports/confusion_matrix.png", "reports/confusion_normalised.png",
                   "reports/reliability.csv", "reports/reliability.png", "reports/mistakes.png",
                   "reports/registration.json", "reports/promotion.json", "reports/model_card.md"):
        assert (repo / output).is_file(), output
    plots = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)["data"]
    assert list(plots) == ["loss", "accuracy", "confusion", "reliability"]  # no raw-file charts, no image twice
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    prepared = json.loads((repo / "data/prepared/summary.json").read_text())
    assert 0.9 <= metrics["test_accuracy"] <= 1  # it learns: 97-98% over seeds 7-9, chance is 10%
    assert metrics["test_examples"] == prepared["splits"]["test"]["count"] > 300
    assert metrics["test_top_k_accuracy"] >= metrics["test_accuracy"] and 0 < metrics["test_macro_f1"] <= 1
    assert 0 <= metrics["test_ece"] < 0.2
    # Each test image's prediction, by content hash (the manifest's), for comparisons image by image.
    predictions = pd.read_parquet(repo / "reports/predictions.parquet")
    manifest = pd.read_parquet(repo / "data/prepared/manifest.parquet")
    assert predictions["sha256"].tolist() == manifest.loc[manifest["split"] == "test", "sha256"].tolist()
    assert (predictions["label"] == manifest.loc[manifest["split"] == "test", "label_index"].to_numpy()).all()
    probabilities = np.stack(predictions["probabilities"].to_numpy())
    assert probabilities.shape == (metrics["test_examples"], 10) and np.allclose(probabilities.sum(1), 1, atol=1e-4)
    assert (probabilities.argmax(1) == predictions["predicted"]).all()
    assert (predictions["predicted"] == predictions["label"]).mean() == pytest.approx(metrics["test_accuracy"])
    per_class = pd.read_csv(repo / "reports/per_class.csv")
    assert per_class["class"].astype(str).tolist() == prepared["class_names"]
    assert per_class["support"].sum() == metrics["test_examples"]
    assert per_class["f1"].mean() == pytest.approx(metrics["test_macro_f1"], abs=1e-5)
    shown = run(["dvc", "metrics", "show"], repo).stdout
    assert "test_accuracy" in shown

    client = MlflowClient(tracking_uri=client_uri)
    run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
    experiment = client.get_experiment_by_name("tests")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # one execution, one run, no orphans
    tracked = runs[0]
    assert tracked.info.status == "FINISHED"
    assert tracked.info.artifact_uri.startswith((repo / "mlartifacts").resolve().as_uri() + "/")
    assert not (repo / "mlruns").exists()
    assert {a.path for a in client.list_artifacts(run_id, "reports")} >= {
        "reports/history.csv", "reports/curves.png", "reports/confusion_matrix.png", "reports/metrics.json",
        "reports/per_class.csv", "reports/predictions.parquet", "reports/reliability.png", "reports/mistakes.png",
        "reports/confusion_normalised.png", "reports/promotion.json", "reports/model_card.md"}
    assert tracked.data.params["train.epochs"] == "2" and tracked.data.params["model.depth"] == "8"
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "test_accuracy"} <= set(tracked.data.metrics)
    assert len(client.get_metric_history(run_id, "val_accuracy")) == 2
    assert re.fullmatch(r"[0-9a-f]{40}", tracked.data.tags["git.commit"])
    assert tracked.data.tags["data.dvc_hash"].endswith(".dir")
    champion = client.get_model_version_by_alias("tiny-digits", "champion")
    assert str(champion.version) == "1" and champion.run_id == run_id
    assert champion.tags["champion_reason"].startswith("the first version (no champion before it): test accuracy 0.9")
    # Every version carries its lineage, params hash, run and headline metrics; the newest holds @challenger.
    for key in ("git.commit", "data.dvc_hash", "data.content_hash", "params.hash", "reproduce"):
        assert champion.tags[key] == tracked.data.tags[key], key
    assert champion.tags["run_id"] == run_id and champion.tags["test_accuracy"] == f"{metrics['test_accuracy']:.4f}"
    assert champion.tags["test_macro_f1"] == f"{metrics['test_macro_f1']:.4f}"
    assert str(client.get_model_version_by_alias("tiny-digits", "challenger").version) == "1"
    verdict = json.loads((repo / "reports/promotion.json").read_text())
    assert verdict["decision"] == "promoted" and verdict["servable"] and verdict["champion_version"] is None
    assert "Decision: **promoted**" in (repo / "reports/model_card.md").read_text()
    # In the dashboard: runs named to differ at a glance, descriptions saying who is champion and why.
    assert tracked.info.run_name == "resnet_cifar(depth=8) · digits"
    assert champion.description.startswith("promoted when registered (macro-F1 0.9") and "the first version" in (
        champion.description)
    assert client.get_registered_model("tiny-digits").description.startswith(
        "ResNet image classifier: 8x8x1 digits images into 10 classes (0, 1, 2, 3, 4, 5, 6, 7, 8, 9). "
        "@champion is version 1: the first version (no champion before it): test accuracy 0.9")
    with tracking_store(client_uri):
        served = mlflow.models.get_model_info("models:/tiny-digits/1").signature
        keras_flavor = mlflow.models.get_model_info(f"runs:/{run_id}/keras_model").signature
    assert served.inputs is None  # pixels or encoded images: the pyfunc validates them itself
    assert "top_k" in served.params.to_json() and "label" in served.outputs.input_names()
    assert list(keras_flavor.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 8, 8, 1]

    # `resnet-mlops lineage`: how the champion was made, and the commands that rebuild it.
    traced = run(["resnet-mlops", "lineage"], repo).stdout.splitlines()
    assert traced[0] == f"models:/tiny-digits@champion = models:/tiny-digits/1 (run {run_id})"
    assert traced[1] == f"commit     {tracked.data.tags['git.commit']}"
    assert f"data/prepared {tracked.data.tags['data.dvc_hash']}" in traced[2]
    assert "  train.epochs = 2" in traced and "  model.depth = 8" in traced
    assert traced[-1] == f"reproduce  {tracked.data.tags['reproduce']}"
    assert tracked.data.tags["reproduce"].startswith(f"git checkout {tracked.data.tags['git.commit']} && dvc checkout")
    unknown = run(["resnet-mlops", "lineage", "--model", "models:/tiny-digits/9"], repo, check=False)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr

    # 2. Nothing changed: no stage runs.
    again = repro(repo)
    assert ran_stages(again) == set() and "Data and pipelines are up to date" in again

    # 3. A deliberately worse config: version 2 is registered, @champion stays on version 1.
    tiny_params["train"]["learning_rate"] = 0.0
    write_params(repo, tiny_params)
    assert ran_stages(repro(repo)) == {"train", "evaluate", "register"}
    second = client.get_model_version("tiny-digits", "2")
    assert str(client.get_model_version_by_alias("tiny-digits", "champion").version) == "1"
    assert second.tags["champion_decision"] == "not promoted"
    assert " vs champion v1's " in second.tags["champion_reason"]
    assert "is not ahead by register.min_delta 0" in second.tags["champion_reason"]
    assert int(second.tags["gate.b"]) > 300 and second.tags["gate.champion_version"] == "1"
    assert str(client.get_model_version_by_alias("tiny-digits", "challenger").version) == "2"
    registration = json.loads((repo / "reports/registration.json").read_text())
    assert registration["version"] == 2 and registration["champion"] is False
    assert second.run_id == registration["run_id"] != run_id
    assert client.get_run(second.run_id).info.run_name == "train.learning_rate=0.0 · resnet_cifar(depth=8) · digits"
    assert second.description.startswith("not promoted when registered (macro-F1 ") and " vs champion v1's " in (
        second.description)
    assert "@champion is version 1: the first version" in client.get_registered_model("tiny-digits").description

    # 4. Changing train.epochs reruns train, evaluate and register, never prepare.
    tiny_params["train"]["epochs"] = 1
    write_params(repo, tiny_params)
    assert ran_stages(repro(repo)) == {"train", "evaluate", "register"}
    assert len(client.search_runs([experiment.experiment_id])) == 3

    # 5. A fix in the served model's input code reruns register alone (it logs the pyfunc that runs
    #    that code): the trained model is registered again, packaged with the fix, without training.
    last = json.loads((repo / "reports/registration.json").read_text())
    with (repo / "src/resnet_mlops/serving/inputs.py").open("a") as source:
        source.write("\n# a fix\n")
    assert set(json.loads(run(["dvc", "status", "--json"], repo).stdout)) == {"register"}
    assert ran_stages(repro(repo)) == {"register"}
    assert len(client.search_runs([experiment.experiment_id])) == 3  # no new training run
    again = json.loads((repo / "reports/registration.json").read_text())
    assert again["version"] == last["version"] + 1 and again["run_id"] == last["run_id"]
    version = client.get_model_version("tiny-digits", str(again["version"]))
    logged = client.get_logged_model(version.source.removeprefix("models:/"))  # the logged model's id
    packaged = Path(urlparse(logged.artifact_location).path)
    assert (packaged / "code/resnet_mlops/serving/inputs.py").is_file()  # the serving code travels with it
    assert again["reason"].startswith("test accuracy") and "champion v1" in again["reason"]


def test_dvc_exp_run_temp_logs_to_the_repository_store_and_says_how_to_rebuild_it(reproduced_repo):
    repo = reproduced_repo
    first = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()  # the commit the first run was made at
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "--quiet", "-m", "baseline"], repo)
    baseline = run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    with stores_appearing(repo) as elsewhere:  # DVC deletes the temp copy afterwards: watch while it runs
        run(["dvc", "exp", "run", "--temp", "-S", "train.epochs=1"], repo)
    assert elsewhere == set()
    client = MlflowClient(tracking_uri=f"sqlite:///{repo.resolve()}/mlflow.db")
    experiment = client.get_experiment_by_name("tests").experiment_id
    runs = client.search_runs([experiment], order_by=["attributes.start_time"])
    assert len(runs) == 2
    assert [r.data.params["train.epochs"] for r in runs] == ["2", "1"]
    assert not (repo / "mlruns").exists()
    assert all(r.info.artifact_uri.startswith((repo / "mlartifacts").resolve().as_uri()) for r in runs)

    tags = runs[1].data.tags
    exp_names = run(["dvc", "exp", "ls", "--name-only"], repo).stdout.split()
    assert tags["dvc.experiment"] in exp_names
    (registered,) = client.search_model_versions(f"run_id = '{runs[1].info.run_id}'")  # register, too, used it
    assert registered.name == "tiny-digits" and str(registered.version) == "2"
    assert tags["reproduce"] == f"git checkout {baseline} && dvc checkout && dvc exp run -S train.epochs=1"
    assert runs[0].data.tags["reproduce"] == f"git checkout {first} && dvc checkout && dvc repro"

    # The recorded command, run as it stands, trains the experiment's configuration again.
    run(["bash", "-c", tags["reproduce"]], repo)
    rebuilt = client.search_runs([experiment], order_by=["attributes.start_time DESC"])[0]
    assert rebuilt.info.run_id not in {r.info.run_id for r in runs}
    assert rebuilt.data.tags["params.hash"] == tags["params.hash"] != runs[0].data.tags["params.hash"]


def test_dvc_repro_on_a_dvc_tracked_image_archive(project_repo, tiny_params):
    """data.source: folder on an archive under data/raw (tracked with `dvc add`), streamed from shards."""
    import tarfile

    repo = project_repo
    images = good_tree(repo.parent / "images", per_class=12)
    with tarfile.open(repo / "data/raw/shapes.tar.gz", "w:gz") as archive:
        archive.add(images, arcname="shapes")
    run(["dvc", "add", "data/raw/shapes.tar.gz"], repo)
    tiny_params["data"] = {"source": "folder", "path": "data/raw/shapes.tar.gz", "image_size": 16,
                           "val_fraction": 0.2, "test_fraction": 0.2, "stream": True}
    write_params(repo, tiny_params)

    assert ran_stages(repro(repo)) == {"prepare", "train", "evaluate", "register"}
    summary = json.loads((repo / "data/prepared/summary.json").read_text())
    assert summary["format"] == "tfrecord" and summary["class_names"] == ["cat", "dog", "owl"]
    validation = json.loads((repo / "reports/data_validation.json").read_text())
    assert validation["kept"] == 36 and validation["problems"] == []
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["test_examples"] == summary["splits"]["test"]["count"]
    client = MlflowClient(tracking_uri=f"sqlite:///{repo.resolve()}/mlflow.db")
    run_id = json.loads((repo / "models/run.json").read_text())["run_id"]
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == client.get_run(run_id).data.tags["data.dvc_hash"][:36]

    # A new image in the tracked archive reruns prepare (and what follows).
    (images / "owl" / "new.png").write_bytes(image_bytes("PNG", seed=777))
    with tarfile.open(repo / "data/raw/shapes.tar.gz", "w:gz") as archive:
        archive.add(images, arcname="shapes")
    run(["dvc", "add", "data/raw/shapes.tar.gz"], repo)
    assert "prepare" in ran_stages(repro(repo))
