"""The guest compiles on a current Rust as well as on Debian's 1.63.

The kit builds with Debian's rustc 1.63 (the only one with a wasm std here), but a learner with
rustup builds with whatever stable is current. `cargo check` on rustup's stable toolchain, for
the host target when stable has no wasm target, catches code that only an old compiler accepts
(removed lints turned errors, changed inference) without a wasm std. Crates come from Debian's
registry, as in the real build, so the check needs no network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from wasi_lab.paths import GUEST_DIR
from wasi_lab.toolchain import DEBIAN_REGISTRY, WASM_TARGETS

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "rust-stable"


def _stable_cargo() -> list[str] | None:
    """`rustup run stable cargo`, when rustup and a stable toolchain are installed."""
    rustup = shutil.which("rustup")
    if rustup is None:
        return None
    listed = subprocess.run([rustup, "toolchain", "list"], capture_output=True, text=True)
    if listed.returncode != 0 or not any(
        line.startswith("stable") for line in listed.stdout.splitlines()
    ):
        return None
    return [rustup, "run", "stable", "cargo"]


def _wasm_target(cargo: list[str]) -> list[str]:
    """`--target wasm32-wasip1` when stable has that std installed, else the host target."""
    sysroot = subprocess.run(
        [*cargo[:-1], "rustc", "--print", "sysroot"], capture_output=True, text=True
    ).stdout.strip()
    for target in WASM_TARGETS:
        if sysroot and (Path(sysroot) / "lib" / "rustlib" / target).is_dir():
            return ["--target", target]
    return []


def _stable_run(tmp_path: Path, *subcommand: str) -> subprocess.CompletedProcess:
    """`cargo SUBCOMMAND --lib --bins` on rustup's stable, over a copy of the guest."""
    cargo = _stable_cargo()
    if cargo is None:
        pytest.skip("no rustup stable toolchain on this machine")
    if not DEBIAN_REGISTRY.is_dir():
        pytest.skip(f"no Debian crate registry at {DEBIAN_REGISTRY}: crates.io is unreachable")
    # A copy without Cargo.lock: the lock written by 1.63's cargo is not stable's to reuse.
    copy = tmp_path / "guest"
    # shutil.copy, not copy2: fresh mtimes, so the cached target dir rechecks the guest.
    shutil.copytree(
        GUEST_DIR,
        copy,
        ignore=shutil.ignore_patterns("target", "prebuilt", "Cargo.lock"),
        copy_function=shutil.copy,
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    head, tail = subcommand[:1], subcommand[1:]
    cmd = [
        *cargo,
        *head,
        "--offline",
        "--lib",
        "--bins",
        *_wasm_target(cargo),
        "--config",
        "source.crates-io.replace-with='debian'",
        "--config",
        f"source.debian.directory='{DEBIAN_REGISTRY}'",
        "--manifest-path",
        str(copy / "Cargo.toml"),
        "--target-dir",
        str(ARTIFACTS),
        *tail,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_guest_checks_on_current_stable(tmp_path: Path) -> None:
    out = _stable_run(tmp_path, "check")
    assert out.returncode == 0, out.stderr[-4000:]
    assert "wasi-lab-guest" in out.stderr


@pytest.mark.slow
def test_guest_is_clippy_clean(tmp_path: Path) -> None:
    """Clippy with every warning an error; the two lints the guest turns off, and why, are at
    the top of guest/src/lib.rs."""
    out = _stable_run(tmp_path, "clippy", "--", "-D", "warnings")
    if out.returncode != 0 and "no such command" in out.stderr:
        pytest.skip("rustup's stable has no clippy component")
    assert out.returncode == 0, out.stderr[-6000:]
    assert "wasi-lab-guest" in out.stderr
