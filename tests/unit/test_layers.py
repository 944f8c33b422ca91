"""The package's layers, read from the source with `ast` (every import: top-level, in a function, under
TYPE_CHECKING), so a wrong-way import fails here rather than as a slow or circular start-up somewhere else.

- the library (backend/ minus the face, the harness and the fakes) knows nothing of the face, the CLI, the harness
  or the fakes, and needs no CLI or web framework (rich, typer, flask);
- the face (the Label Studio ML backend: app, model, _wsgi, server) does not reach into the CLI or the harness;
- no shipped code or benchmark imports the tests;
- no import cycles among prelabel's modules through the imports that run when a module is loaded.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Import name -> source folder: pyproject's package-dir (prelabel, prelabel.scripts, prelabel.label_config) and
# the benchmarks, which are no part of the package but are held to rule (c).
PACKAGE_DIRS = {
    **tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"],
    "benchmarks": "benchmarks",
}
FACE = {"prelabel.app", "prelabel.model", "prelabel._wsgi", "prelabel.server"}
NOT_LIBRARY = FACE | {"prelabel.__main__", "prelabel.harness", "prelabel.testing", "prelabel.scripts"}
LIBRARY_MUST_NOT_IMPORT = NOT_LIBRARY
FRAMEWORKS = {"rich", "typer", "flask"}
FACE_MUST_NOT_IMPORT = {"prelabel.scripts", "prelabel.harness"}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # absolute module name: the module itself when `from M import x` names a submodule of M
    path: Path
    line: int
    in_function: bool
    type_only: bool  # under `if TYPE_CHECKING:`

    @property
    def runs_on_load(self) -> bool:
        return not self.in_function and not self.type_only

    def __str__(self) -> str:
        where = ", in a function" if self.in_function else (", under TYPE_CHECKING" if self.type_only else "")
        return f"{self.importer} imports {self.target} ({self.path.relative_to(ROOT)}:{self.line}{where})"


def discover() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package, *parts])] = path
    return modules


MODULES = discover()


def within(name: str, prefixes: set[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path) -> list[Import]:
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def resolve_from(node: ast.ImportFrom) -> list[str]:
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{node.module}" if node.module else package
        else:
            base = node.module or ""
        return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]

    def visit(node: ast.AST, in_function: bool, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            targets = [alias.name for alias in node.names] if isinstance(node, ast.Import) else resolve_from(node)
            for target in dict.fromkeys(targets):
                found.append(Import(module, target, path, node.lineno, in_function, type_only))
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.body:
                visit(child, in_function, True)
            for child in node.orelse:
                visit(child, in_function, type_only)
            return
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner, type_only)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), False, False)
    return found


IMPORTS = {module: imports_of(module, path) for module, path in MODULES.items()}
LIBRARY = {m for m in MODULES if within(m, {"prelabel"}) and not within(m, NOT_LIBRARY)}


def fail_on(violations: list[Import], rule: str) -> None:
    """Fail listing each offending module and import (no repr of the list after it)."""
    if violations:
        pytest.fail(f"{rule}: {len(violations)} import(s)\n" + "\n".join(f"  {v}" for v in violations), pytrace=False)


def test_the_layers_are_all_found():
    assert FACE <= set(MODULES), FACE - set(MODULES)
    assert {"prelabel", "prelabel.settings", "prelabel.pipeline", "prelabel.label_config"} <= LIBRARY
    assert "prelabel.scripts.cli" in MODULES and "prelabel.harness" in MODULES and "prelabel.testing" in MODULES
    assert not LIBRARY & FACE


def test_library_does_not_import_the_face_the_cli_the_harness_or_the_fakes():
    violations = [
        imp for module in sorted(LIBRARY) for imp in IMPORTS[module] if within(imp.target, LIBRARY_MUST_NOT_IMPORT)
    ]
    fail_on(violations, "library -> face/CLI/harness/fakes")


def test_library_does_not_import_cli_or_web_frameworks():
    violations = [
        imp for module in sorted(LIBRARY) for imp in IMPORTS[module] if imp.target.split(".")[0] in FRAMEWORKS
    ]
    fail_on(violations, f"library -> {', '.join(sorted(FRAMEWORKS))}")


def test_face_does_not_import_the_cli_or_the_harness():
    violations = [imp for module in sorted(FACE) for imp in IMPORTS[module] if within(imp.target, FACE_MUST_NOT_IMPORT)]
    fail_on(violations, "face -> CLI/harness")


def test_nothing_shipped_or_benchmarked_imports_the_tests():
    violations = [imp for module in sorted(MODULES) for imp in IMPORTS[module] if within(imp.target, {"tests"})]
    fail_on(violations, "backend/scripts/label_config/benchmarks -> tests")


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit on a deep import chain)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def test_no_import_cycles_among_prelabel_modules():
    """Counting the imports that run when a module loads (not those in functions or under TYPE_CHECKING)."""
    package = {m for m in MODULES if within(m, {"prelabel"})}
    edges = [imp for m in sorted(package) for imp in IMPORTS[m] if imp.runs_on_load and imp.target in package]
    graph: dict[str, set[str]] = {m: set() for m in package}
    for imp in edges:
        graph[imp.importer].add(imp.target)
    cycles = [c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]
    lines = []
    for component in cycles:
        members = set(component)
        lines.append(f"cycle among {', '.join(component)}:")
        lines += [f"  {imp}" for imp in edges if imp.importer in members and imp.target in members]
    if cycles:
        pytest.fail("\n".join(lines), pytrace=False)


def test_function_local_imports_hide_no_cycle_across_packages():
    """Counting the imports inside functions too: the one kind of cycle allowed is a package that imports its own
    provider modules on first use (prelabel.providers picks openai or anthropic when a client is built, so the
    SDKs load only then). A cycle across packages would be a dependency hidden in a function."""
    package = {m for m in MODULES if within(m, {"prelabel"})}
    edges = [imp for m in sorted(package) for imp in IMPORTS[m] if not imp.type_only and imp.target in package]
    graph: dict[str, set[str]] = {m: set() for m in package}
    for imp in edges:
        graph[imp.importer].add(imp.target)
    hidden = []
    for component in strongly_connected(graph):
        # allowed: a subpackage (not prelabel itself) and its own modules
        owners = [m for m in component if MODULES[m].name == "__init__.py" and m != "prelabel"]
        inside_one = any(all(within(m, {owner}) for m in component) for owner in owners)
        if len(component) > 1 and not inside_one:
            members = set(component)
            hidden.append(f"cycle among {', '.join(component)}:")
            hidden += [f"  {imp}" for imp in edges if imp.importer in members and imp.target in members]
    if hidden:
        pytest.fail("\n".join(hidden), pytrace=False)
