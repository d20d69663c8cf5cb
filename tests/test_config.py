"""params.yaml validation: every bad value fails at once, naming the key and the value."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from resnet_mlops.config import flatten, load_params
from resnet_mlops.errors import ConfigError
from resnet_mlops.presets import DEFAULTS
from support.project_repo import PROJECT, write_params


def test_the_shipped_params_file_is_valid():
    params = load_params(PROJECT / "params.yaml")
    assert params.data.source == "digits"
    assert params.model.name == "resnet20"
    assert params.train.epochs >= 1 and params.train.learning_rate > 0
    assert params.train.schedule == DEFAULTS["schedule"] != "constant"  # a decaying rate, as in the code
    assert params.register.model_name


def test_model_options_are_passed_through(tmp_path, tiny_params):
    params = load_params(write_params(tmp_path, tiny_params))
    assert params.model.name == "resnet_cifar"
    assert params.model.options == {"depth": 8}


def _set(params: dict, dotted: str, value) -> dict:
    *parents, leaf = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return params


class _Delete:
    """Marks a key to remove; its repr keeps the test ids the same from run to run."""

    def __repr__(self) -> str:
        return "<deleted>"


_DELETE = _Delete()

BAD = [
    # (key to change, new value, key the message must name, text the message must contain)
    ("model.name", "resnet21x", "model.name", "resnet21x"),
    ("model.depth", 21, "model.depth", "21"),
    ("train.learning_rate", -0.1, "train.learning_rate", "-0.1"),
    ("train.epochs", 0, "train.epochs", "0"),
    ("register.model_name", _DELETE, "register.model_name", "missing"),
    ("train.epochs", "ten", "train.epochs", "'ten'"),
    ("train.batch_size", 2.5, "train.batch_size", "2.5"),
    ("data.source", "imagenet", "data.source", "imagenet"),
    ("register.model_name", 3, "register.model_name", "3"),
    ("train.epoch", 3, "train.epoch", "unknown key"),
    ("seed", True, "seed", "True"),
]


@pytest.mark.parametrize("key, value, named, shown", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_bad_values_raise_naming_the_key(tmp_path, tiny_params, key, value, named, shown):
    path = write_params(tmp_path, _set(tiny_params, key, value))
    with pytest.raises(ConfigError) as caught:
        load_params(path)
    message = str(caught.value)
    assert caught.value.key == named
    assert f"{named}:" in message and shown in message and str(path) in message


@pytest.mark.parametrize("key, value, named, shown", BAD[:6], ids=[f"{b[0]}={b[1]!r}" for b in BAD[:6]])
def test_cli_exits_nonzero_with_one_line(tmp_path, tiny_params, key, value, named, shown):
    path = write_params(tmp_path, _set(tiny_params, key, value))
    done = subprocess.run(["resnet-mlops", "train", "--params", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert named in lines[0] and shown in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "models").exists()  # no work started


def test_unreadable_and_malformed_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml.*cannot read"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml.*not valid YAML"):
        load_params(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_params(listed)


def test_fractions_must_leave_room_for_training(tmp_path, tiny_params):
    tiny_params["data"].update(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="data.test_fraction"):
        load_params(write_params(tmp_path, tiny_params))


def test_zero_learning_rate_is_allowed(tmp_path, tiny_params):
    tiny_params["train"]["learning_rate"] = 0
    assert load_params(write_params(tmp_path, tiny_params)).train.learning_rate == 0


def test_flatten_names_nested_keys_with_dots():
    assert flatten({"a": 1, "b": {"c": 2, "d": {"e": None}}}) == {"a": 1, "b.c": 2, "b.d.e": None}
