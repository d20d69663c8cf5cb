"""Loading saved models: the project's custom layers must be registered with Keras first."""

from __future__ import annotations


def load_model(path):
    """Load a `.keras` file written by this project."""
    import keras

    from resnet_mlops.models import layers  # noqa: F401  (importing it registers the custom layers)

    return keras.models.load_model(path)
