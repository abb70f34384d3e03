"""The notebooks in a real browser: JupyterLab on 127.0.0.1, Debian's Chromium via Playwright.

Opens notebook 04, runs all cells, picks another image and checks that the top-5 chart
changes; opens notebook 03, runs it, moves the stage slider and checks the page map changes
(and 09: its step slider, the step caption and the step page map);
answers one exercise as a learner would (runs the notebook, types the solution into the
``exercise`` cell, runs it and its ``check``) and waits for the line starting with ✓; runs
the preflight and sees its slider render.
Screenshots go to test-artifacts/ (gitignored). Every wait is bounded.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.jupyterlab import jupyterlab_server, open_and_run_all
from tests.nbrun import solution_code
from wasi_lab.exercises import FAIL, PASS
from wasi_lab.paths import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is absent (apt-get install chromium; `make test` installs it)",
    ),
]


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of notebooks/ for the server to work in (the browser saves into it, not ours)."""
    nbdir = tmp_path_factory.mktemp("lab") / "notebooks"
    shutil.copytree(
        REPO_ROOT / "notebooks", nbdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints")
    )
    return nbdir


@pytest.fixture(scope="module")
def lab(lab_dir: Path) -> Iterator[str]:
    """A JupyterLab server on a free loopback port, rooted at a copy of notebooks/."""
    with jupyterlab_server(lab_dir) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _src(page, selector: str) -> str:
    return page.locator(selector).first.get_attribute("src") or ""


def _wait_src_change(page, selector: str, old: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        new = _src(page, selector)
        if new and new != old:
            return new
        page.wait_for_timeout(500)
    raise AssertionError(f"{selector} did not change within {timeout_s} s")


def _text(page, selector: str) -> str:
    """textContent of the first match (innerText is empty for cells JupyterLab skips)."""
    return page.locator(selector).first.text_content(timeout=10_000) or ""


def test_notebook_04_prediction_panel(lab: str, browser) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_and_run_all(browser, lab, "04_predictions.ipynb")
    try:
        page.wait_for_selector("img.wasi-top5", timeout=180_000)
        page.wait_for_function(
            "() => { const i = document.querySelector('img.wasi-top5');"
            " return i && i.src && i.naturalWidth > 0; }",
            timeout=180_000,
        )
        page.locator(".wasi-status").first.scroll_into_view_if_needed()
        page.wait_for_function(
            "() => (document.querySelector('.wasi-status') || {}).textContent"
            "?.includes('military uniform')",
            timeout=60_000,
        )
        before = _src(page, "img.wasi-top5")
        page.screenshot(path=str(ARTIFACTS / "04-before.png"), full_page=False)
        select = page.locator(".wasi-image-pick select").first
        select.select_option(label="chelsea.png")
        _wait_src_change(page, "img.wasi-top5", before)
        # the status line is written last, once the result is in ("name → label")
        page.wait_for_function(
            "() => document.querySelector('.wasi-status').textContent.includes('chelsea.png →')",
            timeout=60_000,
        )
        assert "cat" in _text(page, ".wasi-status")
        page.locator("img.wasi-top5").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "04-after.png"), full_page=False)
    finally:
        page.close()


def test_notebook_03_stage_slider(lab: str, browser) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_and_run_all(browser, lab, "03_linear_memory.ipynb")
    try:
        page.wait_for_function(
            "() => { const i = document.querySelector('img.wasi-pagemap');"
            " return i && i.src && i.naturalWidth > 0; }",
            timeout=180_000,
        )
        before = _src(page, "img.wasi-pagemap")
        page.locator(".wasi-stage-caption").first.scroll_into_view_if_needed()
        assert "fresh instance" in _text(page, ".wasi-stage-caption")
        handle = page.locator(".wasi-stage-slider .noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        page.screenshot(path=str(ARTIFACTS / "03-before.png"), full_page=False)
        for _ in range(2):
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(300)
        _wait_src_change(page, "img.wasi-pagemap", before)
        page.wait_for_function(
            "() => document.querySelector('.wasi-stage-caption').textContent"
            ".includes('model written')",
            timeout=60_000,
        )
        page.screenshot(path=str(ARTIFACTS / "03-after.png"), full_page=False)
    finally:
        page.close()


def test_notebook_09_step_slider(lab: str, browser) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_and_run_all(browser, lab, "09_step_through_inference.ipynb")
    try:
        # Let Run All finish (no code cell left at [*] or unrun) so no cell takes the focus.
        page.wait_for_function(
            "() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];"
            " return p.length && p.every(e => /\\[\\d+\\]/.test(e.textContent)); }",
            timeout=240_000,
        )
        pagemap = page.locator("img.wasi-step-pagemap").first
        pagemap.scroll_into_view_if_needed()  # an off-screen image is not decoded
        page.wait_for_function(
            "() => { const i = document.querySelector('img.wasi-step-pagemap');"
            " return i && i.src && i.naturalWidth > 0; }",
            timeout=60_000,
        )
        before_map = _src(page, "img.wasi-step-pagemap")
        before = _text(page, ".wasi-step-caption")
        assert before.startswith("step 0: "), before
        handle = page.locator(".wasi-step-slider .noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        page.screenshot(path=str(ARTIFACTS / "09-before.png"), full_page=False)
        for _ in range(2):
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(300)
        _wait_src_change(page, "img.wasi-step-pagemap", before_map)
        page.wait_for_function(
            "() => document.querySelector('.wasi-step-caption').textContent.startsWith('step 2: ')",
            timeout=60_000,
        )
        after = _text(page, ".wasi-step-caption")
        # the op (text up to the first comma) is not step 0's: Conv 3x3/2 vs Conv 1x1
        assert after.split(",")[0].split(": ", 1)[1] != before.split(",")[0].split(": ", 1)[1], (
            before,
            after,
        )
        assert "recomputed in NumPy" in _text(page, ".wasi-step-recomputed")
        page.screenshot(path=str(ARTIFACTS / "09-after.png"), full_page=False)
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "09-failed.png"), full_page=False)
        prompts = page.locator(".jp-CodeCell .jp-InputArea-prompt").all_text_contents()
        caption = page.locator(".wasi-step-caption").all_text_contents()
        print("09 prompts:", prompts, "caption:", caption[:1])
        raise
    finally:
        page.close()


#: The notebooks whose first exercise the browser answers, in order of preference.
EXERCISE_NOTEBOOKS = ("02_inspect_the_exports.ipynb", "03_linear_memory.ipynb")
#: Used only while neither has an exercise: the same trio on the real guest, staged into the
#: server's copy of notebooks/ (never into the repository).
STAGED_EXERCISE = "99_browser_exercise.ipynb"


def _first_exercise(path: Path) -> tuple[int, str] | None:
    """Position of the first ``exercise`` cell and its solution's code, if there is one."""
    cells = nbformat.read(path, as_version=4).cells
    for i, cell in enumerate(cells):
        if "exercise" in cell.get("metadata", {}).get("tags", []):
            for later in cells[i + 1 :]:
                if "solution" in later.get("metadata", {}).get("tags", []):
                    code = solution_code(later.source)
                    return (i, code) if code else None
    return None


def _stage_exercise_notebook(nbdir: Path) -> Path:
    v4 = nbformat.v4
    nb = v4.new_notebook(
        cells=[
            v4.new_markdown_cell("# An exercise, answered in the browser"),
            v4.new_code_cell(
                "from wasi_lab.exercises import check_value\n"
                "from wasi_lab.runtime import Guest\n\nguest = Guest()"
            ),
            v4.new_code_cell(
                "# How many 64 KiB pages does a fresh guest's memory have?\npages = None",
                metadata={"tags": ["exercise"]},
            ),
            v4.new_code_cell(
                "check_value('pages', pages, guest.memory.size(guest.store),\n"
                "            'ask the memory export: guest.memory.size(guest.store)')",
                metadata={"tags": ["check"]},
            ),
            v4.new_markdown_cell(
                "<details><summary>Solution</summary>\n\n```python\n"
                "memory = guest.memory\npages = memory.size(guest.store)\n"
                "```\n</details>",
                metadata={"tags": ["solution"]},
            ),
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    path = nbdir / STAGED_EXERCISE
    nbformat.write(nb, path)
    return path


def _cell_output(page, index: int) -> str:
    cell = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)
    area = cell.locator(".jp-OutputArea-output")
    # textContent, not innerText: JupyterLab skips rendering cells outside the viewport
    # (content-visibility), and innerText of a skipped cell is empty.
    return "\n".join(area.all_text_contents())


def _wait_output_line(page, index: int, mark: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    text = ""
    while time.monotonic() < deadline:
        text = _cell_output(page, index)
        if any(line.startswith(mark) for line in text.splitlines()):
            return text
        page.wait_for_timeout(500)
    raise AssertionError(
        f"cell {index} printed no line starting with {mark} within "
        f"{timeout_s:.0f} s; it shows: {text!r}"
    )


def test_an_exercise_answered_in_the_browser(lab: str, lab_dir: Path, browser) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = next(
        ((name, ex) for name in EXERCISE_NOTEBOOKS if (ex := _first_exercise(lab_dir / name))), None
    )
    if target is None:
        target = (STAGED_EXERCISE, _first_exercise(_stage_exercise_notebook(lab_dir)))
    name, (index, code) = target
    page = open_and_run_all(browser, lab, name)
    try:
        # As shipped, the check says the exercise is not answered yet.
        shipped = _wait_output_line(page, index + 1, FAIL, 240)
        assert not any(line.startswith(PASS) for line in shipped.splitlines()), shipped
        cells = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell")
        editor = cells.nth(index).locator(".jp-InputArea-editor .cm-content")
        editor.scroll_into_view_if_needed()
        editor.click()
        page.keyboard.press("Control+a")
        # insert_text types the text as one input, as a paste would: the editor's
        # auto-indent and bracket closing (keyboard-driven) do not rewrite the solution.
        page.keyboard.insert_text(code.rstrip("\n"))
        page.keyboard.press("Shift+Enter")  # runs the exercise, moves to the check
        page.keyboard.press("Shift+Enter")  # runs the check
        answered = _wait_output_line(page, index + 1, PASS, 120)
        assert not any(line.startswith(FAIL) for line in answered.splitlines()), answered
        cells.nth(index + 1).scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "exercise-answered.png"), full_page=False)
    except AssertionError:
        page.screenshot(path=str(ARTIFACTS / "exercise-failed.png"), full_page=False)
        raise
    finally:
        page.close()


def test_preflight_shows_its_slider(lab: str, browser) -> None:
    """The preflight's claim "if you see a slider above, widgets render" holds in a browser."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_and_run_all(browser, lab, "00_preflight.ipynb")
    try:
        text = _wait_output_line(page, 1, f"{PASS} widgets", 120)
        page.wait_for_selector(
            ".jp-OutputArea-output .widget-slider", state="visible", timeout=30_000
        )
        assert not [ln for ln in text.splitlines() if ln.startswith(FAIL)], text
        page.screenshot(path=str(ARTIFACTS / "00-preflight.png"), full_page=False)
    finally:
        page.close()
