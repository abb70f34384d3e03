"""JupyterLab on 127.0.0.1 and a notebook's Run All in Chromium, for the browser tests.

`test_browser` (the course notebooks) and `test_browser_host` (notebook 08's widget) start
the same server and drive the same menu; this is that shared part. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

#: The server's token; the tests put it in every URL.
TOKEN = "wasi-lab-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyterlab_server(nbdir: Path) -> Iterator[str]:
    """A JupyterLab server on a free loopback port rooted at `nbdir`; yields its base URL.

    Its config, data and runtime dirs and its log (`lab.log`) live in `nbdir`'s parent, so
    nothing of the user's Jupyter setup is read or written.
    """
    import httpx

    root = nbdir.parent
    port = free_port()
    env = dict(
        os.environ,
        JUPYTER_CONFIG_DIR=str(root / "cfg"),
        JUPYTER_DATA_DIR=str(root / "data"),
        JUPYTER_RUNTIME_DIR=str(root / "rt"),
    )
    log = (root / "lab.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            f"--ServerApp.root_dir={nbdir}",
            f"--IdentityProvider.token={TOKEN}",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=nbdir,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (root / "lab.log").read_text()[-2000:]
                raise RuntimeError(f"jupyter lab exited: {tail}")
            try:
                if (
                    httpx.get(
                        f"{base}/api/status", params={"token": TOKEN}, timeout=2, trust_env=False
                    ).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("jupyter lab did not answer within 90 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _dismiss_dialogs(page) -> None:
    """Answer a modal JupyterLab dialog (seen under load, over the menu bar) before a menu
    click; its text goes to the test's output so a real problem is still visible.

    "Select Kernel" (the session's kernel was slow to start) is accepted: its default is the
    notebook's own kernel, which the run needs; Escape would leave it without one. Any other
    dialog is closed with Escape."""
    for _ in range(3):
        dialog = page.locator(".jp-Dialog")
        if not dialog.count():
            return
        text = (dialog.first.text_content() or "").strip()
        print("JupyterLab dialog answered:", text[:200])
        accept = dialog.first.locator(".jp-mod-accept")
        if text.startswith("Select Kernel") and accept.count():
            accept.first.click()
            page.wait_for_selector("[data-status='idle']", timeout=90_000)
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(500)


def open_and_run_all(browser, base: str, name: str):
    """Open notebook `name` in a new page, wait for an idle kernel, Run All; return the page
    once a cell has started."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{base}/lab/tree/{name}?token={TOKEN}&reset", timeout=90_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    page.wait_for_selector("[data-status='idle']", timeout=90_000)  # the kernel is idle
    page.click(".jp-NotebookPanel .jp-Notebook")
    page.keyboard.press("Escape")
    # A menu click that lands while JupyterLab is still settling can be lost (seen once in
    # a loaded CI run: nothing ran for 180 s). Run All again if no cell has started.
    for attempt in range(2):
        _dismiss_dialogs(page)
        page.click(".lm-MenuBar-itemLabel:text-is('Run')", timeout=10_000)
        page.click(".lm-Menu-itemLabel:text-is('Run All Cells')", timeout=10_000)
        try:
            page.wait_for_function(
                "() => [...document.querySelectorAll('.jp-InputArea-prompt')]"
                ".some(p => /\\[(\\*|\\d+)\\]/.test(p.innerText))",
                timeout=30_000,
            )
            break
        except PlaywrightTimeout:
            if attempt:
                raise
    return page
