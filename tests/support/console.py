"""What a user's console must not show, and a shell where this project's environment is not activated."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Lines that are the libraries' business, not the user's (issue 11, item 9).
NOISE = ("oneDNN custom operations", "absl::InitializeLog", "Failed to send telemetry", "Add type hints",
         "interpreted in multiple ways", "CloudPickle", "Downloading artifacts", "Use `dvc push`",
         "Creating initial MLflow database", "command not found", "resnet-mlops: not found", "is empty.",
         "Traceback")


def unactivated_path() -> str:
    """$PATH without the environment running the tests: a shell where it is not activated."""
    bin_dir = str(Path(sys.executable).parent)
    return os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bin_dir)
