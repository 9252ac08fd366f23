"""natgan's import graph: no circles, and no import from a lower floor to a higher one.

The floors are read from the "Layering" paragraph of docs/architecture.md, so the document and the check cannot
drift apart: a new top-level module or package must be placed on a floor there before this test passes. Imports
are read statically (``ast``; nothing is imported), including those inside functions, since a lazy import is
still a dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "natgan"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def parse_floors(text: str) -> list[list[str]]:
    """Floors, lowest first, from the lines after the ``Layering ...:`` header (which ends at the first line
    ending in a colon) up to the next blank line: groups of backticked names separated by ``<-``
    (``__init__`` is the package's own ``__init__.py``)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Layering"))
    start = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith(":"))
    body = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        body.append(line.strip())
    floors = []
    for group in " ".join(body).split("<-"):
        names = [n.strip() for span in re.findall(r"`([^`]*)`", group) for n in span.split(",")]
        floors.append([n for n in names if n])
    return floors


def module_files(package: Path) -> dict[str, Path]:
    """``natgan.x.y`` -> file, packages by their ``__init__.py``."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(files: dict[str, Path], root: str = "natgan") -> dict[str, set[str]]:
    """Module -> the modules of ``root`` it imports (``from pkg import name`` counts as ``pkg.name`` when that
    is a module, else as ``pkg``)."""

    def known(name: str) -> str:
        while name not in files:
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets |= {known(a.name) for a in node.names if a.name.split(".")[0] == root}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base.split(".")[0] != root:
                    continue
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in files else known(base))
        targets.discard(name)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def unit(module: str) -> str:
    """The floor unit of ``natgan.a.b``: ``a`` (``__init__`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def upward_imports(graph: dict[str, set[str]], floors: list[list[str]]) -> list[str]:
    level = {name: i for i, floor in enumerate(floors) for name in floor}
    return sorted(f"{a} -> {b} (floor {level[unit(a)]} imports floor {level[unit(b)]})"
                  for a, targets in graph.items() for b in targets
                  if unit(a) != unit(b) and level[unit(b)] > level[unit(a)])


def test_every_module_of_natgan_is_on_exactly_one_floor_of_the_architecture_document():
    floors = parse_floors(ARCHITECTURE.read_text(encoding="utf-8"))
    assert len(floors) >= 5, floors
    named = [name for floor in floors for name in floor]
    assert len(named) == len(set(named)), f"named on two floors: {sorted({n for n in named if named.count(n) > 1})}"
    units = {unit(m) for m in module_files(PACKAGE)}
    assert units - set(named) == set(), "modules of natgan missing from the Layering paragraph of docs/architecture.md"
    assert set(named) - units == set(), "the Layering paragraph names modules natgan does not have"


def test_natgan_imports_have_no_circle():
    assert circles(import_graph(module_files(PACKAGE))) == []


def test_natgan_imports_only_go_down_the_floors_of_the_architecture_document():
    floors = parse_floors(ARCHITECTURE.read_text(encoding="utf-8"))
    assert upward_imports(import_graph(module_files(PACKAGE)), floors) == []


def test_the_checks_find_a_circle_and_an_upward_import(tmp_path):
    """The checker itself, on a small package built for the purpose."""
    pkg = tmp_path / "natgan"
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("from natgan.low import a\n")
    (pkg / "low" / "a.py").write_text("def f():\n    from natgan.high import g  # lazy, still counted\n")
    (pkg / "low" / "b.py").write_text("from . import c\n")
    (pkg / "low" / "c.py").write_text("from natgan.low import b\n")
    (pkg / "high.py").write_text("from natgan.low.a import f\n\ndef g():\n    pass\n")
    graph = import_graph(module_files(pkg))
    assert graph["natgan.low.a"] == {"natgan.high"} and graph["natgan.low.b"] == {"natgan.low.c"}
    assert circles(graph) == [["natgan.high", "natgan.low.a"], ["natgan.low.b", "natgan.low.c"]]
    floors = parse_floors("Layering (x,\n`y`):\n`__init__` <- `low` <- `high`.\n\nnext paragraph `other`\n")
    assert floors == [["__init__"], ["low"], ["high"]]
    assert upward_imports(graph, floors) == ["natgan.low.a -> natgan.high (floor 1 imports floor 2)"]
