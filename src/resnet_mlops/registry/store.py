"""Reading the MLflow registry: who holds `@champion`, which version a `models:/` URI names.

Every failure to read it is one line naming the registry (`UserError`), never a traceback.
"""

from __future__ import annotations

from resnet_mlops.errors import UserError
from resnet_mlops.project import CHAMPION


# What the registry answers for a model it does not have, and for an alias no version holds.
_NO_CHAMPION = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def current_champion(client, name: str):
    """The version `client`'s registry has under @champion for model `name`, or None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if error.error_code in _NO_CHAMPION:
            return None
        raise UserError(f"the model registry at {mlflow.get_registry_uri()} could not be read "
                        f"({first_line(error)}); nothing was registered") from None


def first_line(error: Exception) -> str:
    return (str(getattr(error, "message", "") or error).strip().splitlines() or [type(error).__name__])[0]


def registered_version(model_uri: str):
    """The registry's version that `models:/<name>@<alias>` or `models:/<name>/<number>` names now;
    None for any other URI (a run, a path, `latest`), which MLflow resolves itself."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name, _, alias = model_uri.removeprefix("models:/").partition("@")
    number = name.rpartition("/")[2]
    if not model_uri.startswith("models:/") or not (alias or number.isdigit()):
        return None
    client = mlflow.MlflowClient()
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name.rpartition("/")[0], number)
    except MlflowException as error:
        raise UserError(f"{model_uri}: not in the model registry at {mlflow.get_tracking_uri()} "
                        f"({first_line(error)}); run the pipeline first, or pass --model") from None
