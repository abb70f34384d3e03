"""Every notebook runs top to bottom in a real kernel, offline, with the bundled model.

Notebooks are stored without outputs (so diffs stay readable and nobody commits a stale
answer); the first test checks that, the second executes each one in `notebooks/` as the
learner would (cwd = notebooks/) and fails on any error.
"""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

from wasi_lab.paths import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9]*.ipynb"))
#: Notebook 01 may compile the guest cold (three variants, ~1 min each on 2 cores).
TIMEOUTS = {"01_compile_the_guest.ipynb": 900}
DEFAULT_TIMEOUT = 600


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 4, f"expected the workshop notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), f"{path.name} cell {i} is stored with outputs"
        assert cell.get("execution_count") is None, \
            f"{path.name} cell {i} is stored with an execution count"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes(path: Path, tmp_path: Path) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    timeout = TIMEOUTS.get(path.name, DEFAULT_TIMEOUT)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
                            allow_errors=False)
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    seconds = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, errors
    # Keep the executed copy for a human to look at; never written back to notebooks/.
    out = REPO_ROOT / "test-artifacts" / "notebooks" / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    print(f"{path.name}: executed in {seconds:.1f} s")
