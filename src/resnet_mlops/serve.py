"""`resnet-mlops serve`: the champion (or any model URI) behind MLflow's REST scoring server.

The command resolves `models:/<name>@champion` to the version it names *now*,
says which one, and then becomes `mlflow models serve --env-manager local` on
that pinned version (the process is replaced, so Ctrl-C or a SIGTERM to its
pid stops the server). A running server therefore keeps serving that version
when `@champion` moves: restart the command to serve the new champion.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

from resnet_mlops.errors import UserError
from resnet_mlops.registry import CHAMPION
from resnet_mlops.serving_inputs import Limits


def champion_uri(params_file: str) -> str:
    from resnet_mlops.config import load_params

    return f"models:/{load_params(params_file).register.model_name}@{CHAMPION}"


def choose_limits(**given: int | None) -> Limits:
    """The environment's limits (`RESNET_MLOPS_MAX_*`, else the defaults), with the options given."""
    try:
        found = Limits.from_environment()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return replace(found, **{key: value for key, value in given.items() if value is not None})


def resolve(model_uri: str) -> tuple[str, str]:
    """(the URI to serve, a description of what it is): aliases become the version they name now."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name, _, alias = model_uri.removeprefix("models:/").partition("@")
    number = name.rpartition("/")[2]
    if not model_uri.startswith("models:/") or not (alias or number.isdigit()):
        return model_uri, model_uri  # a run, a path, `latest`: MLflow resolves it
    client = mlflow.MlflowClient()
    try:
        if alias:
            version = client.get_model_version_by_alias(name, alias)
        else:
            version = client.get_model_version(name.rpartition("/")[0], number)
    except MlflowException as exc:
        raise UserError(f"{model_uri}: not in the model registry at {mlflow.get_tracking_uri()} "
                        f"({exc.message.splitlines()[0]}); run the pipeline first, or pass --model") from None
    pinned = f"models:/{version.name}/{version.version}"
    return pinned, f"{model_uri} = {pinned} (run {version.run_id})"


def check_port_free(host: str, port: int) -> None:
    """Fail in one line now rather than in the server's traceback once the model is loaded."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind((host, port))
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --host "
                        "or --port") from None


def serve(model_uri: str, host: str, port: int, workers: int, timeout: int, limits: Limits) -> None:
    """Replace this process with `mlflow models serve` on the resolved model; returns only on error."""
    from resnet_mlops import tracking

    tracking_uri = tracking.configure()
    check_port_free(host, port)
    pinned, description = resolve(model_uri)
    print(f"serve: {description}\nserve: http://{host}:{port}/invocations  (restart this command to serve a "
          f"newer @{CHAMPION}; Ctrl-C stops it)", flush=True)
    bin_dir = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` from the PATH
    env = {**os.environ, **limits.environment(), "MLFLOW_TRACKING_URI": tracking_uri,
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", pinned, "--env-manager", "local",
               "--host", host, "--port", str(port), "--workers", str(workers), "--timeout", str(timeout)]
    os.execve(sys.executable, command, env)
