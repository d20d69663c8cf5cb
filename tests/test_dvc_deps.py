"""Each stage's `deps` in dvc.yaml are exactly the project files its code imports.

DVC reruns a stage when a dep changes; a file the stage imports but dvc.yaml does not
list would let `dvc repro` report "up to date" after a fix in that file, and the fix would
never reach the registry. The import closure is computed from the code (every `import`
of this package, at any depth, in every module the stage's command runs), so the test
keeps dvc.yaml true as code moves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from resnet_mlops.stages import STAGES
from support.project_repo import PROJECT

SRC = PROJECT / "src"
CLI = SRC / "resnet_mlops" / "cli.py"
# The function of cli.py that runs every stage command: `stages.stage(name).run(params, layout)`.
RUN_STAGE = "_run_stage"


def module_file(name: str) -> Path | None:
    base = SRC.joinpath(*name.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, package: str):
    """Every module name `path` imports, function-level imports included (a stage runs those too),
    except in a module's `__getattr__`: that is an alias kept for unpickling old registered
    versions (`serving.ResNetClassifier`), run only when such a pickle names it, and the one stage
    that unpickles registered versions, `register`, imports their module itself."""
    tree = ast.parse(path.read_text())
    tree.body = [node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name == "__getattr__")]
    return _names(tree, package)


def _names(tree: ast.AST, package: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(parts + [node.module] if node.module else parts)
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)  # `from pkg import module`


def stage_command_imports(stage: str) -> list[str]:
    """What `resnet-mlops <stage>` imports: cli.py's module-level imports, those of the function
    that runs every stage command (the other commands' lazy imports are not the stage's), and the
    stage's own module, as `stages.STAGES` names it."""
    tree = ast.parse(CLI.read_text())
    found = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    for function in tree.body:
        if isinstance(function, ast.FunctionDef) and function.name == RUN_STAGE:
            found += [n for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom))]
    module = ast.Module(body=found, type_ignores=[])
    return ["resnet_mlops", *_names(module, "resnet_mlops"), STAGES[stage]]


def stage_closure(stage: str) -> set[str]:
    """cli.py and every project file `resnet-mlops <stage>` imports."""
    return {str(CLI.relative_to(PROJECT)), *import_closure(*stage_command_imports(stage))}


def import_closure(*entries: str) -> set[str]:
    """The project files that importing `entries` executes (packages' __init__ files included)."""
    seen: set[Path] = set()
    pending = list(entries)
    while pending:
        parts = pending.pop().split(".")
        if parts[0] != "resnet_mlops":
            continue
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            path = module_file(name)
            if path is not None and path not in seen:
                seen.add(path)
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                pending.extend(imported_names(path, package))
    return {str(path.relative_to(PROJECT)) for path in seen}


def declared_code_deps(stage: dict) -> list[str]:
    return [dep for dep in stage.get("deps", []) if dep.startswith("src/")]


def test_every_stage_depends_on_exactly_the_code_it_imports():
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    problems = []
    for name, stage in stages.items():
        assert stage["cmd"] == f"resnet-mlops {name}"
        needed = stage_closure(name)
        declared = declared_code_deps(stage)
        covered = lambda path: any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in declared)
        problems += [f"stage {name}: {path} is imported but not in its deps" for path in sorted(needed)
                     if not covered(path)]
        problems += [f"stage {name}: dep {dep} holds no file the stage imports" for dep in declared
                     if not any(path == dep or path.startswith(dep.rstrip("/") + "/") for path in needed)]
        problems += [f"stage {name}: dep folder {dep} holds {path}, which the stage does not import"
                     for dep in declared if (PROJECT / dep).is_dir()
                     for path in sorted(str(p.relative_to(PROJECT)) for p in (PROJECT / dep).rglob("*.py"))
                     if path not in needed]
    assert not problems, "\n".join(problems)


def test_the_closure_follows_imports_at_any_depth_and_only_the_stages_own():
    closure = stage_closure("evaluate")
    assert "src/resnet_mlops/evaluation/metrics.py" in closure  # imported by the stage module
    assert "src/resnet_mlops/models/layers.py" in closure  # through models.saving, two steps away
    assert "src/resnet_mlops/evaluation/__init__.py" in closure and "src/resnet_mlops/__init__.py" in closure
    assert "src/resnet_mlops/serving/server.py" not in closure  # another command's import in cli.py
    assert "src/resnet_mlops/data/folder.py" not in closure and "src/resnet_mlops/data/folder.py" in (
        stage_closure("prepare"))
