"""The toolchain is chosen by its wasm target, never by PATH order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wasi_lab import toolchain
from wasi_lab.toolchain import ToolchainError, find_toolchain


def fake_toolchain(root: Path, name: str, with_target: str | None) -> Path:
    """A rustup-style toolchain dir whose rustc answers --version and --print sysroot."""
    tc = root / "toolchains" / name
    (tc / "bin").mkdir(parents=True)
    rustc = tc / "bin" / "rustc"
    rustc.write_text(
        f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'rustc 9.9.9 ({name})';"
        f" else echo '{tc}'; fi\n"
    )
    rustc.chmod(0o755)
    cargo = tc / "bin" / "cargo"
    cargo.write_text("#!/bin/sh\nexit 0\n")
    cargo.chmod(0o755)
    if with_target:
        (tc / "lib" / "rustlib" / with_target / "lib").mkdir(parents=True)
    return rustc


def test_rustup_toolchain_without_target_is_skipped(tmp_path, monkeypatch) -> None:
    fake_toolchain(tmp_path, "stable-x86_64-unknown-linux-gnu", None)
    monkeypatch.setenv("RUSTUP_HOME", str(tmp_path))
    monkeypatch.setenv(
        "PATH",
        f"{tmp_path / 'toolchains/stable-x86_64-unknown-linux-gnu/bin'}"
        f"{os.pathsep}{os.environ['PATH']}",
    )
    if not Path("/usr/bin/rustc").exists():
        with pytest.raises(ToolchainError, match="rustup target add wasm32-wasip1"):
            find_toolchain(check_network=False)
        return
    tc = find_toolchain(check_network=False)
    assert tc.rustc == Path("/usr/bin/rustc")
    assert "skipped rustup toolchain stable" in tc.reason
    assert tc.target in ("wasm32-wasi", "wasm32-wasip1")


def test_rustup_toolchain_with_wasip1_comes_first(tmp_path, monkeypatch) -> None:
    rustc = fake_toolchain(tmp_path, "stable-x86_64-unknown-linux-gnu", "wasm32-wasip1")
    monkeypatch.setenv("RUSTUP_HOME", str(tmp_path))
    monkeypatch.setattr(toolchain, "crates_io_reachable", lambda timeout=3.0: True)
    tc = find_toolchain()
    assert tc.rustc == rustc and tc.target == "wasm32-wasip1"
    assert not tc.use_debian_registry and tc.cargo_config_args() == []


def test_offline_rustup_toolchain_falls_back_to_debian_registry(tmp_path, monkeypatch) -> None:
    fake_toolchain(tmp_path, "stable-x86_64-unknown-linux-gnu", "wasm32-wasip1")
    monkeypatch.setenv("RUSTUP_HOME", str(tmp_path))
    monkeypatch.setattr(toolchain, "crates_io_reachable", lambda timeout=3.0: False)
    tc = find_toolchain()
    if toolchain.DEBIAN_REGISTRY.is_dir():
        assert tc.use_debian_registry
        assert "source.crates-io.replace-with='debian'" in tc.cargo_config_args()
        assert "crates.io unreachable" in tc.reason


def test_no_toolchain_gives_both_install_commands(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RUSTUP_HOME", str(tmp_path))
    monkeypatch.setattr(toolchain, "candidates", lambda: [])
    with pytest.raises(ToolchainError) as err:
        find_toolchain()
    assert "rustup target add wasm32-wasip1" in str(err.value)
    assert "apt-get install rustc cargo libstd-rust-dev-wasm32" in str(err.value)
    assert "prebuilt" in str(err.value)
