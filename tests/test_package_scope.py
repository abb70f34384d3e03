"""The package ships only what the course uses: no helper that only the tests call.

A public top-level function or class of `wasi_lab` must be named by the package itself (its
own definition aside), a notebook, a benchmark or a host script. One that only tests name
belongs in tests/ (tests/servers.py, tests/nbrun.py ...); one that nothing names is dead.
Names are read from the code (`ast`: names, attributes, imports, `__all__` entries), so a
docstring, a comment or a string that mentions a name does not keep it alive.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from wasi_lab.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "wasi_lab"
#: Where the package is used, besides the package itself.
USERS = ("notebooks", "benchmarks", "hosts")


def public_definitions() -> dict[str, list[Path]]:
    """Public top-level functions and classes of every module: name -> defining files."""
    found: dict[str, list[Path]] = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
            ) and not node.name.startswith("_"):
                found.setdefault(node.name, []).append(f)
    return found


def names_in_code(source: str) -> set[str]:
    """Every identifier the code refers to (a definition's own name is not a reference)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name.rsplit(".", 1)[-1])
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            names.update(
                e.value
                for e in ast.walk(node.value)
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            )
    return names


def notebook_code(path: Path) -> str:
    """The notebook's code cells, IPython magics dropped."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join(
        line
        for c in cells
        if c["cell_type"] == "code"
        for line in "".join(c["source"]).splitlines()
        if not line.lstrip().startswith(("%", "!"))
    )


def used_names() -> set[str]:
    """Identifiers named by the package, the notebooks, the benchmarks and the hosts."""
    names: set[str] = set()
    for f in PACKAGE.rglob("*.py"):
        names |= names_in_code(f.read_text(encoding="utf-8"))
    for folder in USERS:
        for f in (REPO_ROOT / folder).rglob("*"):
            if f.suffix == ".py":
                names |= names_in_code(f.read_text(encoding="utf-8"))
            elif f.suffix == ".ipynb":
                names |= names_in_code(notebook_code(f))
            elif f.suffix in (".js", ".mjs") and "node_modules" not in f.parts:
                names |= set(re.findall(r"[A-Za-z_]\w*", f.read_text(encoding="utf-8")))
    for f in PACKAGE.rglob("*.js"):  # the browser host calls into the page it is served with
        names |= set(re.findall(r"[A-Za-z_]\w*", f.read_text(encoding="utf-8")))
    return names


def test_every_public_definition_is_used_outside_the_tests() -> None:
    used = used_names()
    unused = {
        name: [str(f.relative_to(REPO_ROOT)) for f in files]
        for name, files in public_definitions().items()
        if name not in used
    }
    assert not unused, (
        f"only tests (or nothing) use these; move them to tests/ or remove them: {unused}"
    )


def test_the_check_sees_a_test_only_helper(tmp_path: Path) -> None:
    """The reader counts a name the package only defines as unused, and a call as a use."""
    defined = "def helper_for_tests():\n    return 1\n"
    assert "helper_for_tests" not in names_in_code(defined)
    assert "helper_for_tests" in names_in_code(defined + "helper_for_tests()\n")
    assert "helper_for_tests" not in names_in_code('"""helper_for_tests in prose"""\n')
    nb = tmp_path / "x.ipynb"
    nb.write_text(
        json.dumps(
            {
                "cells": [
                    {"cell_type": "markdown", "source": ["`helper_for_tests()` in prose"]},
                    {
                        "cell_type": "code",
                        "source": ["%matplotlib inline\n", "from m import helper\n"],
                    },
                ]
            }
        )
    )
    assert names_in_code(notebook_code(nb)) == {"helper"}
