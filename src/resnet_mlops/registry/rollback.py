"""`resnet-mlops champion [--history]` and `resnet-mlops rollback [--to VERSION]`.

A rollback moves `@champion` back (by default to the version that held it before the current
one), but only to a version that still serves: it is re-checked in a fresh process first
(`servability.py`), on test images from data/prepared when they fit the model, else on seeded
random pixels of its shape. The move goes through the same lock and history as `register`'s.
"""

from __future__ import annotations

import numpy as np

from resnet_mlops.dataset.prepared import read_split, read_summary
from resnet_mlops.errors import UserError
from resnet_mlops.project import Layout
from resnet_mlops.registry import champions
from resnet_mlops.registry.descriptions import with_champion
from resnet_mlops.registry.servability import SAMPLE, ServabilityCheck
from resnet_mlops.registry.store import current_champion, first_line


def show(client, name: str, with_history: bool) -> str:
    """Who holds @champion of `name`, since when and why; with the whole history of moves if asked."""
    holder = current_champion(client, name)
    if holder is None:
        return f"'{name}' has no @champion yet (run the pipeline: make run)"
    since = champions.holder_since(client, name)
    known = f"since {since.at}, by {since.source}" if since else "since before the history was kept"
    lines = [f"models:/{name}@champion = v{holder.version} ({known}): "
             f"{holder.tags.get('champion_reason', 'no reason recorded')}"]
    if with_history:
        lines += ["", champions.format_history(champions.history(client, name), int(holder.version))]
    return "\n".join(lines)


def rollback(client, name: str, to: int | None, layout: Layout) -> str:
    """Move @champion of `name` to version `to` (None: the previous holder) if it serves; say what moved."""
    holder = current_champion(client, name)
    if holder is None:
        raise UserError(f"'{name}' has no @champion to roll back")
    current = int(holder.version)
    target = to if to is not None else _previous_holder(client, name, current)
    if target == current:
        raise UserError(f"v{target} of '{name}' already holds @champion")
    uri = f"models:/{name}/{target}"
    images, expected = _sample_answers(uri, layout)
    servable, finding = ServabilityCheck(uri, images, expected).result()
    if not servable:
        raise UserError(f"refused: {finding}; @champion stays on v{current}")
    reason = f"rolled back from v{current} by resnet-mlops rollback; {finding}"
    try:
        champions.move_champion(client, name, target, reason, "rollback", expected=current)
    except champions.ChampionChanged as changed:
        raise UserError(f"@champion of '{name}' moved to v{changed.current} while v{target} was checked; "
                        f"nothing was rolled back (look at `resnet-mlops champion --history`)") from None
    client.set_model_version_tag(name, target, "champion_reason", reason)
    client.update_registered_model(name, with_champion(client.get_registered_model(name).description or "",
                                                       target, reason))
    return f"@champion of '{name}': v{current} -> v{target} ({finding})"


def _previous_holder(client, name: str, current: int) -> int:
    since = champions.holder_since(client, name)
    if since is None or since.previous is None:
        raise UserError(f"the champion history of '{name}' names no holder before v{current}; "
                        f"say which version with --to VERSION")
    return since.previous


def _sample_answers(uri: str, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """A few images the model at `uri` takes, and its in-process answers to them."""
    import mlflow

    try:
        served = mlflow.pyfunc.load_model(uri).unwrap_python_model()
    except Exception as error:  # noqa: BLE001 - whatever a missing or broken version raises, in one line
        raise UserError(f"{uri} cannot be loaded ({first_line(error)}); @champion was not moved") from None
    shape = tuple(served.image_shape)
    if (layout.prepared / "summary.json").exists() and tuple(read_summary(layout.prepared)["image_shape"]) == shape:
        images = read_split(layout.prepared, "test").images[:SAMPLE]
    else:
        images = np.random.default_rng(0).integers(0, 256, (SAMPLE, *shape), dtype=np.uint8)
    return images, served.probabilities(images)
