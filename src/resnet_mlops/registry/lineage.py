"""`resnet-mlops lineage`: a registered version's commit, data hashes, starting weights, params and the
commands that rebuild it."""

from __future__ import annotations

from resnet_mlops.errors import UserError
from resnet_mlops.registry.model_card import starting_weights
from resnet_mlops.registry.store import registered_version


def lineage(model_uri: str) -> str:
    """What `resnet-mlops lineage` prints: the version, its commit, data and params, and the
    commands that rebuild it (from the tags `train` and `register` recorded)."""
    import mlflow

    version = registered_version(model_uri)
    if version is None:
        raise UserError(f"{model_uri}: lineage is kept for registered versions; give "
                        f"models:/<name>@<alias> or models:/<name>/<version>")
    run = mlflow.MlflowClient().get_run(version.run_id)
    tags = {**run.data.tags, **version.tags}
    unknown = "not recorded"
    dirty = " (with uncommitted changes)" if tags.get("git.dirty") == "true" else ""
    lines = [f"{model_uri} = models:/{version.name}/{version.version} (run {version.run_id})",
             f"commit     {tags.get('git.commit', unknown)}{dirty}",
             f"data       {tags.get('data.source', unknown)}: data/prepared {tags.get('data.dvc_hash', unknown)} "
             f"(content {tags.get('data.content_hash', unknown)})",
             f"weights    {starting_weights(tags)}",
             f"params     {len(run.data.params)} (hash {tags.get('params.hash', unknown)})",
             *(f"  {key} = {value}" for key, value in sorted(run.data.params.items())),
             f"reproduce  {tags.get('reproduce', unknown)}"]
    return "\n".join(lines)
