"""Tests for the package layout: the import graph of osgha_lite has no cycle, the layers hold.

The graph has an edge ``a -> b`` when module ``a`` imports module ``b``
anywhere: at module level, under ``if TYPE_CHECKING:`` and inside function
bodies. Importing ``p.q.m`` also imports the packages ``p.q`` and ``p``, so
those are edges too, except for the importer's own parent packages (a
sibling import inside a package runs no other ``__init__``). The only
imports left out would be the deliberate lazy loaders of
:data:`DELIBERATE_LAZY_IMPORTS`, each documented at its import: there are none.

The layers themselves are contracts of import-linter (``[tool.importlinter]``
in ``pyproject.toml``, ``lint-imports`` in ``make test``);
:func:`test_a_lower_layer_importing_a_higher_one_breaks_the_contract` shows
that a contract fails on a deliberate violation.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "osgha_lite"

#: Functions whose imports are deliberately deferred to call time, so they are not edges of the
#: graph: (importing module, qualified function name) -> why.
DELIBERATE_LAZY_IMPORTS: dict[tuple[str, str], str] = {}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_edges(
    sources: dict[str, tuple[str, bool]],
    lazy: dict[tuple[str, str], str] | None = None,
) -> dict[str, set[str]]:
    """Edges ``module -> imported modules`` of ``{module: (source, is_package)}``, within those modules.

    Imports inside the functions named in ``lazy`` are left out; every other
    import counts wherever it is.
    """
    lazy = lazy or {}
    known = set(sources)
    edges: dict[str, set[str]] = {name: set() for name in sources}

    for name, (source, is_package) in sources.items():
        package = name if is_package else name.rpartition(".")[0]
        own_ancestors = set(_ancestors(name))

        def add(target: str, importer: str = name) -> None:
            for module in (*_ancestors(target), target):
                if module in known and module != importer and module not in own_ancestors:
                    edges[importer].add(module)

        def visit(node: ast.AST, scope: tuple[str, ...]) -> None:
            for child in ast.iter_child_nodes(node):
                inner = scope
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    inner = (*scope, child.name)
                if any((name, ".".join(scope[:i])) in lazy for i in range(1, len(scope) + 1)):
                    continue
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        add(alias.name)
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base_parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join([*base_parts, *([child.module] if child.module else [])])
                    else:
                        base = child.module or ""
                    add(base)
                    for alias in child.names:
                        if f"{base}.{alias.name}" in known:
                            add(f"{base}.{alias.name}")
                elif (
                    isinstance(child, ast.Call)
                    and isinstance(child.func, ast.Attribute)
                    and child.func.attr == "import_module"
                    and child.args
                    and isinstance(child.args[0], ast.Constant)
                    and isinstance(child.args[0].value, str)
                ):
                    add(child.args[0].value)
                visit(child, inner)

        visit(ast.parse(source), ())
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as ``[a, b, ..., a]``, or None when it is acyclic."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def package_sources() -> dict[str, tuple[str, bool]]:
    return {
        module_name(path, PACKAGE_DIR): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
        for path in sorted(PACKAGE_DIR.rglob("*.py"))
    }


def package_modules() -> list[str]:
    return sorted(package_sources())


# ---------------------------------------------------------------- the checker itself


def test_checker_finds_cycles_through_type_checking_functions_and_packages():
    base = {"pkg": ("", True), "pkg.a": ("import pkg.b\n", False)}
    assert find_cycle(import_edges({**base, "pkg.b": ("", False)})) is None
    type_checking = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\n"
    assert find_cycle(import_edges({**base, "pkg.b": (type_checking, False)})) == ["pkg.a", "pkg.b", "pkg.a"]
    in_function = "def f():\n    from pkg import a\n"
    assert find_cycle(import_edges({**base, "pkg.b": (in_function, False)})) == ["pkg.a", "pkg.b", "pkg.a"]
    relative = "from . import a\n"
    assert find_cycle(import_edges({**base, "pkg.b": (relative, False)})) == ["pkg.a", "pkg.b", "pkg.a"]
    # Importing a submodule of a package runs the package's __init__, which may import the importer.
    sub = {
        "pkg": ("", True),
        "pkg.base": ("from pkg.sub.leaf import x\n", False),
        "pkg.sub": ("from pkg.sub.user import y\n", True),
        "pkg.sub.leaf": ("", False),
        "pkg.sub.user": ("from pkg.base import z\nfrom pkg.sub.leaf import x\n", False),
    }
    assert find_cycle(import_edges(sub)) == ["pkg.base", "pkg.sub", "pkg.sub.user", "pkg.base"]
    # Only the listed functions are deliberate lazy loaders.
    lazy_source = "class C:\n    def load(self):\n        import pkg.a\n"
    graph = {**base, "pkg.b": (lazy_source, False)}
    assert find_cycle(import_edges(graph, {("pkg.b", "C.load"): "documented"})) is None
    assert find_cycle(import_edges(graph, {("pkg.b", "C.other"): "documented"})) is not None


# ---------------------------------------------------------------- the package


def test_import_graph_of_osgha_lite_is_acyclic():
    edges = import_edges(package_sources(), DELIBERATE_LAZY_IMPORTS)
    assert find_cycle(edges) is None, f"import cycle: {' -> '.join(find_cycle(edges))}"


def test_deliberate_lazy_imports_name_existing_functions():
    sources = package_sources()
    for module, qualname in DELIBERATE_LAZY_IMPORTS:
        node: ast.AST = ast.parse(sources[module][0])
        for part in qualname.split("."):
            node = next(
                child for child in ast.iter_child_nodes(node)
                if isinstance(child, (ast.FunctionDef, ast.ClassDef)) and child.name == part
            )
        assert isinstance(node, ast.FunctionDef), (module, qualname)


CORE = ("osgha_lite.methods", "osgha_lite.losses", "osgha_lite.metrics")
HARNESS = ("osgha_lite.data", "osgha_lite.backbones", "osgha_lite.llm", "osgha_lite.train", "osgha_lite.pipeline",
           "osgha_lite.apps")


def test_the_core_imports_nothing_from_the_inputs_or_the_harness():
    edges = import_edges(package_sources())
    found = {(module, target) for module, targets in edges.items() if module.startswith(CORE)
             for target in targets if target.startswith(HARNESS)}
    assert not found


def test_at_most_twelve_modules_at_the_top_of_the_package():
    top = sorted(path.name for path in PACKAGE_DIR.glob("*.py"))
    assert len(top) <= 12, top


def test_every_subpackage_docstring_gives_its_reading_order():
    for init in sorted(PACKAGE_DIR.glob("*/__init__.py")):
        if init.parent.name in ("profiles",):  # the profiles' loader, one module
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "reading order" in doc.lower(), init


def test_no_private_name_is_imported_from_another_module():
    found = []
    for name, (source, _) in package_sources().items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("osgha_lite"):
                found += [f"{name}: from {node.module} import {alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found, found


def test_the_method_registry_is_plain_imports():
    source = (PACKAGE_DIR / "methods" / "registry.py").read_text(encoding="utf-8")
    assert "importlib" not in source and "import_module" not in source
    from osgha_lite.methods import ADAPTERS
    from osgha_lite.methods.hypergraph import HypergraphAdapter

    assert ADAPTERS["hypergraph"] is HypergraphAdapter


def test_the_roots_and_their_variables_are_defined_once():
    found = []
    for name, (source, _) in package_sources().items():
        if name == "osgha_lite.paths":
            continue
        for variable in ("OSGHA_DATA_ROOT", "OSGHA_CACHE_DIR", "OSGHA_RESULTS_DIR", "OSGHA_FIGURES_DIR",
                         "OSGHA_TIMINGS_DIR", "OSGHA_EXECUTED_DIR"):
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Constant) and node.value == variable:
                    found.append(f"{name}: {variable}")
    assert not found, found


@pytest.mark.parametrize(
    "module", ["osgha_lite.methods.base", "osgha_lite.methods"]
    + [m for m in package_modules() if m.startswith("osgha_lite.methods.hypergraph")]
)
def test_module_imports_first_in_a_fresh_interpreter(module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- import-linter's contracts


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` with the repository's contracts."""
    code = ("import sys; from importlinter.cli import lint_imports_command; "
            "lint_imports_command(['--no-cache', '--no-logo', sys.argv[1]])")
    return subprocess.run([sys.executable, "-c", code, str(PACKAGE_DIR.parent / "pyproject.toml")],
                          capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})


@pytest.fixture(scope="module")
def lint_tool():
    pytest.importorskip("importlinter")


def test_the_layers_hold(lint_tool):
    done = _lint_imports(PACKAGE_DIR.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(lint_tool, tmp_path):
    """A deliberate violation on a copy of the package: the metrics importing the training loop."""
    shutil.copytree(PACKAGE_DIR, tmp_path / "osgha_lite", ignore=shutil.ignore_patterns("__pycache__"))
    retrieval = tmp_path / "osgha_lite" / "metrics" / "retrieval.py"
    retrieval.write_text(retrieval.read_text(encoding="utf-8") + "\nfrom osgha_lite.train import fit  # violation\n",
                         encoding="utf-8")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "osgha_lite.metrics.retrieval -> osgha_lite.train.fit" in done.stdout
    assert "BROKEN" in done.stdout


# ---------------------------------------------------------------- the notebooks' imports


def test_every_osgha_lite_import_of_the_notebooks_resolves():
    """The imports of every code cell of notebooks/ and assignments/ run (without running the notebooks)."""
    import json
    import re

    statements = set()
    root = PACKAGE_DIR.parent
    for path in sorted([*root.glob("notebooks/*.ipynb"), *root.glob("assignments/*.ipynb")]):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            for match in re.finditer(r"^[ \t]*(from\s+osgha_lite\S*\s+import\s+(?:\([^)]*\)|[^\n]+)|import\s+osgha_lite[^\n]*)",
                                     source, re.MULTILINE):
                statements.add(" ".join(match.group(1).split("#")[0].split()))
    assert len(statements) > 20
    done = subprocess.run([sys.executable, "-c", "\n".join(sorted(statements))], capture_output=True, text=True,
                          cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
