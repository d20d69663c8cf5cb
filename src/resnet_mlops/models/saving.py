"""Saving models as files any Keras loads, and loading them (and older ones) back.

The models train with custom layers (:mod:`resnet_mlops.models.layers`), which
Keras finds only in a process that has imported this package: a plain
``keras.saving.load_model`` or ``mlflow.keras.load_model`` elsewhere would fail
with "Could not locate class 'Preprocess'". :func:`save_model` therefore saves a
copy made of Keras' built-in layers only (:func:`portable_model`), with the
same weights and the same outputs.

Very deep graphs need a raised recursion limit to load, in any process: Keras
maps a graph depth first from its output, one Python frame per layer, and goes
down the shortcuts first, about two frames per original (post-activation)
block. Of the catalogue only resnet1202 (and ``resnet_cifar`` deeper than about
900) passes Python's default limit of 1,000 (measured: resnet152,
preact_resnet164 and preact_resnet1001 load without). :func:`load_model` raises
the limit itself; a plain ``keras.saving.load_model`` or ``mlflow.keras.load_model``
of resnet1202 needs ``sys.setrecursionlimit(3000)`` first, or fails with
``RecursionError`` (see :func:`resnet_mlops.models.resnet.allow_deep_graph`).
"""

from __future__ import annotations

import json
import zipfile


def save_model(model, path, **kwargs) -> None:
    """Save ``model`` to the ``.keras`` file ``path`` as built-in Keras layers only (:func:`portable_model`).

    ``kwargs`` go to ``keras.Model.save``.
    """
    portable_model(model).save(path, **kwargs)


def portable_model(model):
    """A copy of the functional ``model`` made of built-in Keras layers only, with its weights.

    Our layers become their ``builtin_equivalent``: the batch norm Keras' own
    (same config, same weights), ``Preprocess`` and ``ZeroPadShortcut`` a few
    parameter-free built-in layers, the last of which keeps the layer's name.
    Every other layer is copied from its config. The copy computes the same
    outputs and has the same weights, in the same order; it is meant for
    inference (``training=True`` runs Keras' unfused batch norm).
    Raises ``TypeError`` if a layer would still need this package to load.
    """
    import keras
    from keras.src.models.functional import Functional  # what keras.Model(inputs, outputs) makes; not exported

    from resnet_mlops.models import layers as ours
    from resnet_mlops.models.resnet import allow_deep_graph

    if not isinstance(model, Functional):
        raise TypeError(f"portable_model takes a functional keras.Model, got {type(model).__name__}")
    expanded = (ours.Preprocess, ours.ZeroPadShortcut)

    def clone(layer):
        if isinstance(layer, expanded):
            return layer  # not called: call() builds its built-in equivalent instead
        if isinstance(layer, ours.BatchNormalization):
            return layer.builtin_equivalent()
        return layer.__class__.from_config(layer.get_config())

    def call(layer, *args, **kwargs):
        if isinstance(layer, expanded):
            return layer.builtin_equivalent(*args, **kwargs)
        return layer(*args, **kwargs)

    allow_deep_graph(2 * len(model.layers))  # the copy has a few more layers than the model
    copy = keras.models.clone_model(model, clone_function=clone, call_function=call)
    copies = {layer.name: layer for layer in copy.layers}  # get_layer() would list the layers on every call
    for layer in model.layers:
        if layer.weights:
            copies[layer.name].set_weights(layer.get_weights())
    foreign = sorted({f"{type(layer).__module__}.{type(layer).__name__}" for layer in copy._flatten_layers()
                      if not type(layer).__module__.startswith("keras.")})
    if foreign:
        raise TypeError(f"{model.name} has layers only this package can load: {', '.join(foreign)}")
    return copy


def load_model(path, **kwargs):
    """Load a ``.keras`` file written by this project, in any process.

    Files from :func:`save_model` need nothing of ours; older files (and those
    of a plain ``model.save``) hold the custom layers, so these are registered
    first. Makes room for deep graphs (see
    :func:`resnet_mlops.models.resnet.allow_deep_graph`) before
    ``keras.saving.load_model(path, **kwargs)``.
    """
    import keras

    from resnet_mlops.models import layers  # noqa: F401  (importing it registers the custom layers)
    from resnet_mlops.models.resnet import allow_deep_graph

    with zipfile.ZipFile(path) as archive:
        allow_deep_graph(len(json.loads(archive.read("config.json"))["config"]["layers"]))
    return keras.saving.load_model(path, **kwargs)
