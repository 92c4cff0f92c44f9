"""The package's structure: no import cycle inside ``evalkit/``.

The import graph is read from the source (every ``import`` statement anywhere in a module:
top level, inside functions, under ``if TYPE_CHECKING:``), so a cycle hidden in a lazy or
type-only import is caught too. A lower layer never imports a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "evalkit"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` under ``root``."""
    out: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` itself if it is a module of the package, else its nearest enclosing module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (explicitly; parent packages are not added)."""
    modules = module_files(root, package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        here = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module or ""
                # `from .pkg import name`: name may be a submodule or an attribute of pkg.
                targets = [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                dep = _resolve(t, modules)
                if dep is not None and dep != mod:
                    graph[mod].add(dep)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_import_cycle_in_evalkit():
    graph = import_graph(ROOT, PACKAGE)
    assert len(graph) > 20 and graph["evalkit.api"], "the graph was not read"
    cycles = import_cycles(graph)
    detail = "\n".join(
        " <-> ".join(c) + ": " + "; ".join(f"{m} imports {sorted(graph[m] & set(c))}" for m in c)
        for c in cycles
    )
    assert not cycles, f"import cycles inside evalkit/ (a lower layer imports a higher one):\n{detail}"


def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("back_edge", [
    "from .a import f\n",                                          # plain
    "def g():\n    from .a import f\n",                            # lazy, inside a function
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n",  # type only
    "from . import a\n",                                           # module as attribute
    "import pkg.a\n",                                              # absolute
])
def test_cycle_check_detects_a_cycle(tmp_path, back_edge):
    """The checker itself can fail: a -> sub.b -> a through each kind of import statement."""
    _write(tmp_path, "pkg/__init__.py", "")
    _write(tmp_path, "pkg/a.py", "from .sub.b import h\n\ndef f():\n    pass\n")
    _write(tmp_path, "pkg/sub/__init__.py", "")
    _write(tmp_path, "pkg/sub/b.py", back_edge.replace("from .", "from ..")
           + "\ndef h():\n    pass\n")
    graph = import_graph(tmp_path, "pkg")
    assert import_cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_cycle_check_accepts_layers(tmp_path):
    """Imports that only go down (and a package facade importing its parts) are no cycle."""
    _write(tmp_path, "pkg/__init__.py", "from .a import f\nfrom .sub import b\n")
    _write(tmp_path, "pkg/a.py", "from .sub.b import h\n\ndef f():\n    from .sub import b\n")
    _write(tmp_path, "pkg/sub/__init__.py", "from .b import h\n")
    _write(tmp_path, "pkg/sub/b.py", "import os\n\ndef h():\n    pass\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg"] == {"pkg.a", "pkg.sub.b"}
    assert import_cycles(graph) == []
