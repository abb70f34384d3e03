"""The README's two commands, as make would run them (dry run: nothing is executed)."""

from __future__ import annotations

import os
import subprocess

from wasi_lab.paths import REPO_ROOT


def dry_run(target: str) -> str:
    out = subprocess.run(["make", "-n", target], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_lab_sets_up_then_starts_jupyterlab_on_the_notebooks() -> None:
    text = dry_run("lab")
    setup, lab = text.index("wasi_lab setup"), text.index("jupyter lab --notebook-dir=notebooks")
    assert setup < lab
    # JupyterLab refuses to start as root without --allow-root (containers, CI machines).
    assert ("--allow-root" in text) == (os.geteuid() == 0)


def test_make_test_sets_up_lints_and_runs_pytest() -> None:
    text = dry_run("test")
    steps = [text.index(s) for s in ("wasi_lab setup", "ruff check", "pytest")]
    assert steps == sorted(steps)


def test_ci_calls_make_test() -> None:
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
