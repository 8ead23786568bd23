"""The package layers, read from the source with ``ast``: dependencies point down and no modules import each other.

``core`` (errors, registries, asset paths, weights I/O, images, result page) is the foundation; ``methods`` and
``metrics`` build on it and on each other; ``benchmark`` (the application) sits on top. Imports inside functions
count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "methods", "metrics", "benchmark")
# What each layer may import from this project (besides itself).
ALLOWED = {"core": set(), "methods": {"core", "metrics"}, "metrics": {"core", "methods"},
           "benchmark": {"core", "methods", "metrics"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (absolute names; relative imports resolved)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            # ``from pkg import submodule`` depends on the submodule
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


GRAPH = _graph()


@pytest.mark.parametrize("layer", PACKAGES)
def test_dependencies_point_down(layer):
    upward = sorted(f"{module} -> {dep}" for module, deps in GRAPH.items() if module.split(".")[0] == layer
                    for dep in deps if dep.split(".")[0] not in ALLOWED[layer] | {layer})
    assert not upward, f"{layer} imports from a layer above it: " + "; ".join(upward)


def test_no_import_cycles():
    """No two modules import each other, directly or through others (package ``__init__`` re-exports aside)."""
    edges = {m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")} for m, deps in GRAPH.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_graph_is_read():
    """The checks above see real edges (a parser that found nothing would pass them vacuously)."""
    assert "core.errors" in GRAPH["methods.unsup3d.training"]
    assert "benchmark.driver" in GRAPH["benchmark.train"]
