"""`resnet-mlops serve`: the champion (or any model URI) behind MLflow's REST scoring server.

The command resolves `models:/<name>@champion` to the version it names *now*,
says which one, and then becomes uvicorn running MLflow's scoring server on it:
what `mlflow models serve --env-manager local` runs, with two differences. The
request's `params` are judged by the model itself before MLflow sees them
(`CheckedParams`), and every answer carries the version that produced it
(`X-Model-Version`). Served by its alias (the default), the server follows it:
when `@champion` moves, the new version is loaded and checked, then takes over
without a gap (`serving/follow.py`); `--no-follow` pins the version it started on.
The process is replaced, so Ctrl-C or a SIGTERM to its pid stops the server.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from resnet_mlops.errors import UserError

if TYPE_CHECKING:
    from resnet_mlops.serving.inputs import Limits

MODEL_VARIABLE = "RESNET_MLOPS_SERVED_MODEL"  # the pinned URI, from `serve` to the server's workers
FOLLOW_VARIABLE = "RESNET_MLOPS_FOLLOW"       # the alias URI to follow, when following
POLL_VARIABLE = "RESNET_MLOPS_FOLLOW_SECONDS"  # how often the workers ask the registry
APP = "resnet_mlops.serving.server:scoring_app"


def choose_limits(**given: int | None) -> Limits:
    """The environment's limits (`RESNET_MLOPS_MAX_*`, else the defaults), with the options given."""
    from resnet_mlops.serving.inputs import Limits

    try:
        found = Limits.from_environment()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return replace(found, **{key: value for key, value in given.items() if value is not None})


def resolve(model_uri: str) -> tuple[str, str]:
    """(the URI to serve, a description of what it is): aliases become the version they name now."""
    from resnet_mlops.registry.store import registered_version

    version = registered_version(model_uri)
    if version is None:
        return model_uri, model_uri  # a run, a path, `latest`: MLflow resolves it
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


def serve(model_uri: str, host: str, port: int, workers: int, timeout: int, limits: Limits,
          follow_s: float | None = None) -> None:
    """Replace this process with the scoring server on the resolved model; returns only on error.

    As `mlflow models serve --env-manager local -m URI --timeout T` does: uvicorn with --host,
    --port and --workers, the request timeout in MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.
    `follow_s`: when `model_uri` is an alias, ask the registry every so many seconds and switch
    to the version it names (None: serve the version it names now, for good).
    """
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    from resnet_mlops import tracking

    tracking_uri = tracking.configure()
    check_port_free(host, port)
    pinned, description = resolve(model_uri)
    following = follow_s is not None and "@" in model_uri and pinned != model_uri
    after = (f"following {model_uri}: a new version takes over within about {follow_s:g} s and its load"
             if following else "pinned to this version: restart the command to serve another")
    print(f"serve: {description}\nserve: http://{host}:{port}/invocations  ({after}; Ctrl-C stops it)", flush=True)
    env = {**os.environ, **limits.environment(), "MLFLOW_TRACKING_URI": tracking_uri, MODEL_VARIABLE: pinned,
           MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name: str(timeout)}
    if following:
        env.update({FOLLOW_VARIABLE: model_uri, POLL_VARIABLE: str(follow_s)})
    command = [sys.executable, "-m", "uvicorn", "--factory", APP, "--host", host, "--port", str(port),
               "--workers", str(workers)]
    os.execve(sys.executable, command, env)


class CheckedParams:
    """The loaded pyfunc as MLflow's scoring server uses it (`metadata`, `predict`), with each
    request's `params` judged by the model's `check_params` before MLflow's own check.

    MLflow checks them against the signature (`top_k: long`) and answers a string or a
    fraction with its own type error; a key the signature does not name it drops, with a log
    line and no word to the client. The model's check refuses both, by name, with a 400.
    """

    def __init__(self, model, check_params):
        self._model = model
        self._check_params = check_params
        self.metadata = model.metadata

    def predict(self, data, params=None):
        return self._model.predict(data, params=self._check_params(params))

    def __getattr__(self, name):
        return getattr(self._model, name)


def scoring_app():
    """The app `uvicorn --factory` runs in each worker: MLflow's scoring server (`mlflow models
    serve` runs the same, `mlflow.pyfunc.scoring_server.app`) on the model named by
    RESNET_MLOPS_SERVED_MODEL, or following the alias in RESNET_MLOPS_FOLLOW. A model without
    `check_params` (not this project's, or logged before it had one) is served exactly as MLflow
    serves it."""
    from resnet_mlops import console
    from resnet_mlops.serving.follow import Following, VersionedApp

    console.import_quietly("keras")  # the model's load imports it: without TensorFlow's start-up notices
    alias = os.environ.get(FOLLOW_VARIABLE)
    if alias is None:
        pinned = os.environ[MODEL_VARIABLE]
        return VersionedApp(pinned, _checked_app(pinned))
    return Following(lambda: resolve(alias)[0], _checked_app, float(os.environ[POLL_VARIABLE]))


def _checked_app(pinned: str):
    """MLflow's scoring app on the version `pinned`, once it has answered an image of its input shape."""
    import mlflow
    import numpy as np
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    # The model brings its own copy of this package (`code_paths`) and must run that one, as under
    # `mlflow models serve`: forget the copy this worker imported (or the last version brought).
    for name in [name for name in sys.modules if name.partition(".")[0] == "resnet_mlops"]:
        del sys.modules[name]
    model = mlflow.pyfunc.load_model(pinned)
    try:
        served = model.unwrap_python_model()
    except MlflowException:  # not a PythonModel
        served = None
    check_params = getattr(served, "check_params", None)
    if hasattr(served, "image_shape"):
        answered = model.predict(np.zeros((1, *served.image_shape), np.uint8))
        if len(answered) != 1:
            raise RuntimeError(f"{pinned} answered {len(answered)} rows for one image")
    return scoring_server.init(model if check_params is None else CheckedParams(model, check_params))
