"""The package's import graph has no cycle, counting imports made inside functions.

A late import inside a function hides a cycle from Python's import machinery but not from
the reader: the modules still depend on each other. So the graph is read from the source
with `ast` (every `import`, `from ... import` and `importlib.import_module("...")`, at any
depth), not from what importing happens to execute.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import wasi_lab

PACKAGE = Path(wasi_lab.__file__).parent


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package at `root`."""
    mods = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = f
    return mods


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every dotted name the module imports, relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names.add(prefix)
            # `from pkg import mod` imports the module `pkg.mod`.
            names.update(f"{prefix}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports. A module importing its own package
    (`wasi_lab.models.cli` running `wasi_lab.models/__init__`) is not an edge: Python
    imports a package's `__init__` before any of its modules anyway."""
    mods = module_files(root)

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        tree = ast.parse(f.read_text(encoding="utf-8"), str(f))
        for name in _imported_names(tree, m, f.name == "__init__.py"):
            if name.split(".")[0] != root.name:
                continue
            target = resolve(name)
            if target and target != m and not m.startswith(target + "."):
                graph[m].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), each as
    a path that walks the cycle, so the failure message shows which imports to cut."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    components.append(_cycle_path(graph, set(comp)))
    return components


def _cycle_path(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """One closed walk through a component, from its first module back to it."""
    start = min(comp)
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in comp)
        back = [w for w in nxt if w == start]
        fresh = [w for w in nxt if w not in seen]
        if back and (len(path) == len(comp) or not fresh):
            return [*path, start]
        if not fresh:  # a dead end within the component: still name every member
            return [*path, "...", *sorted(comp - seen), start]
        path.append(fresh[0])
        seen.add(fresh[0])


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 30, sorted(graph)  # the walk found the package
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_wasm_primitives_import_nothing_of_the_kit() -> None:
    """`wasmbin` is the floor the wasm tools stand on; the rewrites stand on it alone."""
    graph = import_graph(PACKAGE)
    assert graph["wasi_lab.wasmbin"] == set()
    assert graph["wasi_lab.postlink"] == {"wasi_lab.wasmbin"}
    assert graph["wasi_lab.relaxed"] == {"wasi_lab.postlink", "wasi_lab.wasmbin"}
    assert "wasi_lab.runtime" not in graph["wasi_lab.build"]


def test_a_cycle_through_a_late_import_is_found(tmp_path: Path) -> None:
    """The check can fail: a package whose cycle closes inside a function, through a
    relative import and through `importlib`, is reported with the path to cut."""
    pkg = tmp_path / "kit"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from kit import b\n")
    (pkg / "b.py").write_text("def later():\n    from .sub import c\n    return c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text(
        "import importlib\n\ndef f():\n    return importlib.import_module('kit.a')\n"
    )
    (pkg / "d.py").write_text("import kit.a\nimport os\n")
    graph = import_graph(pkg)
    assert graph["kit.b"] == {"kit.sub", "kit.sub.c"} and graph["kit.sub.c"] == {"kit.a"}
    assert find_cycles(graph) == [["kit.a", "kit.b", "kit.sub.c", "kit.a"]]
    (pkg / "sub" / "c.py").write_text("import os\n")
    assert find_cycles(import_graph(pkg)) == []


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def rooms_of_the_doc(text: str) -> dict[str, str]:
    """Top-level module or subpackage -> its room, from the rooms table of architecture.md
    (first column the room, second the modules in backticks; `models/` is a subpackage)."""
    section = text.split("## The rooms", 1)[1].split("\n## ", 1)[0]
    rooms: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("room", "") or set(cells[0]) <= {"-", " "}:
            continue
        for name in re.findall(r"`([\w/]+)`", cells[1]):
            rooms[name.rstrip("/")] = cells[0]
    return rooms


def room_graph(graph: dict[str, set[str]], rooms: dict[str, str]) -> dict[str, set[str]]:
    """The module graph contracted to rooms (imports within a room dropped)."""

    def room(module: str) -> str:
        return rooms[module.split(".")[1]]

    out: dict[str, set[str]] = {r: set() for r in rooms.values()}
    for m, targets in graph.items():
        if m == PACKAGE.name:
            continue
        out[room(m)] |= {room(t) for t in targets if t != PACKAGE.name} - {room(m)}
    return out


def test_every_module_has_a_room_and_rooms_import_downward() -> None:
    """docs/architecture.md's rooms cover the package and stay layered: no room imports a
    room that imports it back (the diagram there has no arrow pointing up)."""
    rooms = rooms_of_the_doc(ARCHITECTURE.read_text(encoding="utf-8"))
    graph = import_graph(PACKAGE)
    tops = {m.split(".")[1] for m in graph if m != PACKAGE.name}
    assert tops <= set(rooms), f"modules in no room of docs/architecture.md: {tops - set(rooms)}"
    assert set(rooms) <= tops, f"rooms name modules that do not exist: {set(rooms) - tops}"
    cycles = find_cycles(room_graph(graph, rooms))
    assert not cycles, "rooms that import each other:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_a_room_that_imports_upward_is_found() -> None:
    doc = (
        "## The rooms\n\n| room | modules | what |\n| --- | --- | --- |\n"
        "| low | `a`, `sub/` | x |\n| high | `b` | y |\n\n## Next\n"
    )
    rooms = rooms_of_the_doc(doc)
    assert rooms == {"a": "low", "sub": "low", "b": "high"}
    graph = {"kit.a": {"kit.sub.c"}, "kit.sub.c": set(), "kit.b": {"kit.a"}}
    assert find_cycles(room_graph(graph, rooms)) == []
    graph["kit.sub.c"] = {"kit.b"}  # the low room reaches up
    assert find_cycles(room_graph(graph, rooms)) == [["high", "low", "high"]]
