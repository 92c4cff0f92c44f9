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


# -- function length ----------------------------------------------------------------------

MAX_LINES = 60
"""Longest function body (statements after the docstring, blank and comment lines included)
allowed without a stated reason."""

REASON = "Long because:"
"""A longer function states why in its docstring, on a line starting with this."""


def long_functions(root: Path, package: str, limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """``module:qualified.name`` and body length of every function over ``limit`` lines whose
    docstring gives no reason."""
    out = []
    for mod, path in module_files(root, package).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    stack.append((child, f"{prefix}{child.name}."))
                elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = f"{prefix}{child.name}"
                    stack.append((child, f"{name}."))
                    doc = ast.get_docstring(child) or ""
                    body = child.body[1:] if ast.get_docstring(child) is not None else child.body
                    if not body:
                        continue
                    length = child.end_lineno - body[0].lineno + 1
                    if length > limit and REASON not in doc:
                        out.append((f"{mod}:{name}", length))
    return sorted(out)


ALLOWED_LONG = {
    # "module:function": why it may stay long for now. Entries must still be long (see below).
}


def test_no_long_function_without_a_reason():
    long = dict(long_functions(ROOT, PACKAGE))
    stale = sorted(set(ALLOWED_LONG) - set(long))
    assert not stale, f"no longer long: remove them from ALLOWED_LONG: {stale}"
    found = sorted((name, n) for name, n in long.items() if name not in ALLOWED_LONG)
    assert not found, (
        f"functions longer than {MAX_LINES} lines without '{REASON} ...' in their docstring "
        f"(split them along their concerns, or say why not): {found}"
    )


def test_long_function_check_can_fail(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES + 1))
    _write(tmp_path, "pkg/__init__.py", "")
    _write(tmp_path, "pkg/m.py",
           f'def long():\n    """Doc."""\n{body}\n'
           f'class C:\n    def method(self):\n{body.replace("    x", "        x")}\n'
           f'def ok():\n    """Doc.\n\n    {REASON} one linear recipe.\n    """\n{body}\n'
           f'def short():\n    """Doc."""\n' + body.split("\n", 1)[1])
    assert long_functions(tmp_path, "pkg") == [("pkg.m:C.method", MAX_LINES + 1),
                                               ("pkg.m:long", MAX_LINES + 1)]


def test_every_subpackage_is_shipped():
    """pyproject's explicit package list names every package directory under evalkit/ (a
    package left out is missing from the installed wheel, though every test here passes)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
                 ["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / PACKAGE).rglob("__init__.py")}
    assert found == listed, f"pyproject [tool.setuptools] packages: missing {sorted(found - listed)}"
