"""Run a notebook from notebooks/ in a real kernel and collect what its cells printed.

For tests that execute a notebook under a changed environment (no Node, no native peers):
the kernel inherits this process's environment, so `monkeypatch.setenv` reaches it.
"""

from __future__ import annotations

import re

import nbformat

from wasi_lab.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"

_FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def execute(name: str, timeout: int = 600) -> nbformat.NotebookNode:
    """The executed notebook; raises CellExecutionError on the first failing cell."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
        allow_errors=False,
    ).execute()
    return nb


def printed(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell wrote to stdout."""
    return "".join(
        o.get("text", "")
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


def tagged(nb: nbformat.NotebookNode, tag: str) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def solution_code(markdown: str) -> str | None:
    """The code of a ``solution`` cell: its first fenced ``python`` block."""
    match = _FENCE.search(markdown)
    return match.group(1) if match else None
