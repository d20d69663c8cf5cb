"""Find the residual blocks of a built model by walking its graph.

Used by tests that prove a model is residual: each block is located by its
``<block>_add`` layer, and its two paths are traced back through the graph
(not inferred from names) to the tensor that enters the block. Keras is not
imported here; the functions work on a built model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockInfo:
    """One residual block.

    ``input`` is the tensor entering the block. ``shared`` are layers both
    paths go through before they fork (a pre-activation block's BN and ReLU
    when its shortcut is a projection). ``shortcut`` and ``residual`` are the
    layers of each path in execution order; an identity shortcut has none.
    ``output`` is the layer whose output leaves the block: the ReLU after the
    addition in original blocks, the addition itself in pre-activation ones.
    """

    name: str
    input: object
    shared: tuple
    shortcut: tuple
    residual: tuple
    add: object
    output: object


def residual_blocks(model) -> list[BlockInfo]:
    """Every residual block of ``model``, in order; an empty list means the model is not residual."""
    blocks = []
    for layer in model.layers:
        if type(layer).__name__ == "Add" and layer.name.endswith("_add"):
            blocks.append(_block(model, layer))
    return blocks


def _block(model, add) -> BlockInfo:
    name = add.name[: -len("_add")]
    members = {id(layer) for layer in model.layers if layer.name.startswith(f"{name}_")}
    traced = [_trace(tensor, members) for tensor in add.input]
    (entry_a, path_a), (entry_b, path_b) = traced
    if entry_a is not entry_b:
        raise ValueError(f"the two inputs of {add.name} do not come from one block input")
    shared = []
    while path_a and path_b and path_a[0] is path_b[0]:
        shared.append(path_a.pop(0))
        path_b.pop(0)
    shortcut, residual = sorted((path_a, path_b), key=len)
    out_layers = [layer for layer in model.layers if layer.name == f"{name}_out"]
    return BlockInfo(
        name=name,
        input=entry_a,
        shared=tuple(shared),
        shortcut=tuple(shortcut),
        residual=tuple(residual),
        add=add,
        output=out_layers[0] if out_layers else add,
    )


def _trace(tensor, members):
    """Walk back from ``tensor`` while its producer belongs to the block.

    Returns the tensor that enters the block and the layers passed, in execution order.
    """
    path = []
    while True:
        layer = tensor._keras_history.operation  # the layer that produced this symbolic tensor
        if id(layer) not in members:
            return tensor, path[::-1]
        path.append(layer)
        tensor = layer.input
