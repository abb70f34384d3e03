"""The preflight: real checks on this machine, and a clear ✗ with its fix for each broken piece."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wasi_lab import preflight
from wasi_lab.paths import REPO_ROOT
from wasi_lab.preflight import FAIL, OPTIONAL, PASS

NAMES = ["python", "widgets", "guest module", "model", "images", "node", "memory", "port", "rust"]


def _by_name(checks: list[preflight.Check]) -> dict[str, preflight.Check]:
    return {c.name: c for c in checks}


def test_real_checks_on_this_machine(module_path: Path) -> None:
    checks = preflight.run_checks()
    assert [c.name for c in checks] == NAMES
    got = _by_name(checks)
    for name in ("python", "widgets", "guest module", "model", "images", "port"):
        assert got[name].mark == PASS, got[name].line()
    assert "instantiates" in got["guest module"].detail
    assert module_path.name in got["guest module"].detail
    for c in checks:
        assert c.line()[0] in (PASS, FAIL, OPTIONAL), c.line()
        assert (c.mark == FAIL) == ("→ fix:" in c.line())


def test_a_missing_module_is_a_fail_line_with_its_fix(tmp_path: Path) -> None:
    got = _by_name(preflight.run_checks(module=tmp_path / "missing.wasm"))
    line = got["guest module"].line()
    assert line.startswith(f"{FAIL} guest module:") and "does not exist" in line
    assert "→ fix: use the .wasm `wasi-lab build` printed" in line
    assert got["model"].mark == PASS  # one broken piece does not hide the others


@pytest.mark.parametrize(
    "content, says",
    [
        (b"not a module at all", "is not a WebAssembly module"),
        (b"\0asm\x01\0\0\0\x01\xff", "does not instantiate"),
    ],
)
def test_a_broken_module_is_a_fail_line(tmp_path: Path, content: bytes, says: str) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(content)
    check = preflight.check_module(bad)
    assert check.mark == FAIL and says in check.detail, check.line()
    assert check.fix


def test_cli_with_a_broken_module_path_prints_the_fix_and_exits_1(tmp_path: Path) -> None:
    env = dict(os.environ, WASI_LAB_MODULE=str(tmp_path / "gone.wasm"), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "wasi_lab", "preflight"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "guest module" in ln)
    assert line.startswith(FAIL) and "unset WASI_LAB_MODULE" in line
    assert "1 check failed" in proc.stdout


def test_cli_on_this_machine_exits_0() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wasi_lab", "preflight"],
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all set" in proc.stdout
    assert not [ln for ln in proc.stdout.splitlines() if ln.startswith(FAIL)]


def test_optional_pieces_are_dashes_not_failures() -> None:
    for check in (
        preflight.check_node(None),
        preflight.check_node("v18.19.0"),
        preflight.check_rust(None),
    ):
        assert check.mark == OPTIONAL and check.ok
        assert check.line().startswith(f"{OPTIONAL} {check.name}: optional, not found:")
    assert preflight.check_node("v20.11.1").mark == PASS
    assert "rustup target add" in preflight.check_rust(None).detail


def test_low_memory_and_absent_model_name_their_fix() -> None:
    low = preflight.check_memory(free=200 * 2**20)
    assert low.mark == FAIL and "Shut Down Kernel" in low.fix
    assert preflight.check_memory(free=4 * 2**30).mark == PASS
    absent = preflight.check_model(
        [{"name": "efficientnet-lite0", "present": False, "path": "models/efficientnet-lite0.pb"}]
    )
    assert absent.mark == FAIL and "wasi-lab models prepare" in absent.fix
    assert preflight.check_images(0).fix.startswith("`wasi-lab images prepare`")


def test_an_unusable_address_fails_the_port_check() -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: bind fails locally, nothing is sent.
    check = preflight.check_port("192.0.2.1")
    assert check.mark == FAIL and "no free port" in check.detail


def test_old_python_and_mismatched_widget_front_end_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "MIN_PYTHON", (99, 0))
    assert preflight.check_python().mark == FAIL
    import jupyterlab_widgets

    monkeypatch.setattr(jupyterlab_widgets, "__version__", "1.1.0")
    check = preflight.check_widgets()
    assert check.mark == FAIL and "jupyterlab_widgets" in check.fix


def test_a_check_that_raises_becomes_a_fail_line() -> None:
    def broken() -> preflight.Check:
        raise RuntimeError("kaput")

    check = preflight._guarded("thing", broken, "do this")
    assert (
        check.line() == f"{FAIL} thing: the check itself failed (RuntimeError: kaput) "
        f"→ fix: do this"
    )


def test_the_notebook_call_shows_a_slider_and_says_so(capsys: pytest.CaptureFixture) -> None:
    checks = preflight.preflight()
    out = capsys.readouterr().out
    assert "IntSlider" in out  # outside a browser, display() prints the widget's repr
    assert "if you see a slider above, widgets render" in out
    assert len(checks) == len(NAMES)
