"""Loading saved models: the custom layers must be registered, and deep graphs need room."""

from __future__ import annotations

import json
import zipfile


def load_model(path, **kwargs):
    """Load a ``.keras`` file written by this project, in any process.

    Imports the custom layers (which registers them with Keras) and makes room
    for deep graphs (see :func:`resnet_mlops.models.resnet.allow_deep_graph`)
    before ``keras.saving.load_model(path, **kwargs)``.
    """
    import keras

    from resnet_mlops.models import layers  # noqa: F401  (importing it registers the custom layers)
    from resnet_mlops.models.resnet import allow_deep_graph

    with zipfile.ZipFile(path) as archive:
        allow_deep_graph(len(json.loads(archive.read("config.json"))["config"]["layers"]))
    return keras.saving.load_model(path, **kwargs)
