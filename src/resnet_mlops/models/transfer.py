"""Load pretrained weights into our models, layer for layer, by layer name.

Our ``resnet50/101/152`` and ``resnet50v2/101v2/152v2`` repeat keras.applications'
layers under the same names, so its weights (ImageNet ones where you have
them) copy across by name. The input scaling must match the one those
weights were trained with: build ours with ``preprocessing="caffe"`` for
v1 and ``preprocessing="tf"`` for v2; the model then takes raw pixels where
keras.applications wants ``preprocess_input`` applied first.

The same copy starts a model from one of our own saved models (a ``.keras``
file: an earlier champion, a network pretrained on other classes): same
architecture, any classifier. A bare weights file holds no architecture, and
Keras 3 names its entries by position, not by layer, so one is read into the
keras.applications network it was saved from.
"""

from __future__ import annotations

import warnings

import numpy as np

from resnet_mlops.models.catalog import ARCHITECTURES, KERAS_APPLICATIONS

CLASSIFIER = "predictions"


def keras_applications_preprocessing(name: str) -> str:
    """The input scaling keras.applications' weights for our ``name`` were trained with."""
    return "tf" if ARCHITECTURES[name].preact else "caffe"


def keras_applications_model(name: str, input_shape, weights=None):
    """keras.applications' network for our ``name``, without its top (``weights``: None or a file)."""
    import keras

    build = getattr(keras.applications, KERAS_APPLICATIONS[name])
    return build(include_top=False, weights=weights, input_shape=tuple(input_shape))


def read_weights_file(name: str, input_shape, path):
    """The keras.applications ``name`` network holding the weights file ``path``, for ``input_shape``.

    Raises ``ValueError`` in one sentence when ``name`` has no keras.applications
    counterpart or the file does not fit it (naming the channel count when that is the difference).
    """
    if name not in KERAS_APPLICATIONS:
        raise ValueError(f"a weights file holds no architecture and {name} has no keras.applications "
                         f"counterpart to read it into; give a .keras model of {name} instead")
    try:
        return keras_applications_model(name, input_shape, path)
    except ValueError:
        height, width, channels = input_shape
        other = 4 - channels  # 1 <-> 3, the channel counts the data may have
        try:
            with warnings.catch_warnings():  # Keras warns of each part of the network the file lacks
                warnings.filterwarnings("ignore", message="Skipping nested container", category=UserWarning)
                keras_applications_model(name, (height, width, other), path)
        except ValueError:
            raise ValueError(f"{path} does not hold weights of keras.applications' {KERAS_APPLICATIONS[name]} "
                             f"without its top (include_top=False): not the same architecture") from None
        raise ValueError(f"{path} holds {KERAS_APPLICATIONS[name]} weights for {other}-channel images but the "
                         f"data have {channels} channels") from None


def preprocessing_of(model) -> dict:
    """The ``preprocessing``/``mean``/``std`` options a model of ours was built with, read from its layer
    ``preprocess``: our ``Preprocess``, or the built-in layers a saved model holds in its place
    (the inverse of ``Preprocess.builtin_equivalent``)."""
    import keras

    from resnet_mlops.models.layers import Preprocess

    layer = model.get_layer("preprocess")
    if isinstance(layer, Preprocess):
        return {"preprocessing": layer.mode, "mean": layer.mean, "std": layer.std}
    if isinstance(layer, keras.layers.Rescaling):  # caffe: minus the channel means; tf: x / 127.5 - 1
        mode = "caffe" if isinstance(layer.offset, (list, tuple)) else "tf"
        return {"preprocessing": mode, "mean": None, "std": None}
    if layer.axis == () or layer.axis is None:  # x / 255 alone
        return {"preprocessing": "scale", "mean": None, "std": None}
    mean, variance = (np.asarray(value, np.float64) for value in (layer.input_mean, layer.input_variance))
    return {"preprocessing": "scale", "mean": mean.tolist(), "std": np.sqrt(variance).tolist()}


def load_keras_applications_weights(model, source) -> list[str]:
    """Copy the weights of keras.applications model ``source`` into ``model``; return what was left as it was.

    As :func:`copy_weights`, after checking that ``model`` scales its input as
    ``source``'s weights expect.
    """
    expected = "tf" if any(layer.name == "post_bn" for layer in source.layers) else "caffe"
    mode = model.get_layer("preprocess").mode
    if mode != expected:
        raise ValueError(
            f"{source.name} weights expect preprocessing={expected!r} but {model.name} was built with "
            f"preprocessing={mode!r}; build it with preprocessing={expected!r}"
        )
    return copy_weights(model, source)


def copy_weights(model, source) -> list[str]:
    """Copy the weights of ``source`` into ``model`` by layer name; return what was left as it was.

    Every layer with weights must exist under the same name and with the same
    weight shapes on both sides, except the classifier ``predictions``: it is
    copied when both have it with the same shape (same classes), and otherwise
    kept at its initialisation, as when fine-tuning ImageNet features for
    another task. Returns the names of our layers that kept their own weights
    (``[]`` or ``["predictions"]``). Raises ``ValueError`` naming the first
    mismatch, before any weight is changed.
    """
    ours = _weighted_layers(model)
    theirs = _weighted_layers(source)
    for missing, where in ((set(theirs) - set(ours), model.name), (set(ours) - set(theirs), source.name)):
        missing.discard(CLASSIFIER)
        if missing:
            raise ValueError(
                f"{where} has no layer {sorted(missing)[0]!r} (and {len(missing) - 1} more): "
                "not the same architecture"
            )
    pairs = {name: (ours[name], theirs[name]) for name in ours.keys() & theirs.keys()}
    for name, (mine, other) in pairs.items():
        if name != CLASSIFIER and _shapes(mine) != _shapes(other):
            raise ValueError(
                f"layer {name!r} has weight shapes {_shapes(mine)} in {model.name} "
                f"but {_shapes(other)} in {source.name}"
            )
    kept = []
    for name, (mine, other) in pairs.items():
        if _shapes(mine) == _shapes(other):
            mine.set_weights(other.get_weights())
        else:
            kept.append(name)
    return sorted(kept + [name for name in ours if name not in theirs])


def _weighted_layers(model) -> dict:
    return {layer.name: layer for layer in model.layers if layer.weights}


def _shapes(layer) -> list[tuple]:
    return [tuple(w.shape) for w in layer.weights]
