"""A server the tests start as a real process: wait until it answers, stop it and its children.

Shared by `mlflow_server`, `prefect_server` and the tests of the make targets: each starts its
server in a new session (`start_new_session=True`) with its output in a log file, which a
failed start quotes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def wait_until_answers(process: subprocess.Popen, url: str, log: Path, within_s: float, what: str) -> bytes:
    """The body of the first 200 from `url`; RuntimeError quoting `log` if `process` exits first or
    nothing answers within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before {url} answered:\n"
                               f"{Path(log).read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return response.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what}: {url} did not answer within {within_s:.0f} s:\n"
                       f"{Path(log).read_text(errors='replace')[-3000:]}")


def stop_group(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM to the process group (a server's workers are its children), SIGKILL if it stays."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            continue
