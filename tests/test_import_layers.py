"""The direction of imports between the five packages, and no import cycles between modules.

experiments -> hil -> calibration -> devices -> simulation: a module may import only from its own
package or from packages to its right (docs/architecture.md). Imports inside functions count too:
a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("experiments", "hil", "calibration", "devices", "simulation")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in LAYERS:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Fully qualified names of the modules ``name`` imports (relative imports resolved)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - node.level + 1]
                mod = ".".join([*stem, node.module] if node.module else stem)
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def layer_violations(modules: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in modules.items():
        own = LAYERS.index(name.split(".")[0])
        for imp in sorted(_imports(name, path)):
            top = imp.split(".")[0]
            if top in LAYERS and LAYERS.index(top) < own:
                bad.append(f"{name} imports {imp}")
    return bad


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components (size > 1, or a self-loop) of the module import graph."""
    graph = {n: sorted({i for i in _imports(n, p) if i in modules and i != n})
             for n, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan, recursive: the graph has ~150 nodes
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def _package_init_edges_removed(modules: dict[str, Path]) -> dict[str, Path]:
    """Package ``__init__`` files re-export their modules; those edges are not cycles of ideas."""
    return {n: p for n, p in modules.items() if p.name != "__init__.py"}


def test_no_module_imports_against_the_layers():
    assert layer_violations(_modules()) == []


def test_no_import_cycles_between_modules():
    assert import_cycles(_package_init_edges_removed(_modules())) == []


@pytest.mark.parametrize("kind", ["upward", "cycle"])
def test_the_checks_catch_a_planted_violation(tmp_path, kind):
    """Controls: a planted upward import and a planted two-module cycle are reported."""
    for pkg in LAYERS:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    if kind == "upward":
        (tmp_path / "devices" / "bad.py").write_text("from hil.session import run_session\n")
        mods = {"devices.bad": tmp_path / "devices" / "bad.py"}
        assert layer_violations(mods) == ["devices.bad imports hil.session",
                                          "devices.bad imports hil.session.run_session"]
    else:
        (tmp_path / "calibration" / "a.py").write_text("def f():\n    from . import b\n")
        (tmp_path / "calibration" / "b.py").write_text("from calibration.a import f\n")
        mods = {"calibration.a": tmp_path / "calibration" / "a.py",
                "calibration.b": tmp_path / "calibration" / "b.py"}
        assert import_cycles(mods) == [["calibration.a", "calibration.b"]]
