"""The architecture as a test: which module may import which, and the README's map of the tree.

The import graph is read from the source with `ast` (nothing is imported), in two layers:
module-level imports, which run when a module is imported and must not form a cycle, and
imports inside functions, which run when called (how the heavy or optional dependencies are
deferred). The direction rules hold for both:

- nothing in a subpackage imports the entry points (`cli`, `run`, `stages`) or `pipeline/`;
- the base modules (atomic, errors, project, console, presets) import no subpackage;
- `dataset/` is the contract the stages read: it imports nothing of data/, training/,
  evaluation/, serving/ or registry/;
- `models/` builds networks only: it imports none of the other subpackages.

Accepted on purpose: `config.py` (a top-level module, not a base one) imports `models/` to
check `model.*` options while validating params.yaml.

A failure names the importing file and line; the fix is to move the code, not to relax a rule.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SRC = PROJECT / "src"
PACKAGE = "resnet_mlops"
SUBPACKAGES = ("data", "dataset", "models", "training", "evaluation", "serving", "registry")
ENTRY_POINTS = (f"{PACKAGE}.cli", f"{PACKAGE}.run", f"{PACKAGE}.stages", "pipeline")
BASE_MODULES = ("atomic", "errors", "project", "console", "presets")
DATASET_MAY_NOT_IMPORT = ("data", "training", "evaluation", "serving", "registry")
MODELS_MAY_NOT_IMPORT = ("data", "dataset", "training", "evaluation", "serving", "registry")
LEVELS = ("module-level", "function-level")


class Import(NamedTuple):
    source: str   # the importing module
    target: str   # the imported module (or package)
    where: str    # file:line
    level: str    # "module-level" or "function-level"


def module_files() -> dict[str, Path]:
    """Every module of the package and of pipeline/, by dotted name."""
    files = {}
    for path in [*sorted((SRC / PACKAGE).rglob("*.py")), *sorted((PROJECT / "pipeline").rglob("*.py"))]:
        base = SRC if path.is_relative_to(SRC) else PROJECT
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


MODULES = module_files()


def _imports_of(name: str, path: Path) -> list[Import]:
    found = []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def add(target: str, node: ast.AST, in_function: bool) -> None:
        if target.split(".")[0] in (PACKAGE, "pipeline"):
            found.append(Import(name, target, f"{path.relative_to(PROJECT)}:{node.lineno}", LEVELS[in_function]))

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child, in_function)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package[:len(package) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in child.names:
                    submodule = f"{base}.{alias.name}"
                    add(submodule if submodule in MODULES else base, child, in_function)
            else:
                visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return found


IMPORTS = [imp for name, path in MODULES.items() for imp in _imports_of(name, path)]


def _is_in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _sub(name: str) -> str:
    return f"{PACKAGE}.{name}"


def _violations(level: str, importer, forbidden) -> list[str]:
    return [f"{imp.where}: {imp.source} imports {imp.target}" for imp in IMPORTS
            if imp.level == level and importer(imp.source) and forbidden(imp.target)]


def test_the_graph_sees_the_package():
    assert f"{PACKAGE}.cli" in MODULES and f"{PACKAGE}.dataset.images" in MODULES
    assert any(imp.level == "module-level" for imp in IMPORTS) and any(imp.level == "function-level" for imp in IMPORTS)
    actual = sorted(p.parent.name for p in (SRC / PACKAGE).glob("*/__init__.py"))
    assert actual == sorted(SUBPACKAGES), f"subpackages are {actual}: give a new one its place in these rules"


def _module_level_graph() -> dict[str, list[Import]]:
    """Module-level edges, plus the package __init__ files an import runs on the way to its target
    (importing a.b.c runs a/__init__ and a/b/__init__ first, unless the importer lives inside them)."""
    graph: dict[str, list[Import]] = {name: [] for name in MODULES}
    for imp in IMPORTS:
        if imp.level != "module-level" or imp.target not in MODULES:
            continue
        parts = imp.target.split(".")
        for i in range(1, len(parts) + 1):
            target = ".".join(parts[:i])
            if target in MODULES and target != imp.source and not _is_in(imp.source, target):
                graph[imp.source].append(imp._replace(target=target))
    return graph


def test_no_import_cycle_among_module_level_imports():
    graph = _module_level_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[Import] = []
    cycles = []

    def visit(node: str) -> None:
        state[node] = 1
        for edge in graph[node]:
            if state.get(edge.target) == 1:  # back on the current path: a cycle from there to here
                start = next(i for i, e in enumerate(path) if e.source == edge.target)
                cycles.append(" -> ".join(f"{e.source} ({e.where})" for e in [*path[start:], edge]) + f" -> {edge.target}")
            elif edge.target not in state:
                path.append(edge)
                visit(edge.target)
                path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "module-level import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("level", LEVELS)
def test_nothing_in_a_subpackage_imports_the_entry_points(level):
    bad = _violations(level, lambda m: any(_is_in(m, _sub(p)) for p in SUBPACKAGES),
                      lambda t: any(_is_in(t, entry) for entry in ENTRY_POINTS))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("level", LEVELS)
def test_the_base_modules_import_no_subpackage(level):
    bad = _violations(level, lambda m: m in {_sub(b) for b in BASE_MODULES},
                      lambda t: any(_is_in(t, _sub(p)) for p in SUBPACKAGES))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("level", LEVELS)
def test_the_dataset_contract_imports_none_of_its_readers(level):
    bad = _violations(level, lambda m: _is_in(m, _sub("dataset")),
                      lambda t: any(_is_in(t, _sub(p)) for p in DATASET_MAY_NOT_IMPORT))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("level", LEVELS)
def test_models_import_no_other_subpackage(level):
    bad = _violations(level, lambda m: _is_in(m, _sub("models")),
                      lambda t: any(_is_in(t, _sub(p)) for p in MODELS_MAY_NOT_IMPORT))
    assert not bad, "\n".join(bad)


def test_config_is_the_one_accepted_importer_of_models_among_the_shared_modules():
    """config.py validates `model.*` options with models.validate; no other shared top-level
    module (those the subpackages import) reaches into a subpackage at module level."""
    shared = {_sub(m) for m in ("config", "tracking", *BASE_MODULES)}
    reaching = sorted({(imp.source, imp.target.split(".")[1]) for imp in IMPORTS
                       if imp.level == "module-level" and imp.source in shared
                       and any(_is_in(imp.target, _sub(p)) for p in SUBPACKAGES)})
    assert reaching == [(_sub("config"), "models")], reaching


# ----------------------------------------------------------------------------- the README's map


def readme_map() -> dict[Path, str]:
    """The paths README's `## Layout` code block names (nested by indentation), with their job."""
    text = (PROJECT / "README.md").read_text()
    match = re.search(r"^## Layout\n.*?^```\n(.*?)^```", text, re.M | re.S)
    assert match, "README.md has no '## Layout' section with a code block"
    entries: dict[Path, str] = {}
    parents: list[tuple[int, Path]] = []
    for line in match[1].splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        name, _, job = line.strip().partition(" ")
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = (parents[-1][1] if parents else Path()) / name
        entries[path] = job.strip()
        if name.endswith("/"):
            parents.append((indent, path))
    return entries


def test_the_readme_layout_names_real_paths_each_with_its_job():
    entries = readme_map()
    missing = [str(path) for path in entries if not (PROJECT / path).exists()]
    assert not missing, f"README's Layout names paths that do not exist: {missing}"
    jobless = [str(path) for path, job in entries.items() if not job]
    assert not jobless, f"README's Layout gives no job for {jobless}"


def test_the_readme_layout_names_every_subpackage_and_module():
    named = set(readme_map())
    wanted = [path.relative_to(PROJECT) for path in MODULES.values() if path.name != "__init__.py"]
    wanted += [Path("src", PACKAGE, p) for p in SUBPACKAGES]
    absent = sorted(str(p) for p in wanted if p not in named)
    assert not absent, f"README's Layout does not name: {absent}"


def test_every_python_file_the_readme_names_exists():
    """`training/augment.py`, `bench/serving_bench.py`, tests/test_serving.py in a marker, ...: read
    from the repository root or from src/resnet_mlops/."""
    text = (PROJECT / "README.md").read_text()
    named = set(re.findall(r"`((?:[\w-]+/)*[\w-]+\.py)`", text)) | set(re.findall(r"\b(tests/[\w/]+\.py)\b", text))
    stale = sorted(name for name in named
                   if not (PROJECT / name).is_file() and not (SRC / PACKAGE / name).is_file())
    assert not stale, f"README.md names files that do not exist: {stale}"
