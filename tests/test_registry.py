"""The champion rule of the register stage (`registry.decide`), every branch, against a real registry.

A new version takes `@champion` when there is no champion, when it comes from the champion's own
training run, or when its test accuracy beats the champion's on the same test set; a tie or worse
does not. A champion scored on another test set is re-scored on this one first, by running its
registered model, and the rule then uses that figure. The reason names the champion version and
where its figure came from.

The store is a real SQLite MLflow registry holding real registered versions of two tiny pyfuncs
(logged by `serving.pyfunc.log_classifier`, as the register stage logs them) whose accuracy on
the test split below is known by construction (and a champion that cannot be compared, or
cannot be read, stops the stage in one sentence before anything is registered):
    reads_pixels  predicts the class whose marker pixel is lit: right on 6 of 8 images (0.75)
    always_2      predicts class 2 whatever the image: right on 4 of 8 (0.5)
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from resnet_mlops.dataset.prepared import Split, write_arrays
from resnet_mlops.errors import UserError
from resnet_mlops.models.saving import save_model
from resnet_mlops.project import CHAMPION, Layout
from resnet_mlops.registry import Decision, current_champion, decide
from resnet_mlops.serving.pyfunc import log_classifier
from support.served_model import free_port
from support.tracking_uri import tracking_store

CLASSES = ["zero", "one", "two"]
MARKERS = [0, 0, 1, 1, 2, 2, 0, 1]  # the class each image's lit pixel stands for
LABELS = [0, 0, 1, 1, 2, 2, 2, 2]   # the truth: the last two images' markers lie
ACCURACY = {"reads_pixels": 0.75, "always_2": 0.5}
OTHER_TEST_SET = "0" * 64  # the test_set_hash of a test set that is not this one
ANOTHER_RUN = "f" * 32


@dataclass(frozen=True)
class Store:
    uri: str
    layout: Layout
    test_hash: str
    model_uris: dict[str, str]  # model -> its logged model's URI
    run_ids: dict[str, str]     # model -> the run that logged it


def marked_images() -> Split:
    images = np.zeros((len(MARKERS), 8, 8, 1), np.uint8)
    for index, marker in enumerate(MARKERS):
        images[index, 0, marker, 0] = 255
    return Split(images, np.array(LABELS, np.int64))


def write_prepared(layout: Layout, split: Split) -> str:
    """data/prepared/ with only a test split, and its summary.json as `prepare` writes it."""
    layout.prepared.mkdir(parents=True)
    files = write_arrays(layout.prepared, "test", split)
    digest = split.sha256()
    counts = np.bincount(split.labels, minlength=len(CLASSES))
    summary = {"source": "digits", "format": "arrays", "class_names": CLASSES,
               "image_shape": list(split.images.shape[1:]),
               "splits": {"test": {"count": len(split.labels), "files": files, "sha256": digest,
                                   "per_class": {name: int(n) for name, n in zip(CLASSES, counts)}}},
               "content_hash": digest}
    (layout.prepared / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return digest


def tiny_model(kernel: np.ndarray, bias: np.ndarray):
    """8x8x1 pixels (0..255) -> softmax over 3 classes by one dense layer with these weights."""
    import keras

    inputs = keras.Input((8, 8, 1))
    dense = keras.layers.Dense(len(CLASSES), activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model


def models() -> dict:
    reads_pixels = np.zeros((64, 3))
    for marker in range(3):
        reads_pixels[marker, marker] = 1.0  # the lit pixel of row 0, column `marker`
    return {"reads_pixels": tiny_model(reads_pixels, np.zeros(3)),
            "always_2": tiny_model(np.zeros((64, 3)), np.array([0.0, 0.0, 5.0]))}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    folder = tmp_path_factory.mktemp("registry")
    layout = Layout(root=folder)
    split = marked_images()
    test_hash = write_prepared(layout, split)
    model_uris, run_ids = {}, {}
    with tracking_store(f"sqlite:///{folder / 'mlflow.db'}") as uri:
        experiment = mlflow.create_experiment("registry-tests", artifact_location=(folder / "mlartifacts").as_uri())
        for name, model in models().items():
            probabilities = model.predict(split.images.astype(np.float32), verbose=0)
            assert (probabilities.argmax(1) == split.labels).mean() == ACCURACY[name]  # the premise
            keras_file = folder / f"{name}.keras"
            save_model(model, keras_file)
            with mlflow.start_run(experiment_id=experiment) as run:
                model_uris[name] = log_classifier(keras_file, CLASSES).model_uri
            run_ids[name] = run.info.run_id
    return Store(uri, layout, test_hash, model_uris, run_ids)


@pytest.fixture
def client(store) -> MlflowClient:
    with tracking_store(store.uri):
        yield MlflowClient()


def register(client: MlflowClient, store: Store, versions: list[str], champion: int | None = None,
             tags: dict[str, str] | None = None):
    """Register `versions` (model names, as v1, v2, ...) under a new name; give version number
    `champion` the alias and `tags`. Returns what the registry now holds as champion."""
    name = f"tiny-{uuid.uuid4().hex[:12]}"
    for model in versions:
        mlflow.register_model(store.model_uris[model], name)
    if champion is not None:
        for key, value in (tags or {}).items():
            client.set_model_version_tag(name, str(champion), key, value)
        client.set_registered_model_alias(name, CHAMPION, str(champion))
    return current_champion(client, name)


def test_a_model_never_registered_has_no_champion_and_its_first_version_is_promoted(client, store):
    assert current_champion(client, "never-registered") is None
    assert decide(0.1, ANOTHER_RUN, None, store.layout, store.test_hash) == Decision(True, "no champion yet")


def test_versions_none_of_which_holds_the_alias_are_no_champion(client, store):
    champion = register(client, store, ["reads_pixels", "always_2"])
    assert champion is None
    assert decide(0.1, ANOTHER_RUN, champion, store.layout, store.test_hash).promote


def test_a_version_of_the_champions_own_training_run_is_promoted_whatever_its_accuracy(client, store):
    champion = register(client, store, ["always_2", "reads_pixels"], champion=2,
                        tags={"test_set_hash": store.test_hash, "test_accuracy": "0.75"})
    assert champion.run_id == store.run_ids["reads_pixels"]  # the premise: the version knows its run

    decision = decide(0.0, store.run_ids["reads_pixels"], champion, store.layout, store.test_hash)
    assert decision.promote and decision.champion_version == champion.version == 2
    assert decision.reason == "the same training run as champion v2, packaged with the current serving code"


def test_better_accuracy_than_the_champions_recorded_on_the_same_test_set_is_promoted(client, store):
    # The recorded 0.5 is what counts, not the 0.75 a re-score would give: 0.6 beats only the former.
    champion = register(client, store, ["always_2", "reads_pixels", "always_2"], champion=2,
                        tags={"test_set_hash": store.test_hash, "test_accuracy": "0.5"})
    decision = decide(0.6, ANOTHER_RUN, champion, store.layout, store.test_hash)
    assert decision == Decision(True, "test accuracy 0.6000 beats champion v2's 0.5000 (recorded on the same "
                                      "test set)", champion.version, 0.5)


@pytest.mark.parametrize("accuracy", [0.5, 0.4], ids=["equal", "worse"])
def test_equal_or_worse_accuracy_on_the_same_test_set_is_not_promoted(client, store, accuracy):
    champion = register(client, store, ["always_2", "reads_pixels"], champion=2,
                        tags={"test_set_hash": store.test_hash, "test_accuracy": "0.5"})
    decision = decide(accuracy, ANOTHER_RUN, champion, store.layout, store.test_hash)
    assert decision == Decision(False, f"test accuracy {accuracy:.4f} does not beat champion v2's 0.5000 "
                                       f"(recorded on the same test set)", champion.version, 0.5)


@pytest.mark.parametrize("recorded, accuracy, promote", [
    (0.9, 0.8, True),    # beats the re-scored 0.75, though not the 0.9 recorded on the other test set
    (0.5, 0.7, False),   # beats the recorded 0.5, but not the re-scored 0.75
    (0.5, 0.75, False),  # ties the re-scored figure
], ids=["beats-the-re-score", "does-not-beat-the-re-score", "ties-the-re-score"])
def test_a_champion_scored_on_another_test_set_is_re_scored_on_this_one(client, store, recorded, accuracy,
                                                                        promote):
    # v1 and v3 would re-score 0.5: the figure 0.75 is the champion's (v2) own model, run on this test set.
    champion = register(client, store, ["always_2", "reads_pixels", "always_2"], champion=2,
                        tags={"test_set_hash": OTHER_TEST_SET, "test_accuracy": repr(recorded)})
    decision = decide(accuracy, ANOTHER_RUN, champion, store.layout, store.test_hash)
    verdict = "beats" if promote else "does not beat"
    assert decision == Decision(promote, f"test accuracy {accuracy:.4f} {verdict} champion v2's 0.7500 "
                                         f"(re-scored on this test set)", champion.version, 0.75)


def test_a_champion_without_a_recorded_accuracy_is_re_scored(client, store):
    champion = register(client, store, ["reads_pixels"], champion=1, tags={"test_set_hash": store.test_hash})
    decision = decide(0.7, ANOTHER_RUN, champion, store.layout, store.test_hash)
    assert decision == Decision(False, "test accuracy 0.7000 does not beat champion v1's 0.7500 (re-scored "
                                       "on this test set)", champion.version, 0.75)


def other_data(tmp_path, class_names: list[str]) -> Layout:
    """A prepared test split of the same 8x8x1 images whose classes have other names."""
    layout = Layout(root=tmp_path)
    write_prepared(layout, marked_images())
    summary = json.loads((layout.prepared / "summary.json").read_text())
    (layout.prepared / "summary.json").write_text(json.dumps({**summary, "class_names": class_names}))
    return layout


def test_a_champion_of_another_class_set_is_refused_in_one_sentence(client, store, tmp_path):
    champion = register(client, store, ["reads_pixels"], champion=1, tags={"test_set_hash": OTHER_TEST_SET})
    with pytest.raises(UserError) as refused:
        decide(0.9, ANOTHER_RUN, champion, other_data(tmp_path, ["a", "b", "c"]), "another test set")
    assert str(refused.value) == (
        f"champion v1 of '{champion.name}' takes 8x8x1 images of 3 classes (zero, one, two), this data has "
        f"8x8x1 images of 3 classes (a, b, c): they cannot be compared on one test set; nothing was registered "
        f"(set another register.model_name for this data)")


def test_a_champion_that_no_longer_loads_is_named_in_one_sentence(client, store, tmp_path):
    save_model(models()["always_2"], tmp_path / "broken.keras")
    with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name("registry-tests").experiment_id):
        uri = log_classifier(tmp_path / "broken.keras", CLASSES).model_uri
    name = f"broken-{uuid.uuid4().hex[:12]}"
    version = mlflow.register_model(uri, name)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    logged = client.get_logged_model(uri.removeprefix("models:/"))
    (Path(logged.artifact_location.removeprefix("file://")) / "artifacts" / "broken.keras").unlink()  # its weights
    with pytest.raises(UserError) as refused:
        decide(0.9, ANOTHER_RUN, current_champion(client, name), store.layout, store.test_hash)
    message = str(refused.value)
    assert message.startswith(f"champion v1 of '{name}' no longer loads (") and "\n" not in message
    assert message.endswith("nothing was registered (fix or move @champion, or set another register.model_name)")


def test_an_unreachable_registry_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with tracking_store(address), pytest.raises(UserError) as refused:
        current_champion(MlflowClient(), "any-model")
    message = str(refused.value)
    assert message.startswith(f"the model registry at {address} could not be read (") and "\n" not in message
    assert message.endswith("); nothing was registered")
