"""`wasi-lab setup`: everything `make lab` and `make test` need, done once; `wasi-lab lab`.

Each step checks before it works, so a second run costs about a second: the toolchain is
looked up (installed with apt only when missing and we are root on Debian), cargo's own
incremental build makes an unchanged guest a no-op, and models and images are only
prepared when absent.

`wasi-lab lab` (or `python -m wasi_lab lab`) is `make lab` for whoever has no make
(Windows): the setup, then JupyterLab on the notebooks.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from wasi_lab.paths import REPO_ROOT


def _step(name: str, fn: Callable[[], str], log: Callable[[str], None]) -> bool:
    start = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:  # report and carry on: the prebuilt guest still works
        log(f"[setup] {name}: FAILED: {exc}")
        return False
    log(f"[setup] {name}: {detail} ({time.perf_counter() - start:.1f} s)")
    return True


def ensure_toolchain_and_build(build: bool = True) -> str:
    """Find (or install) the toolchain, then build the release guest unless `build` is off:
    `wasi-lab lab` leaves the first build to notebook 01, which compiles it live (the kit
    runs guest/prebuilt until then), so JupyterLab opens without waiting for cargo."""
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
    if not build:
        return (f"{tc.version} ({tc.target}) ready; notebook 01 builds the guest "
                "(guest/prebuilt until then)")
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


def ensure_node_packages(node_dir: Path = REPO_ROOT / "hosts" / "node") -> str:
    """`npm ci` in hosts/node (the pinned wasm peers of `bench --wasm-peers`) when Node and
    npm exist and node_modules is older than the lockfile. Never fails the setup: without
    them the bench lists those peers as skipped, with why."""
    import shutil

    npm = shutil.which("npm")
    if not (shutil.which("node") and npm):
        return "node or npm missing: `wasi-lab bench --wasm-peers` will skip its peers"
    lock, done = node_dir / "package-lock.json", node_dir / "node_modules" / ".package-lock.json"
    if done.exists() and done.stat().st_mtime >= lock.stat().st_mtime:
        return "npm packages up to date"
    out = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                         cwd=node_dir, capture_output=True, text=True)
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-2:])
        return f"`npm ci` failed ({tail}): `bench --wasm-peers` will skip its peers"
    return "npm ci done (onnxruntime-web, @tensorflow/tfjs-*)"


def run_setup(log: Callable[[str], None] = print, build: bool = True) -> int:
    ok = _step("toolchain + guest" if build else "toolchain",
               lambda: ensure_toolchain_and_build(build), log)
    ok &= _step("models", ensure_models, log)
    ok &= _step("images", ensure_images, log)
    _step("wasm peers (npm)", ensure_node_packages, log)
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


# ------------------------------------------------------------------------- wasi-lab lab
def jupyter_lab_argv(notebooks: Path, as_root: bool | None = None) -> list[str]:
    """JupyterLab on `notebooks`, from this interpreter (no PATH lookup, so the venv's own
    JupyterLab runs on every OS). Root needs --allow-root: containers and CI machines are."""
    if as_root is None:
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    argv = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={notebooks}"]
    return [*argv, "--allow-root"] if as_root else argv


def run_lab(dry_run: bool = False, build: bool = False, log: Callable[[str], None] = print,
            notebooks: Path = REPO_ROOT / "notebooks") -> int:
    """What `make lab` does after installing: the setup (without the guest build unless
    `build`: notebook 01 does it, live), then JupyterLab until it exits. A failed setup step
    stops here, as it stops make, with the step's message above."""
    argv = jupyter_lab_argv(notebooks)
    if not notebooks.is_dir():
        log(f"wasi-lab lab: no notebooks at {notebooks}: run it from a checkout of wasi-lab")
        return 1
    if dry_run:
        log("setup: toolchain, " + ("guest, " if build else "")
            + "models, images" + ("" if build else " (notebook 01 builds the guest)"))
        log(" ".join(argv))
        return 0
    if run_setup(log, build=build) != 0:
        log("wasi-lab lab: setup failed (see above); not starting JupyterLab")
        return 1
    try:
        return subprocess.run(argv).returncode
    except KeyboardInterrupt:  # Ctrl-C reached JupyterLab too; it shuts itself down
        return 130


def add_lab_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("lab", help="set up, then start JupyterLab on the notebooks "
                              "(what `make lab` does after installing)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--build", action="store_true",
                   help="also build the guest first (otherwise notebook 01 builds it)")
    p.set_defaults(func=lambda args: run_lab(dry_run=args.dry_run, build=args.build))
    return p
