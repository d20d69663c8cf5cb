"""Pointing MLflow at a test's own store, and back.

`mlflow.set_tracking_uri` changes a process-wide setting and also sets MLFLOW_TRACKING_URI (so that
subprocesses inherit it); a test that calls it, directly or through `tracking.configure()`, must put
both back, or every later test in the process talks to its store.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import mlflow
from mlflow.tracking._tracking_service import utils as _tracking_utils

ENV = "MLFLOW_TRACKING_URI"


@contextmanager
def restored_tracking_uri() -> Iterator[None]:
    """Whatever the block sets the tracking URI to, the process's setting and environment as before."""
    setting, environment = _tracking_utils._tracking_uri, os.environ.get(ENV)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(setting)  # also sets (or, for None, unsets) the environment variable
        if environment is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = environment


@contextmanager
def tracking_store(uri: str) -> Iterator[str]:
    """MLflow's tracking (and so registry) URI set to `uri` for the block; yields `uri`."""
    with restored_tracking_uri():
        mlflow.set_tracking_uri(uri)
        yield uri
