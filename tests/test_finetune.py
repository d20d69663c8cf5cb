"""Fine-tuning from pretrained weights (issue 16): `model.pretrained`, the head-then-whole recipe, lineage.

Real Keras networks and files throughout: a keras.applications network's random weights saved
by the test (no download), a `.keras` model of ours, a version registered in a real MLflow store,
and the real `resnet-mlops train` process killed and resumed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from resnet_mlops.config import ModelSettings, load_params
from resnet_mlops.errors import ConfigError, UserError
from support.project_repo import copy_project, kill_training_at, run, write_params
from support.tracking_uri import tracking_store


def one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


def saved_source(path: Path, classes: int = 3):
    """A ResNet-8 of ours for 8x8 grey images with a scaling of its own and batch norms unlike a fresh
    one's, saved as `path` (.keras)."""
    from resnet_mlops.models import build_model
    from resnet_mlops.models.saving import save_model

    model = build_model("resnet_cifar", (8, 8, 1), classes, depth=8, mean=0.5, std=0.25)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            size = layer.gamma.shape
            layer.set_weights([rng.uniform(0.5, 1.5, size), rng.normal(0, 0.1, size), rng.normal(0, 0.1, size),
                               rng.uniform(0.5, 1.5, size)])
    save_model(model, path)
    return model


@pytest.mark.parametrize("model, train, key", [
    ({"pretrained": None}, {"head_epochs": 2}, "train.head_epochs"),  # a frozen random backbone
    ({"pretrained": "x.keras"}, {"epochs": 3, "head_epochs": 4}, "train.head_epochs"),
    ({"pretrained": "x.keras"}, {"finetune_lr_factor": 0}, "train.finetune_lr_factor"),
    ({"pretrained": "imagenet"}, {}, "model.pretrained"),  # resnet_cifar: keras.applications has none
    ({"pretrained": ""}, {}, "model.pretrained"),
])
def test_bad_fine_tuning_keys_are_named(tmp_path, tiny_params, model, train, key):
    tiny_params["model"].update(model)
    tiny_params["train"].update(train)
    with pytest.raises(ConfigError) as error:
        load_params(write_params(tmp_path, tiny_params))
    assert key in one_line(error)


def test_the_finetune_preset_trains_the_head_then_the_whole_network_slower(tmp_path, tiny_params):
    from resnet_mlops.training.model import HEAD, WHOLE, Phase, phases

    tiny_params["model"]["pretrained"] = "models:/tiny-digits@champion"
    tiny_params["train"] = {"preset": "finetune"}
    params = load_params(write_params(tmp_path, tiny_params))
    assert params.model.pretrained == "models:/tiny-digits@champion" and "pretrained" not in params.model.options
    plan = phases(params.train)
    assert [(p.name, p.first_epoch, p.end_epoch) for p in plan] == [(HEAD, 0, 1), (WHOLE, 1, 10)]
    assert plan[1].recipe(params.train).learning_rate == pytest.approx(0.5 * params.train.learning_rate)
    assert plan[1].recipe(params.train).epochs == 9
    tiny_params["train"] = {"epochs": 4}  # no head phase: one phase, the recipe as it is
    assert phases(load_params(write_params(tmp_path, tiny_params)).train) == [Phase(WHOLE, 0, 4, 1.0)]


def test_a_keras_applications_weights_file_loads_with_its_scaling(tmp_path):
    """keras.applications' ResNet50V2 without its top, random weights saved by the test: every layer
    but our new classifier takes them, and the model scales its input as v2 weights expect."""
    import keras

    from resnet_mlops.training.pretrained import pretrained_classifier, starting_weights

    theirs = keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path / "resnet50v2.weights.h5"
    theirs.save_weights(path)
    settings = ModelSettings("resnet50v2", {}, str(path))
    start = starting_weights(settings, (32, 32, 3))
    assert start.preprocessing["preprocessing"] == "tf" and len(start.tags()["pretrained.sha256"]) == 64
    ours = pretrained_classifier(settings, start, (32, 32, 3), 4)
    assert ours.get_layer("preprocess").mode == "tf"
    for name in ("conv1_conv", "conv3_block2_2_bn", "post_bn"):
        for mine, other in zip(ours.get_layer(name).get_weights(), theirs.get_layer(name).get_weights()):
            np.testing.assert_array_equal(mine, other)

    with pytest.raises(UserError) as error:  # an explicit other scaling
        pretrained_classifier(ModelSettings("resnet50v2", {"preprocessing": "caffe"}, str(path)), start, (32, 32, 3), 4)
    assert "model.preprocessing is 'caffe'" in one_line(error) and "preprocessing 'tf'" in one_line(error)

    gray = tmp_path / "gray.weights.h5"
    keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(32, 32, 1)).save_weights(gray)
    with pytest.raises(UserError) as error:
        starting_weights(ModelSettings("resnet50v2", {}, str(gray)), (32, 32, 3))
    assert "weights for 1-channel images but the data have 3 channels" in one_line(error)


def test_a_keras_model_of_ours_starts_a_new_task(tmp_path):
    """Same architecture, another class count: all but the classifier copied, the scaling taken from the
    file; another depth, another channel count or a conflicting scaling is one line naming the problem."""
    from resnet_mlops.training.pretrained import pretrained_classifier, starting_weights

    path = tmp_path / "animals.keras"
    source = saved_source(path)
    settings = ModelSettings("resnet_cifar", {"depth": 8}, str(path))
    start = starting_weights(settings, (8, 8, 1))
    ours = pretrained_classifier(settings, start, (8, 8, 1), 5)
    assert (ours.get_layer("preprocess").mean, ours.get_layer("preprocess").std) == (0.5, 0.25)
    for layer in source.layers:
        if layer.weights and layer.name != "predictions":
            for mine, other in zip(ours.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(mine, other)
    assert ours.get_layer("predictions").get_weights()[0].shape == (64, 5)

    failures = [
        (ModelSettings("resnet_cifar", {"depth": 14}, str(path)), (8, 8, 1), "not the same architecture"),
        (settings, (8, 8, 3), "trained on 1-channel images but the data have 3"),
        (ModelSettings("resnet_cifar", {"depth": 8, "std": 0.5}, str(path)), (8, 8, 1),
         "model.std is 0.5 but model.pretrained"),
    ]
    for wrong, shape, message in failures:
        with pytest.raises(UserError) as error:
            pretrained_classifier(wrong, start, shape, 5)
        assert message in one_line(error) and "model." in one_line(error)
    with pytest.raises(UserError) as error:
        starting_weights(ModelSettings("resnet_cifar", {"depth": 8}, str(tmp_path / "gone.keras")), (8, 8, 1))
    assert "gone.keras is not a file" in one_line(error)


def test_imagenet_offline_says_which_file_is_missing_and_where_it_goes(tmp_path, monkeypatch):
    import socket

    from keras.src.backend import config as keras_config

    from resnet_mlops.training.pretrained import starting_weights

    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
        pytest.skip("online: keras would download the ImageNet weights")
    except OSError:
        pass
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))  # an empty Keras cache
    with pytest.raises(UserError) as error:
        starting_weights(ModelSettings("resnet50", {}, "imagenet"), (32, 32, 3))
    assert f"resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5 in Keras' cache {tmp_path}" in one_line(error)


def test_the_head_phase_changes_the_head_only_and_the_whole_phase_trains_everything(tmp_path, tiny_params):
    """Phase one: every variable but the classifier's as it was, batch-norm moving statistics included
    (a frozen batch norm runs in inference mode); phase two: every variable moves."""
    from resnet_mlops.training.model import compile_phase, phases, training_model
    from resnet_mlops.training.pretrained import starting_weights

    saved_source(tmp_path / "source.keras")
    tiny_params["model"]["pretrained"] = str(tmp_path / "source.keras")
    tiny_params["train"] = {"epochs": 2, "head_epochs": 1, "batch_size": 16, "learning_rate": 0.01}
    params = load_params(write_params(tmp_path, tiny_params))
    model, classifier = training_model(params, (8, 8, 1), 3, 4, start=starting_weights(params.model, (8, 8, 1)))
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)
    labels = np.eye(3, dtype="float32")[rng.integers(0, 3, 64)]

    def values():
        return {variable.path: variable.numpy() for variable in classifier.variables}

    before = values()
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    head = values()
    moved = {path for path in before if not np.array_equal(before[path], head[path])}
    assert moved == {"predictions/kernel", "predictions/bias"}
    assert any(path.endswith("moving_mean") for path in before)

    compile_phase(model, classifier, params.train, phases(params.train)[1], 4)
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    whole = values()
    assert not [path for path in head if np.array_equal(head[path], whole[path])]


@pytest.mark.slow
def test_a_killed_finetune_from_a_registered_version_resumes_in_its_phase_and_records_where_it_started(
        tmp_path, tiny_params, monkeypatch):
    """Pretrain, register the run's model, fine-tune from `models:/tiny-digits/1` (head 2 epochs, whole
    4 more); killed in the whole phase and started again, it resumes in that phase and ends with the
    weights of an uninterrupted fine-tune, in one run whose tags and `lineage` name the version."""
    import mlflow

    from resnet_mlops.models.saving import load_model
    from resnet_mlops.registry.lineage import lineage

    pretrain = copy_project(tmp_path / "pretrain", tiny_params)
    run(["resnet-mlops", "prepare"], pretrain)
    store = f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    run(["resnet-mlops", "train"], pretrain, env=env)
    pretrain_run = json.loads((pretrain / "models/run.json").read_text())["run_id"]
    with tracking_store(store):
        mlflow.register_model(f"runs:/{pretrain_run}/keras_model", "tiny-digits")

    tiny_params["model"]["pretrained"] = "models:/tiny-digits/1"
    tiny_params["train"] = {"epochs": 6, "head_epochs": 2, "batch_size": 32, "learning_rate": 0.01,
                            "deterministic": True, "augment": {"crop": 1}}
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for folder in (whole, killed):
        shutil.copytree(pretrain, folder, ignore=shutil.ignore_patterns("models"))
        write_params(folder, tiny_params)
    done = run(["resnet-mlops", "train"], whole, env=env)
    assert "head phase, epochs 1-2" in done.stdout and "whole phase, epochs 3-6" in done.stdout

    third = kill_training_at(killed, "epoch-0003", env=env)
    assert json.loads((third / "state.json").read_text())["phase"] == "whole"
    resumed = run(["resnet-mlops", "train"], killed, env=env)
    assert "(whole phase)" in resumed.stdout and "head phase" not in resumed.stdout
    for mine, other in zip(load_model(killed / "models/model.keras").get_weights(),
                           load_model(whole / "models/model.keras").get_weights()):
        np.testing.assert_array_equal(mine, other)

    run_id = json.loads((killed / "models/run.json").read_text())["run_id"]
    with tracking_store(store):
        tags = mlflow.MlflowClient().get_run(run_id).data.tags
        assert tags["train.attempt"] == "2"
        assert (tags["pretrained.source"], tags["pretrained.model_version"], tags["pretrained.run_id"]) == (
            "models:/tiny-digits/1", "models:/tiny-digits/1", pretrain_run)
        assert len(tags["pretrained.sha256"]) == 64
        mlflow.register_model(f"runs:/{run_id}/keras_model", "tiny-digits-tuned")
        printed = lineage("models:/tiny-digits-tuned/1")
    assert f"weights    models:/tiny-digits/1 (sha256 {tags['pretrained.sha256']}, models:/tiny-digits/1 of run " \
           f"{pretrain_run})" in printed


def test_lineage_and_the_model_card_describe_the_starting_weights_alike():
    from resnet_mlops.registry.model_card import starting_weights

    assert starting_weights({}) == "random initialisation"
    assert starting_weights({"pretrained.source": "imagenet", "pretrained.sha256": "ab12"}) == "imagenet (sha256 ab12)"


@pytest.mark.parametrize("options", [{"preprocessing": "tf"}, {"preprocessing": "caffe"}, {},
                                     {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}])
def test_a_saved_model_tells_the_scaling_it_was_built_with(tmp_path, options):
    """What `model.pretrained` sets from a .keras file: the inverse of the built-in layers it was saved as."""
    from resnet_mlops.models import build_model
    from resnet_mlops.models.saving import load_model, save_model
    from resnet_mlops.models.transfer import preprocessing_of

    save_model(build_model("resnet_cifar", (8, 8, 3), 3, depth=8, **options), tmp_path / "model.keras")
    found = preprocessing_of(load_model(tmp_path / "model.keras"))
    expected = {"preprocessing": "scale", "mean": None, "std": None, **options}
    assert found["preprocessing"] == expected["preprocessing"]
    for key in ("mean", "std"):
        assert found[key] == expected[key] or np.allclose(found[key], expected[key])
