"""params.yaml -> typed, validated settings.

Everything in params.yaml is checked before any stage does work, so a typo or a
bad value fails in a second with one line naming the key, not after minutes of
training. Each stage then receives only its own section (plus the shared keys
`seed` and `mlflow`), which is also what dvc.yaml declares as its params.

This module must stay cheap to import: no TensorFlow, no MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from resnet_mlops import models, presets
from resnet_mlops.errors import ConfigError

DATA_SOURCES = ("digits", "cifar10", "folder")
# (image_size, channels) each source has when data.image_size / data.channels are null.
NATIVE_SHAPE = {"digits": (8, 1), "cifar10": (32, 3), "folder": (32, 3)}
ON_ERROR = ("quarantine", "fail")
# The canonical CIFAR-10 python-version tarball (Krizhevsky, 2009) and its published MD5.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
# The data keys params.yaml may leave out, and their values then: the one place they are written
# (README's params.yaml table states them too; tests/test_params_docs.py holds the two together).
# `source`, `val_fraction` and `test_fraction` are required. The train keys' defaults are
# presets.DEFAULTS.
DATA_DEFAULTS = {
    "path": None,
    "test_path": None,
    "image_size": None,         # null: the source's own (NATIVE_SHAPE)
    "channels": None,
    "on_error": "quarantine",
    "min_size": 8,              # pixels a side at least
    "max_pixels": 89_478_485,   # Pillow's decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS
    "max_imbalance": 10.0,      # largest class / smallest class above this is flagged
    "stream": False,
    "workers": None,            # null: one decoding process per core
    "dask_scheduler": None,     # null: decode in local processes; tcp://host:port: on that Dask cluster
    "url": CIFAR10_URL,
    "md5": CIFAR10_MD5,
}
# The evaluate keys and their values when params.yaml leaves them out (the section itself is required).
EVALUATE_DEFAULTS = {
    "top_k": 5,                 # test_top_k_accuracy: the true class among the k most probable
    "calibration_bins": 15,     # equal-width confidence bins of test_ece
}
# The register keys (the promotion gate's thresholds) and their values when params.yaml leaves them
# out; `model_name` is required.
REGISTER_DEFAULTS = {
    "min_delta": 0.0,           # accuracy must be at least the champion's plus this
    "alpha": 0.05,              # McNemar's one-sided exact p-value must be below this
    "max_class_drop": 0.05,     # no class's recall may fall by more than this
    "min_accuracy": 0.0,        # the absolute floor of test accuracy
    "force": False,             # promote whatever the gate says (recorded as an override)
}
# The model keys besides `name` and the builder options (models.validate checks those), and their
# values when params.yaml leaves them out.
MODEL_DEFAULTS = {
    "pretrained": None,         # null: random initialisation; imagenet, a weights or .keras file, models:/...
}
IMAGENET = "imagenet"
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
_REQUIRED = object()


@dataclass(frozen=True)
class DataSettings:
    source: str
    path: str | None
    test_path: str | None
    image_size: int           # every image becomes image_size x image_size ...
    channels: int             # ... with 1 (grey) or 3 (RGB) channels
    val_fraction: float
    test_fraction: float
    on_error: str             # quarantine | fail
    min_size: int
    max_pixels: int
    max_imbalance: float
    stream: bool              # TFRecord shards streamed with tf.data instead of arrays in memory
    workers: int | None       # decoding processes (None: one per core)
    dask_scheduler: str | None  # a Dask scheduler's address: decode on its cluster instead
    url: str                  # cifar10 download address and its MD5
    md5: str


@dataclass(frozen=True)
class ModelSettings:
    name: str
    options: dict[str, Any] = field(default_factory=dict)  # the builder's (models.build_model)
    pretrained: str | None = None  # where the starting weights come from (training/pretrained.py)


@dataclass(frozen=True)
class AugmentSettings:
    crop: int                 # pad by this many pixels, then crop back at random (0: off)
    flip: bool
    cutout: int               # side of the erased square (0: off)
    mixup: float              # Beta alpha (0: off)


@dataclass(frozen=True)
class TrainSettings:
    """The resolved recipe: defaults, then `train.preset`, then the keys params.yaml sets.

    One field per key of presets.DEFAULTS (plus `preset`), which holds every default: this
    module only checks types and ranges (tests/test_params_docs.py keeps the two in step)."""

    preset: str | None
    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    lr_batch_reference: int | None
    momentum: float
    nesterov: bool
    weight_decay: float
    label_smoothing: float
    schedule: str
    warmup_fraction: float
    head_epochs: int
    finetune_lr_factor: float
    step_at: tuple[float, ...]
    step_factor: float
    augment: AugmentSettings
    early_stopping: int
    deterministic: bool
    mixed_precision: str | bool
    jit_compile: str | bool

    @property
    def peak_learning_rate(self) -> float:
        """learning_rate, scaled linearly with the batch size when lr_batch_reference is set."""
        if self.lr_batch_reference is None:
            return self.learning_rate
        return self.learning_rate * self.batch_size / self.lr_batch_reference


@dataclass(frozen=True)
class EvaluateSettings:
    top_k: int
    calibration_bins: int


@dataclass(frozen=True)
class RegisterSettings:
    model_name: str
    min_delta: float
    alpha: float
    max_class_drop: float
    min_accuracy: float
    force: bool


@dataclass(frozen=True)
class Params:
    seed: int
    experiment: str
    data: DataSettings
    model: ModelSettings
    train: TrainSettings
    evaluate: EvaluateSettings
    register: RegisterSettings
    raw: dict[str, Any]


class _Section:
    """Reads one mapping of params.yaml, checking each key's type and value."""

    def __init__(self, path: Path, prefix: str, mapping: Any):
        self.path, self.prefix = path, prefix
        if not isinstance(mapping, dict):
            raise ConfigError(path, prefix, f"must be a mapping of keys, got {mapping!r}")
        self.mapping = mapping
        self.seen: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.path, f"{self.prefix}.{key}" if self.prefix else key, message)

    def get(self, key: str, kind: type | tuple, default: Any = _REQUIRED,
            check: Callable[[Any], bool] | None = None, expect: str = "") -> Any:
        self.seen.add(key)
        if key not in self.mapping:
            if default is _REQUIRED:
                raise self.error(key, "missing required key")
            return default
        value = self.mapping[key]
        if not _is_instance(value, kind):
            raise self.error(key, f"must be {expect or _type_name(kind)}, got {value!r}")
        if check is not None and not check(value):
            raise self.error(key, f"must be {expect}, got {value!r}")
        return value

    def section(self, key: str) -> "_Section":
        self.seen.add(key)
        if key not in self.mapping:
            raise self.error(key, "missing required section")
        return _Section(self.path, f"{self.prefix}.{key}" if self.prefix else key, self.mapping[key])

    def rest(self) -> dict[str, Any]:
        """Keys not read yet (free-form options checked elsewhere)."""
        return {k: v for k, v in self.mapping.items() if k not in self.seen}

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.mapping) - self.seen)
        if unknown:
            raise self.error(unknown[0], f"unknown key; expected one of: {', '.join(sorted(self.seen))}")


def _is_instance(value: Any, kind: type | tuple) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False  # YAML `yes`/`true` is not a number
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, kinds)


def _type_name(kind: type | tuple) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             type(None): "null", dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; raise ConfigError on the first bad key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(path, "(file)", f"cannot read the params file ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(file)"
        raise ConfigError(path, where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None

    top = _Section(path, "", raw)
    seed = top.get("seed", int, check=lambda v: v >= 0, expect="an integer >= 0")
    tracking = top.section("mlflow")
    experiment = tracking.get("experiment", str, check=bool, expect="a non-empty string")
    tracking.reject_unknown()

    params = Params(
        seed=seed,
        experiment=experiment,
        data=_data(top.section("data")),
        model=_model(top.section("model")),
        train=_train(top.section("train")),
        evaluate=_evaluate(top.section("evaluate")),
        register=_register(top.section("register")),
        raw=raw,
    )
    top.reject_unknown()
    if params.train.weight_decay and params.model.options.get("weight_decay"):
        raise ConfigError(path, "train.weight_decay", "weight decay is set twice (model.weight_decay "
                          f"{params.model.options['weight_decay']} and train.weight_decay "
                          f"{params.train.weight_decay}); keep one")
    if params.train.head_epochs and params.model.pretrained is None:
        raise ConfigError(path, "train.head_epochs", f"{params.train.head_epochs} epochs of the head alone need "
                          "starting weights for the rest of the network; set model.pretrained or head_epochs: 0")
    return params


def _fraction(v: float) -> bool:
    return 0 < v < 1


def _data(given: _Section) -> DataSettings:
    s = _Section(given.path, given.prefix, {**DATA_DEFAULTS, **given.mapping})
    source = s.get("source", str, check=lambda v: v in DATA_SOURCES, expect=f"one of {', '.join(DATA_SOURCES)}")
    native_size, native_channels = NATIVE_SHAPE[source]
    path = s.get("path", (str, type(None)))
    if source == "folder" and path is None:
        raise s.error("path", "the folder source needs a folder or archive of class folders, got None")
    settings = DataSettings(
        source=source,
        path=path,
        test_path=s.get("test_path", (str, type(None))),
        image_size=s.get("image_size", (int, type(None)), check=lambda v: v is None or v >= 1,
                         expect="an integer >= 1") or native_size,
        channels=s.get("channels", (int, type(None)), check=lambda v: v in (None, 1, 3),
                       expect="1 or 3") or native_channels,
        val_fraction=s.get("val_fraction", float, check=_fraction, expect="a number between 0 and 1"),
        test_fraction=s.get("test_fraction", float, check=_fraction, expect="a number between 0 and 1"),
        on_error=s.get("on_error", str, **_one_of(ON_ERROR)),
        min_size=s.get("min_size", int, **_at_least(1, "an integer")),
        max_pixels=s.get("max_pixels", int, **_at_least(1, "an integer")),
        max_imbalance=s.get("max_imbalance", float, **_at_least(1)),
        stream=s.get("stream", bool),
        workers=s.get("workers", (int, type(None)), check=lambda v: v is None or v >= 1,
                      expect="an integer >= 1 or null"),
        dask_scheduler=s.get("dask_scheduler", (str, type(None)),
                             check=lambda v: v is None or "://" in v, expect="an address like tcp://host:8786"),
        url=s.get("url", str),
        md5=s.get("md5", str),
    )
    if settings.val_fraction + settings.test_fraction >= 1:
        raise s.error("test_fraction", f"val_fraction + test_fraction must be below 1, got "
                                       f"{settings.val_fraction} + {settings.test_fraction}")
    s.reject_unknown()
    return settings


def _model(given: _Section) -> ModelSettings:
    s = _Section(given.path, given.prefix, {**MODEL_DEFAULTS, **given.mapping})
    name = s.get("name", str)
    pretrained = s.get("pretrained", (str, type(None)), check=lambda v: v is None or bool(v.strip()),
                       expect=f"null, {IMAGENET}, a weights or .keras file, or models:/<name>@<alias>")
    options = s.rest()
    try:
        models.validate(name, options)
    except models.InvalidModelOption as exc:
        raise s.error(exc.option, str(exc)) from None
    if pretrained == IMAGENET and name not in models.KERAS_APPLICATIONS:
        raise s.error("pretrained", f"keras.applications has ImageNet weights for "
                                    f"{', '.join(models.KERAS_APPLICATIONS)} only, not {name}; give a weights or "
                                    f".keras file of {name} instead")
    return ModelSettings(name=name, options=options, pretrained=pretrained)


def _one_of(choices: tuple) -> dict:
    return {"check": lambda v: v in choices, "expect": f"one of {', '.join(map(str, choices))}"}


def _at_least(low: float, kind: str = "a number") -> dict:
    return {"check": lambda v: v >= low, "expect": f"{kind} >= {low}"}


def _train(given: _Section) -> TrainSettings:
    preset = given.get("preset", (str, type(None)), default=None, **_one_of((*presets.PRESETS, None)))
    s = _Section(given.path, given.prefix, presets.resolve(given.mapping))
    s.seen.add("preset")
    auto_or_bool = {"check": lambda v: v == "auto" or isinstance(v, bool), "expect": "auto, true or false"}
    settings = TrainSettings(
        preset=preset,
        epochs=s.get("epochs", int, **_at_least(1, "an integer")),
        batch_size=s.get("batch_size", int, **_at_least(1, "an integer")),
        optimizer=s.get("optimizer", str, **_one_of(OPTIMIZERS)),
        learning_rate=s.get("learning_rate", float, **_at_least(0)),
        lr_batch_reference=s.get("lr_batch_reference", (int, type(None)),
                                 check=lambda v: v is None or v >= 1, expect="an integer >= 1 or null"),
        momentum=s.get("momentum", float, check=lambda v: 0 <= v < 1, expect="a number in [0, 1)"),
        nesterov=s.get("nesterov", bool),
        weight_decay=s.get("weight_decay", float, **_at_least(0)),
        label_smoothing=s.get("label_smoothing", float, check=lambda v: 0 <= v < 1,
                              expect="a number in [0, 1)"),
        schedule=s.get("schedule", str, **_one_of(SCHEDULES)),
        warmup_fraction=s.get("warmup_fraction", float, check=lambda v: 0 <= v < 1, expect="a number in [0, 1)"),
        head_epochs=s.get("head_epochs", int, check=lambda v: 0 <= v <= s.mapping["epochs"],
                          expect=f"an integer from 0 to train.epochs ({s.mapping['epochs']})"),
        finetune_lr_factor=s.get("finetune_lr_factor", float, check=lambda v: 0 < v <= 1, expect="a number in (0, 1]"),
        step_at=tuple(s.get("step_at", list, check=lambda v: all(_is_instance(x, float) and 0 < x < 1 for x in v)
                            and list(v) == sorted(v), expect="an ascending list of fractions between 0 and 1")),
        step_factor=s.get("step_factor", float, check=lambda v: 0 < v <= 1, expect="a number in (0, 1]"),
        augment=_augment(s.section("augment")),
        early_stopping=s.get("early_stopping", int, **_at_least(0, "an integer")),
        deterministic=s.get("deterministic", bool),
        mixed_precision=s.get("mixed_precision", (str, bool), **auto_or_bool),
        jit_compile=s.get("jit_compile", (str, bool), **auto_or_bool),
    )
    s.reject_unknown()
    return settings


def _augment(s: _Section) -> AugmentSettings:
    settings = AugmentSettings(
        crop=s.get("crop", int, **_at_least(0, "an integer")),
        flip=s.get("flip", bool),
        cutout=s.get("cutout", int, **_at_least(0, "an integer")),
        mixup=s.get("mixup", float, **_at_least(0)),
    )
    s.reject_unknown()
    return settings


def _evaluate(given: _Section) -> EvaluateSettings:
    s = _Section(given.path, given.prefix, {**EVALUATE_DEFAULTS, **given.mapping})
    settings = EvaluateSettings(
        top_k=s.get("top_k", int, **_at_least(1, "an integer")),
        calibration_bins=s.get("calibration_bins", int, **_at_least(1, "an integer")),
    )
    s.reject_unknown()
    return settings


def _register(given: _Section) -> RegisterSettings:
    s = _Section(given.path, given.prefix, {**REGISTER_DEFAULTS, **given.mapping})
    settings = RegisterSettings(
        model_name=s.get("model_name", str, check=lambda v: bool(v.strip()), expect="a non-empty string"),
        min_delta=s.get("min_delta", float, check=lambda v: -1 <= v <= 1, expect="a number between -1 and 1"),
        alpha=s.get("alpha", float, check=lambda v: 0 < v <= 1, expect="a number in (0, 1]"),
        max_class_drop=s.get("max_class_drop", float, check=lambda v: 0 <= v <= 1,
                             expect="a number between 0 and 1"),
        min_accuracy=s.get("min_accuracy", float, check=lambda v: 0 <= v <= 1, expect="a number between 0 and 1"),
        force=s.get("force", bool),
    )
    s.reject_unknown()
    return settings


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 3}} -> {'train.epochs': 3}: how params are logged to MLflow."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
