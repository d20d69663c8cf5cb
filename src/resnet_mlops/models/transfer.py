"""Load keras.applications ResNet weights into our models, layer for layer.

Our ``resnet50/101/152`` and ``resnet50v2/101v2/152v2`` repeat keras.applications'
layers under the same names, so its weights (ImageNet ones where you have
them) copy across by name. The input scaling must match the one those
weights were trained with: build ours with ``preprocessing="caffe"`` for
v1 and ``preprocessing="tf"`` for v2; the model then takes raw pixels where
keras.applications wants ``preprocess_input`` applied first.
"""

from __future__ import annotations

CLASSIFIER = "predictions"


def load_keras_applications_weights(model, source) -> list[str]:
    """Copy the weights of keras.applications model ``source`` into ``model``; return what was left as it was.

    Every layer with weights must exist under the same name and with the same
    weight shapes on both sides, except the classifier ``predictions``: it is
    copied when both have it with the same shape (same classes), and otherwise
    kept at its initialisation, as when fine-tuning ImageNet features for
    another task. Returns the names of our layers that kept their own weights
    (``[]`` or ``["predictions"]``). Raises ``ValueError`` naming the first
    mismatch, before any weight is changed.
    """
    expected = "tf" if any(layer.name == "post_bn" for layer in source.layers) else "caffe"
    mode = model.get_layer("preprocess").mode
    if mode != expected:
        raise ValueError(
            f"{source.name} weights expect preprocessing={expected!r} but {model.name} was built with "
            f"preprocessing={mode!r}; build it with preprocessing={expected!r}"
        )
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
