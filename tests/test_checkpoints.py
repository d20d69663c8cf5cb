"""Epoch checkpoints: written in the background, restored exactly, bounded, failures surfaced."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from resnet_mlops.errors import UserError
from resnet_mlops.models import build_model
from resnet_mlops.training.augment import Augment
from resnet_mlops.training.checkpoints import KEEP, Checkpoints, host_copy


def _trained_model(seed: int, depth: int = 8) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([Augment(2, True, seed=seed),
                              build_model("resnet_cifar", (8, 8, 3), 3, depth=depth)])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.CategoricalCrossentropy())
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    model.fit(images, np.eye(3, dtype="float32")[rng.integers(0, 3, 16)], batch_size=8, epochs=1, verbose=0)
    return model


def _state(model: keras.Model) -> list[np.ndarray]:
    return [host_copy(v) for v in [*model.variables, *model.optimizer.variables]]


def test_a_checkpoint_restores_weights_optimizer_and_random_state_exactly(tmp_path):
    trained, fresh = _trained_model(1), _trained_model(2)
    checkpoints = Checkpoints(tmp_path, "same")
    checkpoints.save(trained, {"epoch": 3, "history": {"loss": [1.0, 0.5, 0.25]}})
    checkpoints.wait()

    found = checkpoints.latest()
    assert found["epoch"] == 3 and found["history"] == {"loss": [1.0, 0.5, 0.25]}
    before = _state(fresh)
    Checkpoints.restore(fresh, found)
    after, expected = _state(fresh), _state(trained)
    assert any(not np.array_equal(b, e) for b, e in zip(before, expected))  # the two models did differ
    assert all(np.array_equal(a, e) for a, e in zip(after, expected))
    seed_state = fresh.layers[0].generator.state
    assert np.array_equal(host_copy(seed_state), host_copy(trained.layers[0].generator.state))


def test_the_state_is_copied_when_saved_not_when_written(tmp_path):
    model = _trained_model(1)
    expected = _state(model)
    checkpoints = Checkpoints(tmp_path, "same")
    checkpoints.save(model, {"epoch": 1, "history": {}})
    for variable in model.trainable_variables:  # training goes on while the write is in flight
        variable.assign(variable.value * 0)
    checkpoints.wait()
    restored = _trained_model(3)
    Checkpoints.restore(restored, checkpoints.latest())
    assert all(np.array_equal(a, e) for a, e in zip(_state(restored), expected))


def test_only_the_newest_checkpoints_stay_and_clear_removes_them(tmp_path):
    model = _trained_model(1)
    checkpoints = Checkpoints(tmp_path / "checkpoints", "same")
    for epoch in range(1, 6):
        checkpoints.save(model, {"epoch": epoch, "history": {}})
    checkpoints.wait()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        f"epoch-{epoch:04d}" for epoch in range(6 - KEEP, 6)]
    assert checkpoints.latest()["epoch"] == 5
    checkpoints.clear()
    assert not (tmp_path / "checkpoints").exists()


def test_a_failed_write_is_raised_on_the_training_thread(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the checkpoints folder should be")
    checkpoints = Checkpoints(blocker, "same")
    checkpoints.save(_trained_model(1), {"epoch": 1, "history": {}})
    with pytest.raises(OSError):
        checkpoints.wait()
    checkpoints.wait()  # reported once


def test_a_checkpoint_of_another_shape_is_refused_by_name(tmp_path):
    checkpoints = Checkpoints(tmp_path, "same")
    checkpoints.save(_trained_model(1, depth=8), {"epoch": 1, "history": {}})
    checkpoints.wait()
    found = checkpoints.latest()
    with pytest.raises(UserError, match="epoch-0001"):
        Checkpoints.restore(_trained_model(1, depth=14), found)


def test_checkpoints_of_another_fingerprint_or_half_written_are_forgotten(tmp_path):
    model = _trained_model(1)
    old = Checkpoints(tmp_path, "other params")
    old.save(model, {"epoch": 1, "history": {}})
    old.wait()
    (tmp_path / ".epoch-0002.abc.tmp").mkdir()  # a write killed half-way
    assert Checkpoints(tmp_path, "these params").latest() is None
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
