"""Every model name, its architecture, and the checking of its options.

Pure Python on purpose: config validation imports this module to reject a bad
``params.yaml`` in milliseconds, so nothing here may import Keras or TensorFlow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real


class InvalidModelOption(ValueError):
    """A model name or option the catalogue rejects.

    ``option`` is the key that is wrong ("name", "depth", "shortcut",
    "num_classes", "input_shape", ...) and ``value`` the rejected value; the
    message is one sentence that echoes the value.
    """

    def __init__(self, option: str, value, message: str):
        self.option = option
        self.value = value
        super().__init__(message)


@dataclass(frozen=True)
class Architecture:
    """What a name stands for.

    ``family`` picks the builder: "cifar" (He et al. 2016, sec. 4.2),
    "preact_cifar" (He et al. 2016, "Identity Mappings", CIFAR bottleneck) or
    "imagenet" (He et al. 2016, Table 1, optionally pre-activation).
    ``depth`` is None for the generic names, which take ``depth=`` instead.
    ``stages`` (residual blocks per stage) is only fixed for ImageNet models;
    the CIFAR ones derive it from the depth.
    """

    family: str
    depth: int | None = None
    block: str = "basic"
    preact: bool = False
    stages: tuple[int, ...] = ()

    def min_input_size(self, stem: str | None = None) -> int:
        """Smallest height/width: the total stride, so the last feature map is at least 1x1.

        An ImageNet network's own stem downsamples 4x (stride-2 convolution, then
        max pooling); with ``stem="cifar"`` it keeps full resolution.
        """
        if self.family != "imagenet":
            return 4
        return 8 if stem == "cifar" else 32


def _cifar(depth=None):
    return Architecture("cifar", depth)


def _preact_cifar(depth=None):
    return Architecture("preact_cifar", depth, block="bottleneck", preact=True)


def _imagenet(depth, block, stages, preact=False):
    return Architecture("imagenet", depth, block=block, preact=preact, stages=stages)


ARCHITECTURES: dict[str, Architecture] = {
    **{f"resnet{d}": _cifar(d) for d in (20, 32, 44, 56, 110, 1202)},
    "resnet_cifar": _cifar(),
    "preact_resnet164": _preact_cifar(164),
    "preact_resnet1001": _preact_cifar(1001),
    "preact_resnet_cifar": _preact_cifar(),
    "resnet18": _imagenet(18, "basic", (2, 2, 2, 2)),
    "resnet34": _imagenet(34, "basic", (3, 4, 6, 3)),
    "resnet50": _imagenet(50, "bottleneck", (3, 4, 6, 3)),
    "resnet101": _imagenet(101, "bottleneck", (3, 4, 23, 3)),
    "resnet152": _imagenet(152, "bottleneck", (3, 8, 36, 3)),
    "resnet50v2": _imagenet(50, "bottleneck", (3, 4, 6, 3), preact=True),
    "resnet101v2": _imagenet(101, "bottleneck", (3, 4, 23, 3), preact=True),
    "resnet152v2": _imagenet(152, "bottleneck", (3, 8, 36, 3), preact=True),
}

MODEL_NAMES: tuple[str, ...] = tuple(ARCHITECTURES)

# Our names whose networks keras.applications builds layer for layer, with ImageNet weights
# (models/transfer.py): ours -> its constructor.
KERAS_APPLICATIONS = {
    "resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152",
    "resnet50v2": "ResNet50V2", "resnet101v2": "ResNet101V2", "resnet152v2": "ResNet152V2",
}

PREPROCESSING_MODES = ("scale", "caffe", "tf")
STEMS = ("imagenet", "cifar")
POOLING_MODES = (None, "avg", "max")
CLASSIFIER_ACTIVATIONS = ("softmax", "sigmoid", "linear", None)

# Options every model takes, with their defaults.
COMMON_OPTIONS = {
    "depth": None,
    "zero_init_residual": False,
    "weight_decay": 0.0,
    "preprocessing": "scale",
    "mean": None,
    "std": None,
    "include_top": True,
    "pooling": None,
    "classifier_activation": "softmax",
}


def option_defaults(arch: Architecture) -> dict:
    """The options ``arch`` accepts, with their defaults.

    Only basic-block networks take ``shortcut``: the paper's CIFAR models use
    option A, its ImageNet models option B; bottleneck networks always project.
    Only ImageNet networks take ``stem``: "imagenet" (7x7 stride-2 convolution
    and max pooling, the paper's) or "cifar" (one 3x3 stride-1 convolution, the
    usual adaptation to 32x32 images, as in the CIFAR "ResNet-18").
    """
    defaults = dict(COMMON_OPTIONS, depth=arch.depth)
    if arch.block == "basic":
        defaults["shortcut"] = "A" if arch.family == "cifar" else "B"
    if arch.family == "imagenet":
        defaults["stem"] = "imagenet"
    return defaults


# Blocks per stage n follow from the depth: 3 stages of n blocks of 2 (basic) or 3 (bottleneck)
# convolutions, plus the first convolution and the classifier.
_DEPTH_RULES = {
    "cifar": (6, "CIFAR ResNet depth", "6n+2 (8, 14, 20, 32, ...)"),
    "preact_cifar": (9, "pre-activation CIFAR ResNet depth", "9n+2 (11, 20, 29, ..., 164, 1001)"),
}


@dataclass(frozen=True)
class ModelConfig:
    """A validated request: the architecture, every option filled in, and the input."""

    name: str
    arch: Architecture
    options: dict
    input_shape: tuple[int, int, int] | None
    num_classes: int | None

    @property
    def depth(self) -> int:
        return self.options["depth"]

    def blocks_per_stage(self) -> tuple[int, ...]:
        if self.arch.stages:
            return self.arch.stages
        step = _DEPTH_RULES[self.arch.family][0]
        return ((self.depth - 2) // step,) * 3


def resolve(name, options=None, *, input_shape=None, num_classes=None, building=False) -> ModelConfig:
    """Check ``name``, ``options`` and the input and class count.

    ``input_shape`` and ``num_classes`` are optional unless ``building``
    (a model without a top needs no class count). Returns the configuration with
    defaults filled in; raises :class:`InvalidModelOption` at the first problem.
    """
    arch = _check_name(name)
    if not isinstance(options, Mapping | None):
        raise InvalidModelOption("options", options, f"model options must be a mapping, got {options!r}")
    options = dict(options or {})
    defaults = option_defaults(arch)
    for key in options:
        if key not in defaults:
            raise InvalidModelOption(
                key, options[key],
                f"unknown option {key!r} for {name}; valid options: {', '.join(sorted(defaults))}",
            )
    merged = {**defaults, **options}
    merged["depth"] = _check_depth(name, arch, options.get("depth"))
    for key, check in _CHECKS.items():
        if key in merged:
            check(merged[key])
    _check_combinations(merged)
    shape = None
    if building or input_shape is not None:
        shape = _check_input_shape(name, arch, input_shape, merged)
    classes = None
    if num_classes is not None or (building and merged["include_top"]):
        classes = _check_num_classes(num_classes)
    return ModelConfig(name, arch, merged, shape, classes)


def validate(name, options=None, *, input_shape=None, num_classes=None) -> None:
    """Raise :class:`InvalidModelOption` if the model cannot be built as asked; build nothing.

    ``options`` are the keyword options of ``build_model``; ``input_shape`` and
    ``num_classes`` are checked only when given.
    """
    resolve(name, options, input_shape=input_shape, num_classes=num_classes)


def _check_name(name) -> Architecture:
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise InvalidModelOption(
            "name", name, f"unknown model name {name!r}; choose one of: {', '.join(MODEL_NAMES)}"
        )
    return ARCHITECTURES[name]


def _check_depth(name: str, arch: Architecture, depth) -> int:
    if arch.depth is not None:
        if depth is not None and depth != arch.depth:
            generic = next((n for n, a in ARCHITECTURES.items() if a.family == arch.family and a.depth is None), None)
            hint = f" (use {generic!r} with depth={depth!r} for other depths)" if generic else ""
            raise InvalidModelOption("depth", depth, f"{name} has depth {arch.depth}, got depth={depth!r}{hint}")
        return arch.depth
    step, what, rule = _DEPTH_RULES[arch.family]
    if depth is None:
        raise InvalidModelOption("depth", None, f"{name} needs a depth option, {rule}")
    if not _is_int(depth) or depth < step + 2 or (depth - 2) % step:
        raise InvalidModelOption("depth", depth, f"{what} must be {rule}, got {depth!r}")
    return depth


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_shortcut(value):
    if value not in ("A", "B"):
        raise InvalidModelOption(
            "shortcut", value,
            f"shortcut must be 'A' (zero-padded identity) or 'B' (1x1 projection), got {value!r}",
        )


def _check_flag(key):
    def check(value):
        if not isinstance(value, bool):
            raise InvalidModelOption(key, value, f"{key} must be true or false, got {value!r}")
    return check


def _check_weight_decay(value):
    if not _is_number(value) or value < 0:
        hint = " (a string; in YAML write 1.0e-4, not 1e-4)" if isinstance(value, str) else ""
        raise InvalidModelOption("weight_decay", value, f"weight_decay must be a number >= 0, got {value!r}{hint}")


def _check_choice(key, choices):
    def check(value):
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices)
            raise InvalidModelOption(key, value, f"{key} must be one of {shown}, got {value!r}")
    return check


def _check_stats(key):
    """``mean``/``std``: None, a number, or one number per channel (channels checked with the input)."""
    def check(value):
        if value is None:
            return
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(_is_number(v) for v in values):
            raise InvalidModelOption(
                key, value, f"{key} must be a number or a list of one number per channel, got {value!r}"
            )
        if key == "std" and min(values) <= 0:
            raise InvalidModelOption(key, value, f"std must be positive, got {value!r}")
    return check


_CHECKS = {
    "shortcut": _check_shortcut,
    "zero_init_residual": _check_flag("zero_init_residual"),
    "include_top": _check_flag("include_top"),
    "weight_decay": _check_weight_decay,
    "preprocessing": _check_choice("preprocessing", PREPROCESSING_MODES),
    "stem": _check_choice("stem", STEMS),
    "pooling": _check_choice("pooling", POOLING_MODES),
    "classifier_activation": _check_choice("classifier_activation", CLASSIFIER_ACTIVATIONS),
    "mean": _check_stats("mean"),
    "std": _check_stats("std"),
}


def _check_combinations(options: dict):
    if options["include_top"] and options["pooling"] is not None:
        raise InvalidModelOption(
            "pooling", options["pooling"],
            f"pooling only applies with include_top=False, got pooling={options['pooling']!r} with include_top=True",
        )
    if options["preprocessing"] != "scale":
        for key in ("mean", "std"):
            if options[key] is not None:
                raise InvalidModelOption(
                    key, options[key],
                    f"{key} only applies with preprocessing='scale', got {key}={options[key]!r} "
                    f"with preprocessing={options['preprocessing']!r}",
                )


def _check_input_shape(name, arch, input_shape, options) -> tuple[int, int, int]:
    shape = tuple(input_shape) if isinstance(input_shape, (list, tuple)) else None
    if shape is None or len(shape) != 3 or not all(_is_int(d) and d > 0 for d in shape):
        raise InvalidModelOption(
            "input_shape", input_shape,
            f"input_shape must be (height, width, channels) of positive integers, got {input_shape!r}",
        )
    height, width, channels = shape
    smallest = arch.min_input_size(options.get("stem"))
    if min(height, width) < smallest:
        raise InvalidModelOption(
            "input_shape", input_shape,
            f"input_shape {input_shape!r} is too small for {name}: height and width must be at least {smallest}",
        )
    if options["preprocessing"] == "caffe" and channels != 3:
        raise InvalidModelOption(
            "input_shape", input_shape,
            f"preprocessing='caffe' needs 3 (RGB) channels, got input_shape {input_shape!r}",
        )
    for key in ("mean", "std"):
        value = options[key]
        if isinstance(value, (list, tuple)) and len(value) not in (1, channels):
            raise InvalidModelOption(
                key, value, f"{key} has {len(value)} values but the input has {channels} channels: {value!r}"
            )
    return shape


def _check_num_classes(num_classes) -> int:
    if not _is_int(num_classes) or num_classes < 1:
        raise InvalidModelOption(
            "num_classes", num_classes, f"num_classes must be a positive integer, got {num_classes!r}"
        )
    return num_classes
