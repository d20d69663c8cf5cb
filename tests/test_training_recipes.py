"""Recipes: presets and their overrides, learning-rate schedules, augmentation, mixup."""

from __future__ import annotations

import os

import numpy as np
import pytest

from resnet_mlops.config import load_params
from resnet_mlops.errors import ConfigError
from support.project_repo import write_params


def recipe(tmp_path, tiny_params, **train):
    tiny_params["train"] = train
    return load_params(write_params(tmp_path, tiny_params)).train


def test_presets_fill_every_key_and_params_override_them(tmp_path, tiny_params):
    paper = recipe(tmp_path, tiny_params, preset="paper")
    assert (paper.optimizer, paper.learning_rate, paper.momentum, paper.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert (paper.schedule, paper.step_at, paper.step_factor, paper.epochs) == ("step", (0.5, 0.75), 0.1, 182)
    assert (paper.augment.crop, paper.augment.flip) == (4, True)
    fast = recipe(tmp_path, tiny_params, preset="fast", epochs=3, augment={"cutout": 8})
    assert (fast.schedule, fast.nesterov, fast.epochs) == ("onecycle", True, 3)
    assert (fast.augment.crop, fast.augment.flip, fast.augment.cutout) == (4, True, 8)  # merged key by key
    assert fast.peak_learning_rate == pytest.approx(0.1 * 256 / 128)  # scaled with the batch size


@pytest.mark.parametrize("train, key, shown", [
    ({"preset": "fastest"}, "train.preset", "'fastest'"),
    ({"schedule": "linear"}, "train.schedule", "'linear'"),
    ({"step_at": [0.75, 0.5]}, "train.step_at", "[0.75, 0.5]"),
    ({"augment": {"crop": -1}}, "train.augment.crop", "-1"),
    ({"augment": {"rotate": 10}}, "train.augment.rotate", "unknown key"),
    ({"mixed_precision": "maybe"}, "train.mixed_precision", "'maybe'"),
    ({"momentum": 1.0}, "train.momentum", "1.0"),
    ({"warmup_fraction": 1}, "train.warmup_fraction", "1"),
])
def test_bad_recipe_keys_are_named(tmp_path, tiny_params, train, key, shown):
    with pytest.raises(ConfigError) as error:
        recipe(tmp_path, tiny_params, **train)
    assert key in str(error.value) and shown in str(error.value)


def test_weight_decay_is_set_in_one_place(tmp_path, tiny_params):
    tiny_params["model"]["weight_decay"] = 1e-4
    with pytest.raises(ConfigError, match="train.weight_decay.*set twice"):
        recipe(tmp_path, tiny_params, weight_decay=1e-4)


def test_schedules_give_the_expected_rate_at_given_steps():
    from resnet_mlops.training.schedules import RecipeSchedule

    def rates(schedule, steps):
        return [float(schedule(step)) for step in steps]

    step = RecipeSchedule("step", 0.1, total_steps=1000, step_at=(0.5, 0.75))
    assert rates(step, [0, 499, 500, 749, 750, 999]) == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    cosine = RecipeSchedule("cosine", 1.0, total_steps=100)
    assert rates(cosine, [0, 50, 100]) == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    onecycle = RecipeSchedule("onecycle", 0.4, total_steps=100, warmup_steps=20)
    assert rates(onecycle, [0, 9, 19, 20, 60, 100]) == pytest.approx([0.02, 0.2, 0.4, 0.4, 0.2, 0.0], abs=1e-6)
    constant = RecipeSchedule("constant", 0.3, total_steps=10, warmup_steps=4)
    assert rates(constant, [1, 3, 4, 9]) == pytest.approx([0.15, 0.3, 0.3, 0.3])
    assert RecipeSchedule.from_config(step.get_config()).get_config() == step.get_config()


def test_the_default_recipe_decays_to_the_end_and_mlflow_records_it(tmp_path, tiny_params, monkeypatch):
    """Issue 11: a constant rate let the last epoch end on a spike; the default now decays."""
    import keras

    from resnet_mlops.training import callbacks
    from resnet_mlops.training.schedules import make_optimizer

    settings = recipe(tmp_path, tiny_params, epochs=3, batch_size=8)  # every other key: its default
    assert settings.schedule == "cosine" and settings.warmup_fraction == 0
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")  # a real, throw-away store
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(make_optimizer(settings, steps_per_epoch=4), "categorical_crossentropy")
    rng = np.random.default_rng(0)
    with mlflow.start_run(experiment_id=mlflow.create_experiment("recipes")) as run:  # not another test's
        model.fit(rng.normal(size=(32, 4)), np.eye(3)[rng.integers(0, 3, 32)], batch_size=8, epochs=3,
                  verbose=0, callbacks=[callbacks.MlflowEpochLogger(32)])
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "learning_rate")
    rates = [m.value for m in sorted(history, key=lambda m: m.step)]
    peak = settings.peak_learning_rate
    assert len(rates) == 3 and rates == sorted(rates, reverse=True) and rates[0] < peak
    assert rates[-1] < 0.01 * peak  # the last epoch ends at the bottom of the schedule


def test_weight_decay_follows_the_papers_l2_convention(tmp_path, tiny_params):
    from resnet_mlops.training.schedules import make_optimizer

    sgd = make_optimizer(recipe(tmp_path, tiny_params, optimizer="sgd", weight_decay=1e-4, momentum=0.9,
                                nesterov=True), steps_per_epoch=10)
    assert sgd.weight_decay == pytest.approx(1e-3) and sgd.nesterov
    adam = make_optimizer(recipe(tmp_path, tiny_params, optimizer="adam", weight_decay=0.01), 10)
    assert type(adam).__name__ == "AdamW" and adam.weight_decay == pytest.approx(0.01)


def test_augmentation_keeps_shapes_and_dtype_changes_pixels_and_is_identity_when_serving():
    from resnet_mlops.training.augment import Augment

    images = np.random.default_rng(0).integers(1, 256, (16, 12, 12, 3)).astype("float32")
    for layer in (Augment(crop=2), Augment(flip=True), Augment(cutout=4), Augment(2, True, 4, seed=3)):
        out = np.asarray(layer(images, training=True))
        assert out.shape == images.shape and out.dtype == np.float32
        assert not np.array_equal(out, images)
        assert np.array_equal(np.asarray(layer(images, training=False)), images)

    cropped = np.asarray(Augment(crop=2, seed=1)(images, training=True))
    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)])
    windows = [{(dy, dx) for dy in range(5) for dx in range(5)
                if np.array_equal(padded[i, dy:dy + 12, dx:dx + 12], cropped[i])} for i in range(16)]
    assert all(windows) and len({next(iter(w)) for w in windows}) > 1  # windows of the padded image, varied

    cut = np.asarray(Augment(cutout=4, seed=2)(images, training=True))
    zeroed = (cut == 0).all(axis=-1).sum(axis=(1, 2))
    assert ((zeroed >= 4) & (zeroed <= 16)).all()  # a 4x4 square, clipped at the borders


def test_mixup_blends_images_and_labels_alike():
    from resnet_mlops.training.augment import mixup
    from resnet_mlops.training.inputs import one_hot

    images = np.stack([np.full((4, 4, 1), v, np.uint8) for v in (0, 100, 200)])
    labels = one_hot(np.array([0, 1, 2]), 3)
    mixed, soft = mixup(images, labels, 0.4, np.random.default_rng(5))
    weight = soft[0, 0]
    assert 0 < weight < 1 and soft.sum(axis=1) == pytest.approx([1, 1, 1])
    assert mixed[0, 0, 0, 0] == pytest.approx(weight * 0 + (1 - weight) * 200)
    assert soft[0, 2] == pytest.approx(1 - weight)


def test_precision_defaults_follow_the_device():
    from resnet_mlops.training.devices import _precision

    assert _precision("auto", "cpu", None) == "float32"
    assert _precision("auto", "gpu", (9, 0)) == "mixed_bfloat16"
    assert _precision("auto", "gpu", (7, 5)) == "mixed_float16"
    assert _precision(True, "cpu", None) == "mixed_bfloat16" and _precision(False, "gpu", (9, 0)) == "float32"


def test_early_stopping_remembers_the_epochs_before_a_resume():
    import keras

    from resnet_mlops.training.callbacks import ResumableEarlyStopping

    def resumed(losses):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.stop_training = False
        callback = ResumableEarlyStopping(2, {"val_loss": losses})
        callback.set_model(model)
        callback.on_train_begin()
        return callback, model

    callback, model = resumed([1.0, 0.9, 0.95])  # one epoch without improvement so far
    assert not model.stop_training and callback.best == 0.9
    callback.on_epoch_end(3, {"val_loss": 0.96})  # the second: patience 2 is used up
    assert model.stop_training
    callback, model = resumed([1.0, 0.9, 0.95, 0.85])
    callback.on_epoch_end(4, {"val_loss": 0.86})
    assert not model.stop_training
