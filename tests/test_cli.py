"""The `wasi-lab` command as a newcomer runs it."""

from __future__ import annotations

import json
import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wasi_lab", *args], capture_output=True, text=True, timeout=300
    )


def test_inspect_json_lists_the_abi() -> None:
    out = run("inspect", "--json")
    assert out.returncode == 0, out.stderr
    names = {e["name"] for e in json.loads(out.stdout)["exports"]}
    assert {"memory", "alloc", "dealloc", "decode_image", "last_error"} <= names


def test_inspect_of_a_missing_file_is_a_clear_error(tmp_path) -> None:
    out = run("inspect", str(tmp_path / "nope.wasm"))
    assert out.returncode == 1 and "nope.wasm: not found" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Errno" not in out.stderr


def test_doctor_explains_its_choice() -> None:
    out = run("doctor")
    assert out.returncode == 0
    assert ("Chosen:" in out.stdout and "why:" in out.stdout) or "rustup target add" in out.stdout
    rep = json.loads(run("doctor", "--json").stdout)
    assert rep["module_present"] and rep["candidates"]


def test_setup_twice_does_no_work_the_second_time() -> None:
    first = run("setup")
    second = run("setup")
    assert second.returncode == 0, second.stdout + second.stderr
    if "no wasm-capable Rust toolchain" not in second.stdout:
        assert "guest up to date" in second.stdout, second.stdout
    assert first.returncode == 0, first.stdout + first.stderr
