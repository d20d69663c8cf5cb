"""The register stage's promotion gate, end to end: real Keras models scored by the real evaluate
stage, registered in a real SQLite MLflow registry, each new version loaded in a fresh process
by the servability check; and `resnet-mlops rollback`.

The test images are 60 blank 8x8 grey images, each with its own lit pixel, so a one-layer model
can be made to answer any image rightly or wrongly (`answering`): which images a model gets
right is set by construction, and with it every count of the gate (b, c, recalls). One test
uses a real trained model instead: one more epoch of a converged classifier of the digits.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

import resnet_mlops.serving.pyfunc
from resnet_mlops import config
from resnet_mlops.dataset.prepared import Split, write_split
from resnet_mlops.errors import UserError
from resnet_mlops.evaluation import evaluate
from resnet_mlops.models.saving import save_model
from resnet_mlops.project import Layout
from resnet_mlops.registry import champions, register, rollback
from resnet_mlops.registry.store import current_champion
from support.project_repo import TINY_PARAMS
from support.tracking_uri import tracking_store

CLASSES = ["zero", "one", "two"]
LABELS = np.repeat([0, 1, 2], 20)  # image i: its own lit pixel i, and this class


def lit_pixels(count: int = len(LABELS)) -> np.ndarray:
    images = np.zeros((count, 8, 8, 1), np.uint8)
    images.reshape(count, 64)[np.arange(count), np.arange(count)] = 255
    return images


def answering(predicted: np.ndarray, num_classes: int = len(CLASSES)):
    """A model that predicts class predicted[i] (probability 0.9999) for image i of `lit_pixels`."""
    import keras

    kernel = np.zeros((64, num_classes), np.float32)
    kernel[np.arange(len(predicted)), predicted] = 10 / 255  # the lit pixel's logit: 10
    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(num_classes, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([kernel, np.zeros(num_classes, np.float32)])
    return model


def right_on(indices, labels: np.ndarray = LABELS) -> np.ndarray:
    """Predicted classes right on exactly the images `indices`, wrong (the next class) elsewhere."""
    predicted = (labels + 1) % len(CLASSES)
    predicted[list(indices)] = labels[list(indices)]
    return predicted


def write_prepared(layout: Layout, images: np.ndarray, labels: np.ndarray, class_names=CLASSES) -> str:
    """data/prepared/ as `prepare` writes it, with only a test split; returns the test set's hash."""
    layout.prepared.mkdir(parents=True, exist_ok=True)
    split = Split(images, labels.astype(np.int64))
    files = write_split(layout.prepared, "test", False, lambda start, stop: split.images[start:stop], split.labels,
                        split.images.shape[1:]).files
    digest = split.sha256()
    pd.DataFrame({"split": "test", "sha256": [hashlib.sha256(i.tobytes()).hexdigest() for i in images]}).to_parquet(
        layout.prepared / "manifest.parquet")
    summary = {"source": "digits", "format": "arrays", "class_names": class_names,
               "image_shape": list(images.shape[1:]), "content_hash": digest,
               "splits": {"test": {"count": len(labels), "files": files, "sha256": digest}}}
    (layout.prepared / "summary.json").write_text(json.dumps(summary))
    return digest


class Project:
    """One project folder with its test set, registering under its own model name."""

    def __init__(self, folder: Path, name: str, experiment: str, **register_params):
        self.layout = Layout(folder)
        self.name, self.experiment = name, experiment
        raw = {**TINY_PARAMS, "register": {"model_name": name, **register_params}}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.yaml").write_text(yaml.safe_dump(raw))
        self.params = config.load_params(folder / "params.yaml")

    def evaluate(self, model) -> None:
        """What `train` leaves (the model file, the run) and the evaluate stage on `model`."""
        self.layout.model_file.parent.mkdir(parents=True, exist_ok=True)
        save_model(model, self.layout.model_file)
        with mlflow.start_run(experiment_id=self.experiment) as run:
            pass
        self.layout.run_file.write_text(json.dumps({"run_id": run.info.run_id}))
        evaluate.run(self.params, self.layout)

    def register(self, model, **register_params) -> dict:
        """The evaluate and register stages on `model`, as one pipeline execution; reports/promotion.json."""
        self.evaluate(model)
        params = self.params
        if register_params:
            params = Project(self.layout.root, self.name, self.experiment, **register_params).params
        register.run(params, self.layout)
        return json.loads(self.layout.promotion.read_text())

    def champion(self) -> int | None:
        holder = current_champion(MlflowClient(), self.name)
        return None if holder is None else int(holder.version)


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh SQLite registry for the test; yields its experiment's id (artifacts under tmp_path)."""
    with tracking_store(f"sqlite:///{tmp_path / 'mlflow.db'}"):
        yield mlflow.create_experiment("register-stage", artifact_location=(tmp_path / "artifacts").as_uri())


@pytest.fixture
def project(tmp_path, store, request) -> Project:
    project = Project(tmp_path / "project", request.node.name[:60], store)
    write_prepared(project.layout, lit_pixels(), LABELS)
    return project


def tags_of(name: str, version: int) -> dict:
    return MlflowClient().get_model_version(name, str(version)).tags


def test_a_first_version_then_a_clearly_better_one_are_promoted(project):
    first = project.register(answering(right_on(range(40))))
    assert first["decision"] == "promoted" and first["reason"].startswith("the first version (no champion before it)")
    second = project.register(answering(right_on(range(52))))
    assert second["decision"] == "promoted", second["reason"]
    assert (second["b"], second["c"], second["champion_version"]) == (0, 12, 1)
    assert second["p_value"] == pytest.approx(2 ** -12)
    assert project.champion() == 2
    tags = tags_of(project.name, 2)
    assert tags["champion_decision"] == "promoted" and tags["gate.c"] == "12" and tags["gate.b"] == "0"
    assert float(tags["gate.p_value"]) == pytest.approx(2 ** -12, rel=1e-3)
    assert tags["run_id"] == second["run_id"] and tags["test_accuracy"] == "0.8667"
    client = MlflowClient()
    assert int(client.get_model_version_by_alias(project.name, champions.CHALLENGER).version) == 2
    moves = champions.history(client, project.name)
    assert [(m.version, m.previous) for m in moves] == [(1, None), (2, 1)]
    card = project.layout.model_card.read_text()
    assert "Decision: **promoted**" in card and "b = 0" in card and "c = 12" in card
    description = client.get_registered_model(project.name).description
    assert "@champion is version 2:" in description


def test_a_worse_version_is_registered_but_not_promoted(project):
    project.register(answering(right_on(range(52))))
    verdict = project.register(answering(right_on(range(40))))
    assert verdict["decision"] == "not promoted" and (verdict["b"], verdict["c"]) == (12, 0)
    assert "is not ahead by register.min_delta 0" in verdict["reason"]
    assert project.champion() == 1
    assert int(MlflowClient().get_model_version_by_alias(project.name, champions.CHALLENGER).version) == 2
    assert tags_of(project.name, 2)["champion_decision"] == "not promoted"


def test_a_change_at_the_noise_level_is_not_promoted_and_its_p_value_is_recorded(project):
    project.register(answering(right_on(range(40))))
    verdict = project.register(answering(right_on([*range(2, 40), 40, 41, 42])))  # loses 2, gains 3
    assert verdict["decision"] == "not promoted" and (verdict["b"], verdict["c"]) == (2, 3)
    assert verdict["p_value"] == pytest.approx(0.5) and verdict["accuracy_delta"] > 0
    assert float(tags_of(project.name, 2)["gate.p_value"]) == pytest.approx(0.5)
    assert project.champion() == 1


def test_a_class_regression_blocks_and_names_the_class(project):
    project.register(answering(right_on(range(40))))  # classes zero and one all right, two all wrong
    verdict = project.register(answering(right_on(range(3, 60))))  # zero loses 3 of 20, two gains 20
    assert verdict["decision"] == "not promoted" and verdict["p_value"] < 0.001
    assert verdict["reason"].startswith("recall of class 'zero' falls by 0.1500, more than register.max_class_drop")
    assert tags_of(project.name, 2)["gate.worst_class"] == "zero"


def test_force_promotes_a_worse_version_and_records_who_and_when(project):
    project.register(answering(right_on(range(52))))
    verdict = project.register(answering(right_on(range(40))), force=True)
    assert verdict["decision"] == "promoted" and verdict["forced_by"]
    assert verdict["reason"].startswith(f"forced by {verdict['forced_by']} (register.force: true) over the gate, "
                                        f"which said: test accuracy")
    assert project.champion() == 2
    last = champions.history(MlflowClient(), project.name)[-1]
    assert last.version == 2 and "--force" in last.source


def test_the_floor_blocks_a_first_version(project):
    verdict = project.register(answering(right_on(range(40))), min_accuracy=0.9)
    assert verdict["decision"] == "not promoted"
    assert verdict["reason"] == "test accuracy 0.6667 is under the floor register.min_accuracy 0.9"
    assert project.champion() is None


def test_the_champion_is_re_scored_on_the_current_test_set_not_trusted(project):
    project.register(answering(right_on(range(40))))  # 0.6667 on this test set, recorded in its tags
    assert tags_of(project.name, 1)["test_accuracy"] == "0.6667"
    # The test set changes: the same images, relabelled so that the champion is right on 20 of them.
    labels = LABELS.copy()
    labels[20:40] = 2
    new_hash = write_prepared(project.layout, lit_pixels(), labels)
    challenger = np.where(np.arange(60) < 30, labels, (labels + 1) % 3)  # right on the first 30 only
    verdict = project.register(answering(challenger))
    assert verdict["champion_accuracy"] == pytest.approx(20 / 60)  # re-scored, not the recorded 0.6667
    assert verdict["test_set_hash"] == new_hash and (verdict["b"], verdict["c"]) == (0, 10)
    assert verdict["decision"] == "promoted", verdict["reason"]


class OnlyThisProcessKnows(resnet_mlops.serving.pyfunc.ResNetClassifier):
    """A pyfunc class importable from this test module only: a fresh process cannot unpickle it."""


def test_a_version_that_fails_in_a_fresh_process_is_registered_but_not_promoted(project, monkeypatch):
    project.register(answering(right_on(range(40))))
    monkeypatch.setattr(resnet_mlops.serving.pyfunc, "ResNetClassifier", OnlyThisProcessKnows)
    verdict = project.register(answering(right_on(range(60))))  # far better, but it does not serve
    assert verdict["decision"] == "not promoted" and verdict["servable"] is False
    assert verdict["reason"].startswith(f"it failed the servability check: models:/{project.name}/2 fails in a "
                                        f"fresh process")
    assert "test_register_stage" in verdict["reason"]  # the module the fresh process could not import
    assert project.champion() == 1 and tags_of(project.name, 2)["gate.servable"] == "False"


def test_rollback_restores_the_previous_champion_and_refuses_one_that_does_not_serve(project, monkeypatch):
    client = MlflowClient()
    project.register(answering(right_on(range(40))))
    project.register(answering(right_on(range(52))))
    monkeypatch.setattr(resnet_mlops.serving.pyfunc, "ResNetClassifier", OnlyThisProcessKnows)
    project.register(answering(right_on(range(60))))  # v3: registered, does not serve
    assert project.champion() == 2

    said = rollback.rollback(client, project.name, None, project.layout)
    assert said.startswith(f"@champion of '{project.name}': v2 -> v1 (models:/{project.name}/1 loads in a fresh")
    assert project.champion() == 1
    moves = champions.history(client, project.name)
    assert [(m.version, m.previous, m.source) for m in moves][1:] == [(2, 1, moves[1].source), (1, 2, "rollback")]
    shown = rollback.show(client, project.name, with_history=True)
    assert shown.startswith(f"models:/{project.name}@champion = v1 (since ") and "rolled back from v2" in shown

    with pytest.raises(UserError) as refused:
        rollback.rollback(client, project.name, 3, project.layout)
    assert str(refused.value).startswith(f"refused: models:/{project.name}/3 fails in a fresh process")
    assert str(refused.value).endswith("@champion stays on v1")
    assert project.champion() == 1 and len(champions.history(client, project.name)) == 3


def test_registering_the_champions_own_training_run_again_promotes_it(project):
    project.register(answering(right_on(range(40))))
    run_file = project.layout.run_file.read_text()
    register.run(project.params, project.layout)  # only the register stage again: a serving-code fix
    assert project.layout.run_file.read_text() == run_file
    verdict = json.loads(project.layout.promotion.read_text())
    assert verdict["decision"] == "promoted" and verdict["same_run_as_champion"]
    assert project.champion() == 2


def test_one_more_epoch_of_a_converged_model_is_not_promoted(tmp_path, store):
    """A real one: a softmax classifier of the digits trained to convergence, then trained one epoch more."""
    import keras
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 16).clip(0, 255).astype(np.uint8)[..., None]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train, test = order[:1400], order[1400:]
    project = Project(tmp_path / "digits", "digits-converged", store)
    write_prepared(project.layout, images[test], digits.target[test], [str(d) for d in range(10)])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images[train], digits.target[train], epochs=150, batch_size=128, verbose=0)
    first = project.register(model)
    model.fit(images[train], digits.target[train], epochs=1, batch_size=128, verbose=0)
    verdict = project.register(model)
    assert first["accuracy"] > 0.9
    assert verdict["decision"] == "not promoted", verdict["reason"]
    assert verdict["p_value"] >= 0.05 and verdict["b"] + verdict["c"] <= 6
    assert float(tags_of("digits-converged", 2)["gate.p_value"]) == pytest.approx(verdict["p_value"], rel=1e-3)


@pytest.mark.slow
def test_two_register_processes_racing_through_a_real_mlflow_server_crown_one(tmp_path):
    """Two `resnet-mlops register` processes, started together against one `mlflow server`, each with
    a challenger far better than the champion (the same predictions, two training runs). Exactly one
    takes @champion; the other, judged again against the winner (nothing between them), is not
    promoted; no version is lost; the history agrees with the alias. Without the lock and the
    re-check both would compare against v1 and both move the alias."""
    from support.mlflow_server import mlflow_server

    with mlflow_server(tmp_path / "server") as uri, tracking_store(uri):
        experiment = mlflow.create_experiment("race")
        client = MlflowClient()
        for round_ in range(2):
            name = f"race-{round_}"
            champion = Project(tmp_path / f"{name}-champion", name, experiment)
            write_prepared(champion.layout, lit_pixels(), LABELS)
            champion.register(answering(right_on(range(30))))
            racers = [Project(tmp_path / f"{name}-{side}", name, experiment) for side in ("a", "b")]
            for racer in racers:
                write_prepared(racer.layout, lit_pixels(), LABELS)
                racer.evaluate(answering(right_on(range(60))))
            processes = [subprocess.Popen([str(Path(sys.executable).parent / "resnet-mlops"), "register"],
                                          cwd=racer.layout.root, env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                         for racer in racers]
            outputs = [process.communicate(timeout=300)[0] for process in processes]
            assert [process.returncode for process in processes] == [0, 0], outputs
            verdicts = [json.loads(racer.layout.promotion.read_text()) for racer in racers]
            assert sorted(v["version"] for v in verdicts) == [2, 3]  # no version lost
            winners = [v for v in verdicts if v["decision"] == "promoted"]
            losers = [v for v in verdicts if v["decision"] != "promoted"]
            assert len(winners) == len(losers) == 1, [v["reason"] for v in verdicts]
            winner, loser = winners[0], losers[0]
            assert winner["champion_version"] == 1 and (winner["b"], winner["c"]) == (0, 30)
            assert loser["champion_version"] == winner["version"] and (loser["b"], loser["c"]) == (0, 0)
            assert champion.champion() == winner["version"]
            assert [(m.version, m.previous) for m in champions.history(client, name)] == [
                (1, None), (winner["version"], 1)]
            assert int(client.get_model_version_by_alias(name, champions.CHALLENGER).version) == 3
