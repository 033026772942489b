"""The package's import layering, checked on the real import graph (``grimp``).

Layers, low to high (a module may import its own layer or lower ones, never higher)::

    base: fct_registry (root), errors, _redact, _files, _registry, device, determinism,
          kernel_env, numerics, config, layout, liveness, model_specs, scratch
    storage                           (local folders and S3 prefixes)
    jobs                              (the resumable-job core every job runs on, the --out lease)
    models | data | evaluation        (independent of each other)
    training
    registry
    resolver
    gallery, upgrade, gate
    stages, cli, commands, __main__

On top of that no two top-level packages import each other (directly or round a loop) and no
two modules do. First-party imports sit at module level: an import inside a function hides the
dependency from readers and tools, and is usually there to dodge a cycle. The only exceptions
are listed in ``FUNCTION_LOCAL_ALLOWED`` with the reason (none today). Heavy optional
*third-party* imports (ray, onnxruntime, mlflow, torch in light modules) may sit inside the
function that needs them, with a comment. Loading a module by name with ``importlib`` is
dispatch, not an import: ``fct_registry.cli`` does that so a command imports only its own code.
"""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

import grimp
import pytest

PACKAGE = "fct_registry"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {
            "",
            "errors",
            "_redact",
            "_files",
            "_registry",
            "device",
            "determinism",
            "kernel_env",
            "numerics",
            "config",
            "layout",
            "liveness",
            "model_specs",
            "scratch",
        }
    ),
    frozenset({"storage"}),
    frozenset({"jobs"}),
    frozenset({"models", "data", "evaluation"}),
    frozenset({"training"}),
    frozenset({"registry"}),
    frozenset({"resolver"}),
    frozenset({"gallery", "upgrade", "gate", "backfill"}),
    frozenset({"stages", "cli", "commands", "server", "__main__"}),
)
# Packages in one layer that must not import each other at all.
INDEPENDENT: tuple[frozenset[str], ...] = (frozenset({"models", "data", "evaluation"}),)

# (module, imported module): first-party imports allowed inside a function, and why.
FUNCTION_LOCAL_ALLOWED: dict[tuple[str, str], str] = {}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer(module: str) -> int:
    top = _top(module)
    for index, members in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(
        f"{module}: top-level name {top!r} is in no layer; add it to LAYERS in {__file__}"
    )


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None)


def _edges(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    return sorted(
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
    )


def _where(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    lines = ", ".join(str(d["line_number"]) for d in details)
    return f"{importer} -> {imported} (line {lines})"


def test_every_module_is_in_a_layer(graph):
    for module in graph.modules:
        _layer(module)


def test_imports_go_down_only(graph):
    upward = [
        _where(graph, a, b)
        for a, b in _edges(graph)
        if _layer(a) < _layer(b) and _top(a) != _top(b)
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_independent_packages_do_not_import_each_other(graph):
    bad = [
        _where(graph, a, b)
        for a, b in _edges(graph)
        for group in INDEPENDENT
        if _top(a) != _top(b) and {_top(a), _top(b)} <= group
    ]
    assert not bad, "imports between independent packages:\n" + "\n".join(bad)


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    succ: dict[str, list[str]] = {}
    for a, b in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(succ):
        if start in index:
            continue
        work = [(start, iter(sorted(succ[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(succ[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_cycle_finder_against_known_graphs():
    assert _cycles({("a", "b"), ("b", "c")}) == []
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert sorted(_cycles({("a", "b"), ("b", "a"), ("c", "d"), ("d", "c")})) == [
        ["a", "b"],
        ["c", "d"],
    ]


def test_no_package_cycles(graph):
    edges = {(_top(a), _top(b)) for a, b in _edges(graph) if _top(a) != _top(b)}
    assert _cycles(edges) == [], "top-level packages importing each other"


def test_no_module_cycles(graph):
    assert _cycles(set(_edges(graph))) == [], "modules importing each other"


def _function_local_imports() -> list[tuple[str, str, int]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = package.split(".")[: len(package.split(".")) - node.level + 1]
                        targets = [".".join([*base, node.module] if node.module else base)]
                    else:
                        targets = [node.module or ""]
                else:
                    continue
                found += [(module, t, node.lineno) for t in targets if t.split(".")[0] == PACKAGE]
    return found


def test_function_local_finder_sees_a_known_case(tmp_path, monkeypatch):
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "m.py").write_text(
        "import os\nfrom fct_registry import errors\n\n"
        "def f():\n    import json\n    from . import errors\n    return json, errors\n"
    )
    monkeypatch.setattr(f"{__name__}.ROOT", pkg)
    assert _function_local_imports() == [("fct_registry.m", "fct_registry", 6)]


def test_first_party_imports_are_module_level():
    bad = [
        f"{module}:{line} imports {target}"
        for module, target, line in _function_local_imports()
        if (module, target) not in FUNCTION_LOCAL_ALLOWED
    ]
    assert not bad, (
        "first-party imports inside functions (move them to the top of the module; if that makes"
        " a cycle, move the shared piece to a lower layer):\n" + "\n".join(bad)
    )


def test_allow_list_is_current():
    present = {(module, target) for module, target, _ in _function_local_imports()}
    stale = sorted(set(FUNCTION_LOCAL_ALLOWED) - present)
    assert not stale, f"FUNCTION_LOCAL_ALLOWED lists imports that no longer exist: {stale}"


def test_layers_are_disjoint():
    for upper, lower in pairwise(LAYERS):
        assert not upper & lower


MAX_MODULE_LINES = 500
# Modules other helpers are splitting in the same round (issue 22): drop each as it is split.
OVER_LIMIT_FOR_NOW: frozenset[str] = frozenset()


def test_no_module_over_the_line_limit():
    """One job per module: a module over the limit is split by job (see docs/code-map.md)."""
    long = {
        path.relative_to(ROOT).as_posix(): n
        for path in ROOT.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    over = {p: n for p, n in long.items() if p not in OVER_LIMIT_FOR_NOW}
    assert not over, f"modules over {MAX_MODULE_LINES} lines: {over}; split them by job"
