"""The tests' environment, and the fixtures: a tiny params file and throw-away git+DVC repositories.

The helpers the tests share live in tests/support/ (`from support.project_repo import ...`).

`make test` spreads the test modules over pytest-xdist workers (`--dist loadfile`): each module runs
whole, in order, on one worker, so a module-scoped fixture (a server, a trained model) is built once and
tests that build on the one before (test_deployment's) keep working. (pytest-xdist 3.8's `loadgroup`
does not group under pytest 9: it renames `item._nodeid`, which pytest 9 no longer reads.)
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest

from support.project_repo import TINY_PARAMS, copy_repo, file_states, make_project_repo, reproduce

# The stage commands (`resnet-mlops ...`) and `dvc` come from the environment running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GIT_AUTHOR_NAME", "resnet-mlops tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@localhost")
os.environ.setdefault("GIT_COMMITTER_NAME", "resnet-mlops tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@localhost")


@pytest.fixture
def tiny_params() -> dict:
    return copy.deepcopy(TINY_PARAMS)


@pytest.fixture
def project_repo(tmp_path, tiny_params, monkeypatch) -> Path:
    """A committed repository where the pipeline has not run yet: for tests of a first run."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return make_project_repo(tmp_path / "repo", tiny_params)


@pytest.fixture(scope="session")
def reproduced_original(tmp_path_factory) -> Path:
    """The tiny pipeline reproduced once per session. Tests get copies (`reproduced_repo`), never this."""
    return reproduce(tmp_path_factory.mktemp("reproduced") / "repo", TINY_PARAMS)


@pytest.fixture
def reproduced_repo(reproduced_original, tmp_path, monkeypatch) -> Path:
    """This test's own copy of a repository where `dvc repro` ran once on the tiny params (uncommitted),
    for tests that start from there; a test that changes the shared original fails at teardown."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = file_states(reproduced_original)
    yield copy_repo(reproduced_original, tmp_path / "repo")
    assert file_states(reproduced_original) == before, f"a test changed {reproduced_original}, which others copy"
