"""Loading saved models: the project's custom layers must be registered with Keras first."""

from __future__ import annotations


def register_custom_layers() -> None:
    """Import the module whose layers are `@register_keras_serializable`, so `.keras` files deserialize."""
    from resnet_mlops.models import layers  # noqa: F401  (the import registers them)


def load_model(path):
    """Load a `.keras` file written by this project."""
    import keras

    register_custom_layers()
    return keras.models.load_model(path)
