"""`resnet-mlops report --base REV`: the CI retraining report, one Markdown file.

What changed against the git revision REV and what it did: the params diff and the metrics diff
(`dvc params diff REV --md`, `dvc metrics diff REV --md --all`), DVC's charts of both revisions
(`dvc plots diff REV --json` gives each chart as a Vega-Lite spec with its data inlined; vl-convert
renders it to PNG offline, where DVC's own HTML, which loads Vega from a CDN, stays blank), and the
promotion gate's verdict from reports/promotion.json.

DVC prints a table of `-` when REV holds none of the metrics (the pipeline had not run, or its
results were not committed) and exits 0; the report says so in one sentence instead, and shows
the workspace's own metrics.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from resnet_mlops import project
from resnet_mlops.errors import UserError
from resnet_mlops.project import Layout

PNG_SCALE = 2  # device pixels per Vega pixel: DVC's 300-pixel charts come out 600 pixels wide


def find_dvc_root(start: Path) -> Path:
    """The DVC project `start` is in (the nearest folder up holding `.dvc/`)."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise UserError(f"{start} is not in a DVC project (no .dvc/ folder here or above; `dvc init` makes one)")


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def resolve_revision(rev: str, root: Path) -> str:
    """The full commit id git knows `rev` as, or a UserError naming it."""
    top = _git(["rev-parse", "--show-toplevel"], root)
    if top.returncode != 0:
        raise UserError(f"{root} is not in a git repository, so there is no revision {rev!r} to compare with")
    done = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"], root)
    if done.returncode != 0 or not rev.strip() or rev.startswith("-"):
        raise UserError(f"--base {rev}: git knows no such revision in {top.stdout.strip()} "
                        f"(a commit, branch or tag; a shallow clone may lack it: fetch with full history)")
    return done.stdout.strip()


def _in_commit(commit: str, path: str, root: Path) -> bool:
    """Whether the commit holds `path` (relative to the DVC root)."""
    return _git(["cat-file", "-e", f"{commit}:./{path}"], root).returncode == 0


def _rev_has_none(diff: dict) -> list[str]:
    """The files of a `dvc params/metrics diff --json` whose every value is missing at the old revision."""
    return [path for path, values in diff.items()
            if values and all(value.get("old") is None for value in values.values())]


def _missing_sentence(what: str, files: list[str], rev: str, commit: str, root: Path) -> str:
    names = ", ".join(f"`{f}`" for f in files)
    absent = [f for f in files if not _in_commit(commit, f, root)]
    why = (f"{names} {'is' if len(files) == 1 else 'are'} not in that commit" if absent == files else
           f"DVC finds none of the values in {names} there")
    return (f"Revision `{rev}` ({commit[:7]}) has no {what}: {why} (the pipeline had not run, or its results "
            f"were not committed), so there is nothing to compare them with.")


def params_section(rev: str, commit: str, root: Path, diff: dict, table: str) -> str:
    lines = ["## Params", ""]
    missing = [f for f in _rev_has_none(diff) if not _in_commit(commit, f, root)]
    if missing:
        lines += [_missing_sentence("params", missing, rev, commit, root), ""]
        diff = {path: values for path, values in diff.items() if path not in missing}
    if not any(diff.values()):
        lines.append(f"No param differs from `{rev}` ({commit[:7]})." if not missing else
                     "No other params file differs.")
    else:
        lines.append(table.strip())
    return "\n".join(lines)


def metrics_section(rev: str, commit: str, root: Path, diff: dict, table: str) -> str:
    lines = ["## Metrics", ""]
    if not diff:
        return "\n".join([*lines, f"Neither `{rev}` ({commit[:7]}) nor the workspace has metrics."])
    if all(value.get("new") is None for values in diff.values() for value in values.values()):
        return "\n".join([*lines, "The workspace has no metrics (the pipeline has not run here: `dvc repro`)."])
    missing = _rev_has_none(diff)
    if missing and len(missing) == len(diff):
        shown = project.dvc(["metrics", "show", "--md"], root).strip()
        return "\n".join([*lines, _missing_sentence("metrics", missing, rev, commit, root), "",
                          "The workspace's metrics:", "", shown])
    if missing:
        lines += [_missing_sentence("metrics", missing, rev, commit, root) + " Their rows show `-` for it.", ""]
    return "\n".join([*lines, table.strip()])


def _spec(content) -> dict:
    return json.loads(content) if isinstance(content, str) else content


def render_plots(plots: dict, rev: str, images: Path, relative_to: Path) -> str:
    """Each chart of `dvc plots diff --json` as images/<name>.png, and the Markdown that shows them."""
    import vl_convert

    images.mkdir(parents=True, exist_ok=True)
    lines = ["## Charts", ""]
    data = plots.get("data") or {}
    if not data:
        return "\n".join([*lines, "DVC has no plot data (no `plots` in dvc.yaml, or the pipeline has not run)."])
    for name, renderers in data.items():
        vega = [r for r in renderers if r.get("type") == "vega"]
        if not vega:
            lines += [f"- {name}: not a Vega chart (DVC shows it as an image), left out", ""]
            continue
        revisions = vega[0].get("revisions") or []
        png = vl_convert.vegalite_to_png(_spec(vega[0]["content"]), scale=PNG_SCALE)
        path = images / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        path.write_bytes(png)
        link = Path(os.path.relpath(path.resolve(), relative_to.resolve())).as_posix()
        shown = ", ".join(f"`{r}`" for r in revisions)
        lines += [f"### {name}", "", f"![{name}]({link})", "", f"Revisions: {shown}." + (
            "" if len(revisions) > 1 or rev in revisions else f" `{rev}` has no data for this chart."), ""]
    return "\n".join(lines).rstrip()


def _number(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def promotion_section(layout: Layout) -> str:
    lines = ["## Promotion", ""]
    if not layout.promotion.is_file():
        return "\n".join([*lines, f"No promotion decision: `{layout.promotion.relative_to(layout.root)}` is missing "
                                  f"(the register stage has not run here)."])
    verdict = json.loads(layout.promotion.read_text())
    registration = json.loads(layout.registration.read_text()) if layout.registration.is_file() else {}
    version = (f"{registration['model_name']} version {registration['version']}"
               if {"model_name", "version"} <= set(registration) else "this run's version")
    champion = verdict.get("champion_version")
    rows = [
        ("decision", f"**{verdict['decision']}** ({version})"),
        ("reason", verdict["reason"]),
        ("compared against", f"champion version {champion}" if champion is not None else
                             "no champion (the first version of the name)"),
        ("test accuracy", _number(verdict.get("accuracy"), ".4f")),
        ("accuracy delta", _number(verdict.get("accuracy_delta"), "+.4f")),
        ("McNemar p-value", _number(verdict.get("p_value"), ".4g")),
        ("b (only the champion right)", _number(verdict.get("b"), "d")),
        ("c (only the challenger right)", _number(verdict.get("c"), "d")),
        ("servable", "yes" if verdict.get("servable") else "no"),
    ]
    if verdict.get("forced_by"):
        rows.append(("forced by", verdict["forced_by"]))
    cells = (f"| {label} | {str(value).replace('|', chr(92) + '|')} |" for label, value in rows)
    return "\n".join([*lines, "| | |", "|---|---|", *cells])


def build_report(base: str, images: Path, output: Path | None, start: Path | None = None) -> str:
    """The report's Markdown, with its charts written under `images` (linked relative to `output`'s folder,
    or to the working directory when the report goes to stdout)."""
    root = find_dvc_root(start or Path.cwd())
    commit = resolve_revision(base, root)
    calls = {  # DVC names the old revision as given: the user's REV, not a commit id
        "params": ["params", "diff", base, "--json"],
        "params_md": ["params", "diff", base, "--md"],
        "metrics": ["metrics", "diff", base, "--all", "--json"],
        "metrics_md": ["metrics", "diff", base, "--all", "--md"],
        "plots": ["plots", "diff", base, "--json"],
    }
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = {key: pool.submit(project.dvc, args, root) for key, args in calls.items()}
        out = {key: future.result() for key, future in futures.items()}
    relative_to = output.parent if output is not None else Path.cwd()
    subject = _git(["log", "-1", "--format=%s", commit], root).stdout.strip()
    sections = [
        "# Retraining report",
        f"The workspace against `{base}` ({commit[:7]}: {subject}).",
        params_section(base, commit, root, json.loads(out["params"] or "{}"), out["params_md"]),
        metrics_section(base, commit, root, json.loads(out["metrics"] or "{}"), out["metrics_md"]),
        render_plots(json.loads(out["plots"] or "{}"), base, images, relative_to),
        promotion_section(Layout(root)),
    ]
    return "\n\n".join(sections) + "\n"


def write_report(base: str, output: str | None, images: str) -> str:
    """`resnet-mlops report`: the report to `output` (stdout when None); what the command prints last."""
    target = Path(output) if output else None
    markdown = build_report(base, Path(images), target)
    if target is None:
        return markdown
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(markdown)
    return f"report: {target} (charts in {images})"
