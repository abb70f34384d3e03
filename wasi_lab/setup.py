"""`wasi-lab setup`: everything `make lab` and `make test` need, done once.

Each step checks before it works, so a second run costs about a second: the toolchain is
looked up (installed with apt only when missing and we are root on Debian), cargo's own
incremental build makes an unchanged guest a no-op, and models and images are only
prepared when absent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def _step(name: str, fn: Callable[[], str], log: Callable[[str], None]) -> bool:
    start = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:  # report and carry on: the prebuilt guest still works
        log(f"[setup] {name}: FAILED: {exc}")
        return False
    log(f"[setup] {name}: {detail} ({time.perf_counter() - start:.1f} s)")
    return True


def ensure_toolchain_and_build() -> str:
    from wasi_lab.build import build_guest
    from wasi_lab.toolchain import (
        ToolchainError,
        apt_usable,
        find_toolchain,
        install_with_apt,
        missing_toolchain_advice,
    )

    try:
        tc = find_toolchain()
    except ToolchainError:
        if not (apt_usable() and install_with_apt()):
            return "no wasm-capable Rust toolchain; using guest/prebuilt.\n" + \
                missing_toolchain_advice()
        tc = find_toolchain()
    res = build_guest(toolchain=tc, progress=sys.stderr.isatty())
    state = "up to date" if res.up_to_date else f"compiled {len(res.compiled)} crates"
    return (f"guest {state} with {tc.version} ({tc.target}): "
            f"{res.module.name} {res.size:,} bytes")


def ensure_models() -> str:
    from wasi_lab.models.registry import ensure_model

    path = ensure_model("efficientnet-lite0")
    return f"{path.name} ready"


def ensure_images() -> str:
    from wasi_lab.images import prepare_images

    files = prepare_images()
    return f"{len(files)} images in images/"


def run_setup(log: Callable[[str], None] = print) -> int:
    ok = _step("toolchain + guest", ensure_toolchain_and_build, log)
    ok &= _step("models", ensure_models, log)
    ok &= _step("images", ensure_images, log)
    return 0 if ok else 1


#: What the test suite needs beyond Python packages: Debian's Chromium for the browser test.
TEST_APT_PACKAGES = ("chromium", "chromium-driver")


def ensure_test_deps(log: Callable[[str], None] = print) -> int:
    """Install Chromium from apt when it is missing and we may (root on Debian)."""
    import shutil
    import subprocess

    from wasi_lab.toolchain import apt_usable

    if shutil.which("chromium") or shutil.which("chromium-browser"):
        log("[setup] chromium: present")
        return 0
    if not apt_usable():
        log("[setup] chromium: missing and apt is not usable; the browser test will be skipped")
        return 0
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", *TEST_APT_PACKAGES]):
        if subprocess.run(cmd, env=env).returncode != 0:
            log(f"[setup] chromium: `{' '.join(cmd)}` failed")
            return 1
    log("[setup] chromium: installed")
    return 0
