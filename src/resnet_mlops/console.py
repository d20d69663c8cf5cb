"""What a command prints: our own lines and Keras' progress, not the libraries' start-up chatter.

TensorFlow writes its start-up notices (the oneDNN notice, absl's "All log messages
before absl::InitializeLog()") from C++ straight to file descriptor 2 while it is
imported, before any setting can silence them: `TF_CPP_MIN_LOG_LEVEL` does not reach
them. So the import runs with descriptor 2 captured, and everything captured except
those notices is written back — a real import error still shows in full.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile

QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",            # TensorFlow's C++ INFO and WARNING lines
    "MLFLOW_LOGGING_LEVEL": "WARNING",      # "Creating initial MLflow database tables...", system-metrics notes
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # download bars for files of a few kB
    "DO_NOT_TRACK": "1",                    # no usage telemetry (offline it only fails)
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # offline, Prefect's server logs an ERROR per attempt
}

_STARTUP_NOTICES = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I0000 .*\] oneDNN custom operations are on\. .*)$"
)


# DVC's closing hints after `dvc repro`: `git add dvc.lock`, auto staging, `dvc push` (even with no remote).
_DVC_HINTS = re.compile(r"\n*To track the changes with git, run:\n\n\s*git add [^\n]*\n"
                        r"(\nTo enable auto staging, run:\n\n\s*dvc config core.autostage true\n)?"
                        r"|Use `dvc push` to send your updates to remote storage.\n")


def without_dvc_hints(text: str) -> str:
    """`dvc repro`'s output less its closing hints (this project's own summaries say what to do)."""
    return _DVC_HINTS.sub("", text)


def quiet_environment() -> None:
    """Set the quiet defaults (a value the user set wins); child processes inherit them."""
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def import_quietly(module: str):
    """Import `module` (e.g. "keras", which imports TensorFlow) without TensorFlow's start-up notices."""
    if module in sys.modules:
        return sys.modules[module]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return importlib.import_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _STARTUP_NOTICES.match(line.rstrip("\n"))]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()
