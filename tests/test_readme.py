"""The README's commands, exactly as written, in a fresh clone, from a shell with no environment activated.

The blocks are read from README.md itself, so the README cannot drift from what works.
A ```sh block runs unless the line before it says `<!-- README test: not run: REASON -->`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.console import NOISE, unactivated_path
from support.project_repo import PROJECT, run

BLOCK = re.compile(r"(?:<!-- README test: not run: (?P<why>.+?) -->\n)?```sh\n(?P<body>.*?)```", re.S)

def readme_blocks() -> list[tuple[str | None, str]]:
    return [(m["why"], m["body"]) for m in BLOCK.finditer((PROJECT / "README.md").read_text())]


def test_every_readme_block_runs_or_says_why_not():
    blocks = readme_blocks()
    fences = (PROJECT / "README.md").read_text().count("```sh\n")
    assert len(blocks) == fences >= 8
    ran = [body for why, body in blocks if why is None]
    assert any("make run" in body for body in ran) and any("dvc exp run" in body for body in ran)
    assert all(why.strip() for why, _ in blocks if why is not None)


def fresh_clone(folder: Path) -> Path:
    """The working tree's files as `git clone` gives them (tracked and new, not ignored), committed."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], PROJECT).stdout
    for name in filter(None, listed.split("\0")):
        source = PROJECT / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)  # keeps mtimes: make sees the environment as up to date
    run(["git", "init", "--quiet", "--initial-branch=main"], folder)
    run(["git", "add", "-A"], folder)
    run(["git", "commit", "--quiet", "-m", "clone"], folder)
    return folder


def unactivated_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PYTHONPATH")}
    return {**env, "PATH": unactivated_path()}


@pytest.mark.slow
def test_the_readme_commands_work_as_written_in_a_fresh_clone(tmp_path):
    venv = Path(sys.prefix)
    clone = fresh_clone(tmp_path / "clone")
    (clone / ".venv").symlink_to(venv)  # the environment `make` built from the lock file, not a second install
    env = unactivated_environment()
    if subprocess.run(["make", "-q", "venv"], cwd=clone, env=env).returncode != 0:
        pytest.skip(f"{venv} is not the environment `make` built from this lock file ({venv}/.installed "
                    f"missing or older): `make test` builds it")
    script = ["set -euo pipefail"]
    for i, (why, body) in enumerate(readme_blocks()):
        if why is None:
            script += [f"echo '### README block {i}'", body]
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=1200)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]

    assert "== resnet-mlops: pipeline finished (ran prepare, train, evaluate, register) ==" in out
    assert "git add dvc.lock reports && git commit" in out  # what the summary asks is what the README does
    table = [line for line in done.stdout.splitlines() if line.lstrip().startswith(("workspace", "main", "└──", "├──"))]
    assert len(table) >= 3, done.stdout[-4000:]
    assert not any("!" in line for line in table), "\n".join(table)  # every row, main included, has its metrics
    assert re.search(r"reports/metrics\.json\s+test_accuracy\s+0\.\d+\s+0\.\d+", done.stdout), done.stdout[-3000:]
    assert '"register"' in done.stdout and '"champion"' in done.stdout  # the flow's summaries
    noisy = [line for line in out.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, "\n".join(noisy)
    # `dvc exp run -S train.epochs=3` left params.yaml changed by exactly that value (as the README says).
    changed = [line for line in run(["git", "diff", "-U0", "params.yaml"], clone).stdout.splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert [line[0] + line[1:].split("#")[0].strip() for line in changed] == ["-epochs: 12", "+epochs: 3"], changed
