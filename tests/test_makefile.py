"""The README's two commands, as make would run them (dry run: nothing is executed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wasi_lab.paths import REPO_ROOT
from wasi_lab.setup import jupyter_lab_argv


def dry_run(target: str, cwd: Path = REPO_ROOT) -> str:
    out = subprocess.run(
        ["make", "-n", target], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_lab_installs_the_workshop_then_runs_wasi_lab_lab(tmp_path: Path) -> None:
    text = dry_run("lab", fresh_checkout(tmp_path))
    assert "pip install -q -e .\n" in text and "[dev]" not in text and "[bench]" not in text
    assert text.index("pip install") < text.index("-m wasi_lab lab")


def test_wasi_lab_lab_sets_up_then_starts_jupyterlab_on_the_notebooks() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wasi_lab", "lab", "--dry-run"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    setup, lab = out.stdout.index("setup: toolchain, models"), out.stdout.index("-m jupyterlab")
    assert setup < lab and "notebook 01 builds the guest" in out.stdout
    assert f"--notebook-dir={REPO_ROOT / 'notebooks'}" in out.stdout
    # JupyterLab refuses to start as root without --allow-root (containers, CI machines).
    assert ("--allow-root" in out.stdout) == (os.geteuid() == 0)


def test_the_jupyterlab_command_runs() -> None:
    """`python -m jupyterlab` is a real entry point of the installed JupyterLab."""
    argv = jupyter_lab_argv(REPO_ROOT / "notebooks", as_root=False)
    assert "--allow-root" not in argv and "--allow-root" in jupyter_lab_argv(Path("."), True)
    out = subprocess.run([*argv[:3], "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip()[0].isdigit(), out


def test_make_test_installs_everything_sets_up_lints_and_runs_pytest(tmp_path: Path) -> None:
    text = dry_run("test", fresh_checkout(tmp_path))
    assert "pip install -q -e '.[dev]'" in text
    # whole commands, not words: make's "Entering directory" line may hold pytest's tmp path
    steps = [
        text.index(s)
        for s in ("bin/pip install", "-m wasi_lab setup", "bin/ruff check", "bin/pytest -q")
    ]
    assert steps == sorted(steps)


def fresh_checkout(tmp_path: Path) -> Path:
    """The Makefile and pyproject.toml in a folder without a venv."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    return tmp_path


def make_venv(root: Path, *stamps: str) -> None:
    """A stand-in `.venv` for make's timestamps (make -n only looks at them), with the
    given install stamps newer than pyproject.toml."""
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").touch()
    later = time.time() + 5
    for stamp in stamps:
        path = root / ".venv" / f".installed-{stamp}"
        path.touch()
        os.utime(path, (later, later))


@pytest.mark.parametrize(
    ("stamps", "target", "installs"),
    [
        ((), "lab", "-e ."),  # fresh clone: the workshop only
        (("lab",), "lab", None),  # second make lab: nothing to install
        (("lab",), "test", "-e '.[dev]'"),  # a workshop venv upgraded for the tests
        (("lab",), "bench", "-e '.[bench]'"),  # ... or for the benchmark's peers
        (("lab", "bench", "test"), "lab", None),  # a test venv is a workshop venv
        (("lab", "bench", "test"), "test", None),
    ],
)
def test_stamps_upgrade_a_venv_in_place(
    tmp_path: Path, stamps: tuple[str, ...], target: str, installs: str | None
) -> None:
    root = fresh_checkout(tmp_path)
    make_venv(root, *stamps)
    text = dry_run(target, root)
    assert "-m venv" not in text
    pip = [line for line in text.splitlines() if "pip install" in line]
    assert pip == ([f".venv/bin/pip install -q {installs}"] if installs else []), text


def test_after_the_test_install_nothing_is_reinstalled(tmp_path: Path) -> None:
    """Make's recipes run for real, pip being a logging stand-in in a stand-in venv: what
    is under test is which installs make asks for, and in which order."""
    root = fresh_checkout(tmp_path)
    make_venv(root)
    log = tmp_path / "pip.log"
    pip = root / ".venv" / "bin" / "pip"
    pip.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    pip.chmod(0o755)
    for target in (".venv/.installed-lab", ".venv/.installed-test"):
        out = subprocess.run(["make", target], cwd=root, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    assert log.read_text().splitlines() == ["install -q -e .", "install -q -e .[dev]"]
    for target in ("lab", "bench", "test", "lint"):
        assert "pip install" not in dry_run(target, root), target


def test_an_edited_pyproject_reinstalls(tmp_path: Path) -> None:
    root = fresh_checkout(tmp_path)
    make_venv(root, "lab", "bench", "test")
    later = time.time() + 60
    os.utime(root / "pyproject.toml", (later, later))
    assert ".venv/bin/pip install -q -e .\n" in dry_run("lab", root)
    assert ".venv/bin/pip install -q -e '.[dev]'" in dry_run("test", root)


def test_ci_calls_make_test() -> None:
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_lint_runs_the_format_checks_unless_switched_off(tmp_path: Path) -> None:
    """`make lint` and `make test` run ruff check and both format checks; FORMAT_CHECK=0
    leaves ruff check alone."""
    root = fresh_checkout(tmp_path)
    make_venv(root, "lab", "bench", "test")
    for target in ("lint", "test"):
        default = dry_run(target, root)
        assert "bin/ruff format --check" in default and "cargo fmt" in default, target
    off = subprocess.run(
        ["make", "-n", "lint", "FORMAT_CHECK=0"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "bin/ruff check" in off and "format --check" not in off and "cargo fmt" not in off
    on = dry_run("lint", root)
    steps = [
        on.index(s)
        for s in (
            "bin/ruff check",
            "bin/ruff format --check",
            "cargo fmt --manifest-path guest/Cargo.toml --check",
        )
    ]
    assert steps == sorted(steps)
