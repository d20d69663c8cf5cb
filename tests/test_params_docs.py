"""Every default is written once in code, and the README and params.yaml say the same.

The train keys and their defaults live in `presets.DEFAULTS` (the recipes in `presets.PRESETS`),
the optional data keys' defaults in `config.DATA_DEFAULTS`, the evaluate keys' in
`config.EVALUATE_DEFAULTS`. config.py validates types and ranges
and restates no default. README.md's two key tables (under "params.yaml" and "Training") and
params.yaml's comments are prose around those values: these tests fail, naming the key, when
one of them says another key set or another value than the code.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from pathlib import Path

import pytest
import yaml

from resnet_mlops import config, presets
from resnet_mlops.config import DATA_DEFAULTS, EVALUATE_DEFAULTS, MODEL_DEFAULTS, REGISTER_DEFAULTS, NATIVE_SHAPE, AugmentSettings, DataSettings, TrainSettings
from resnet_mlops.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
PARAMS = PROJECT / "params.yaml"
REQUIRED = "required"
BLANK = object()  # a preset cell left empty: the preset does not set that key


def flat(mapping: dict, prefix: str = "") -> dict:
    """{'augment': {'crop': 0}} -> {'augment.crop': 0}"""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------- README tables


def section(text: str, heading: str) -> str:
    """The text under `## heading`, up to the next `## `."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match[1]


def table(text: str, header_start: str) -> tuple[list[str], list[list[str]]]:
    """The first markdown table in `text` whose header row starts with `header_start`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header_start):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(cells(row))
            return cells(line), rows
    raise AssertionError(f"no table with the header {header_start!r}")


def cells(row: str) -> list[str]:
    return [cell.strip() for cell in row.strip().strip("|").split("|")]


def key_of(cell: str) -> str:
    assert re.fullmatch(r"`[\w.*]+`", cell), f"a key cell holds one `key`, got {cell!r}"
    return cell.strip("`")


def value_of(cell: str):
    """A table cell as the value it states: null, true/false, numbers (1e-4, 89,478,485), lists."""
    text = cell.strip()
    if text == "":
        return BLANK
    if text.startswith("`") and text.endswith("`"):
        text = text[1:-1]
    if text == REQUIRED:
        return REQUIRED
    if re.fullmatch(r"\d{1,3}(,\d{3})+", text):
        return int(text.replace(",", ""))
    if text.startswith("["):
        return [value_of(item) for item in text[1:-1].split(",")]
    if text in ("null", "true", "false"):
        return {"null": None, "true": True, "false": False}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def same(stated, actual) -> bool:
    """Equal as params.yaml means it: 0 and 0.0 are the same number, false and 0 are not."""
    if isinstance(stated, (list, tuple)) or isinstance(actual, (list, tuple)):
        return (isinstance(stated, (list, tuple)) and isinstance(actual, (list, tuple))
                and len(stated) == len(actual) and all(same(s, a) for s, a in zip(stated, actual)))
    if isinstance(stated, bool) or isinstance(actual, bool):
        return type(stated) is type(actual) and stated == actual
    if isinstance(stated, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(stated, actual, rel_tol=1e-12, abs_tol=0)
    return stated == actual


def train_table() -> tuple[list[str], dict[str, list]]:
    header, rows = table(section(README.read_text(), "Training"), "| key | default |")
    parsed = {}
    for row in rows:
        assert len(row) == len(header), f"README Training table: row {row} has {len(row)} cells, not {len(header)}"
        key = key_of(row[0])
        assert key not in parsed, f"README Training table: `{key}` has two rows"
        assert row[-1], f"README Training table: `{key}` has no meaning"
        parsed[key] = [value_of(cell) for cell in row[1:-1]]
    return header, parsed


def params_table() -> dict[str, object]:
    header, rows = table(section(README.read_text(), "params.yaml"), "| key | default | meaning |")
    parsed = {}
    for row in rows:
        assert len(row) == 3, f"README params.yaml table: row {row} has {len(row)} cells, not 3"
        key = key_of(row[0])
        assert key not in parsed, f"README params.yaml table: `{key}` has two rows"
        assert row[2], f"README params.yaml table: `{key}` has no meaning"
        parsed[key] = BLANK if key.endswith(".*") else value_of(row[1])
    return parsed


# ----------------------------------------------------------------------------- train.*


TRAIN_KEYS = {"preset", *flat(presets.DEFAULTS)}


def test_train_settings_have_one_field_per_default():
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    assert fields == {"preset", *presets.DEFAULTS}, (
        f"TrainSettings fields and presets.DEFAULTS keys differ: only fields {sorted(fields - {'preset', *presets.DEFAULTS})}, "
        f"only DEFAULTS {sorted(set(presets.DEFAULTS) - fields)}")
    augment = {f.name for f in dataclasses.fields(AugmentSettings)}
    assert augment == set(presets.DEFAULTS["augment"])


def test_presets_name_only_keys_that_have_a_default():
    for name, preset in presets.PRESETS.items():
        unknown = set(flat(preset)) - set(flat(presets.DEFAULTS))
        assert not unknown, f"preset {name!r} sets keys with no default: {sorted(unknown)}"


def test_readme_training_table_states_every_default_and_preset_value():
    header, rows = train_table()
    assert header[:2] == ["key", "default"] and header[-1] == "meaning"
    columns = [cell.strip("`") for cell in header[2:-1]]
    assert columns == list(presets.PRESETS), f"README Training table: preset columns {columns}, code {list(presets.PRESETS)}"
    assert set(rows) == TRAIN_KEYS, (f"README Training table: missing {sorted(TRAIN_KEYS - set(rows))}, "
                                     f"not in presets.DEFAULTS {sorted(set(rows) - TRAIN_KEYS)}")
    defaults = {"preset": None, **flat(presets.DEFAULTS)}
    for key, (default, *by_preset) in rows.items():
        assert same(default, defaults[key]), f"README says train.{key} defaults to {default!r}; code: {defaults[key]!r}"
        for name, stated in zip(presets.PRESETS, by_preset):
            own = flat(presets.PRESETS[name])
            if key in own:
                assert same(stated, own[key]), f"README says preset {name} sets {key} to {stated!r}; code: {own[key]!r}"
            else:
                assert stated is BLANK, f"README gives {stated!r} for {key} in preset {name}, which leaves it at its default"


def test_params_yaml_names_the_train_keys_it_leaves_at_their_defaults():
    text = PARAMS.read_text()
    train = yaml.safe_load(text)["train"]
    block = text[text.index("\ntrain:"):]
    comment = " ".join(line.split("#", 1)[1] for line in block.splitlines() if "#" in line)
    match = re.search(r"keeps its default:(.*?)\(README", comment, re.S)
    assert match, "params.yaml's train section no longer lists the keys it leaves at their defaults"
    listed = {name.strip() for name in match[1].split(",")}
    left = set(flat(presets.DEFAULTS)) - set(flat(train))
    assert listed == left, f"params.yaml lists {sorted(listed - left)} wrongly and misses {sorted(left - listed)}"


@pytest.mark.parametrize("key", sorted(flat(presets.DEFAULTS)))
def test_a_train_key_left_out_takes_its_default(tmp_path, key):
    raw = yaml.safe_load(PARAMS.read_text())
    raw["train"] = {k: v for k, v in raw["train"].items() if k != "preset"}
    *parent, leaf = key.split(".")
    node = raw["train"]
    for part in parent:
        node = node.setdefault(part, {})
    node.pop(leaf, None)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    value = config.load_params(path).train
    for part in key.split("."):
        value = getattr(value, part)
    assert same(value, flat(presets.DEFAULTS)[key])


# ----------------------------------------------------------------------------- data.* and the rest


REQUIRED_DATA = {"source", "val_fraction", "test_fraction"}


def test_data_settings_have_one_field_per_key():
    fields = {f.name for f in dataclasses.fields(DataSettings)}
    assert fields == REQUIRED_DATA | set(DATA_DEFAULTS), (
        f"DataSettings fields {sorted(fields)} != the required keys and config.DATA_DEFAULTS")


def test_readme_params_table_states_every_key_and_default():
    rows = params_table()
    assert "train.*" in rows and "model.*" in rows
    stated = {key: value for key, value in rows.items() if not key.endswith(".*")}
    expected = {"seed": REQUIRED, "mlflow.experiment": REQUIRED, "model.name": REQUIRED,
                "register.model_name": REQUIRED,
                **{f"data.{key}": REQUIRED for key in REQUIRED_DATA},
                **{f"data.{key}": value for key, value in DATA_DEFAULTS.items()},
                **{f"model.{key}": value for key, value in MODEL_DEFAULTS.items()},
                **{f"evaluate.{key}": value for key, value in EVALUATE_DEFAULTS.items()},
                **{f"register.{key}": value for key, value in REGISTER_DEFAULTS.items()}}
    assert set(stated) == set(expected), (f"README params.yaml table: missing {sorted(set(expected) - set(stated))}, "
                                          f"unknown {sorted(set(stated) - set(expected))}")
    for key, value in stated.items():
        assert same(value, expected[key]), f"README says {key} defaults to {value!r}; code: {expected[key]!r}"


def _shipped_without(section_name: str, key: str) -> dict:
    raw = yaml.safe_load(PARAMS.read_text())
    if section_name:
        raw[section_name].pop(key, None)
    else:
        raw.pop(key, None)
    return raw


@pytest.mark.parametrize("dotted", sorted(k for k, v in params_table().items() if v == REQUIRED))
def test_a_key_the_readme_calls_required_is_required(tmp_path, dotted):
    section_name, _, key = dotted.rpartition(".")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_shipped_without(section_name, key)))
    with pytest.raises(ConfigError, match="missing required"):
        config.load_params(path)


@pytest.mark.parametrize("key", sorted(DATA_DEFAULTS))
def test_a_data_key_left_out_takes_its_default(tmp_path, key):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_shipped_without("data", key)))
    data = config.load_params(path).data
    native = dict(zip(("image_size", "channels"), NATIVE_SHAPE[data.source]))
    expected = native[key] if key in native and DATA_DEFAULTS[key] is None else DATA_DEFAULTS[key]
    assert same(getattr(data, key), expected)


@pytest.mark.parametrize("section_name, key", [*(("evaluate", key) for key in sorted(EVALUATE_DEFAULTS)),
                                               *(("register", key) for key in sorted(REGISTER_DEFAULTS))])
def test_an_evaluate_or_register_key_left_out_takes_its_default(tmp_path, section_name, key):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_shipped_without(section_name, key)))
    defaults = {"evaluate": EVALUATE_DEFAULTS, "register": REGISTER_DEFAULTS}[section_name]
    assert getattr(getattr(config.load_params(path), section_name), key) == defaults[key]


def test_the_pixel_limit_default_is_pillows():
    from PIL import Image

    assert DATA_DEFAULTS["max_pixels"] == Image.MAX_IMAGE_PIXELS  # "Pillow's decompression-bomb limit"


@pytest.mark.parametrize("key, index", [("image_size", 0), ("channels", 1)])
def test_the_native_shapes_are_the_ones_written(key, index):
    readme_row = next(line for line in section(README.read_text(), "params.yaml").splitlines()
                      if line.startswith(f"| `data.{key}` |"))
    params_line = next(line for line in PARAMS.read_text().splitlines() if line.strip().startswith(f"{key}:"))
    for source, shape in NATIVE_SHAPE.items():
        said = f"{source} {shape[index]}"
        assert said in readme_row, f"README's data.{key} row should say '{said}': {readme_row}"
        assert said in params_line, f"params.yaml's {key} comment should say '{said}': {params_line}"


def test_the_readme_prose_states_defaults_the_code_has():
    """`data.KEY: VALUE` (default) anywhere in README.md."""
    defaults = {**{f"data.{k}": v for k, v in DATA_DEFAULTS.items()},
                **{f"train.{k}": v for k, v in flat(presets.DEFAULTS).items()}}
    claims = re.findall(r"`((?:data|train)\.[\w.]+): ([^`]+)` \(default\)", README.read_text())
    for key, value in claims:
        assert key in defaults, f"README calls {value!r} the default of {key}, which has none"
        assert same(value_of(value), defaults[key]), f"README calls {value!r} the default of {key}; code: {defaults[key]!r}"


def test_config_restates_no_default():
    """Defaults come from DATA_DEFAULTS and presets.DEFAULTS; `get(..., default=...)` is for
    `train.preset` only (no preset by default)."""
    tree = ast.parse(Path(config.__file__).read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr == "get" and any(kw.arg == "default" for kw in node.keywords)]
    named = [ast.literal_eval(call.args[0]) for call in calls if call.args and isinstance(call.args[0], ast.Constant)]
    assert named == ["preset"], f"config.py passes its own default for {named} (line {[c.lineno for c in calls]})"
