"""`wasi-lab setup`: everything `make lab` and `make test` need, done once; `wasi-lab lab`.

Each step checks before it works, so a second run costs about a second: the toolchain is
looked up (installed with apt only when missing and we are root on Debian), cargo's own
incremental build makes an unchanged guest a no-op, and models and images are only
prepared when absent.

`wasi-lab lab` (or `python -m wasi_lab lab`) is `make lab` for whoever has no make
(Windows): the setup, then JupyterLab on the notebooks.

From an installed wheel (no checkout, see `wasi_lab.paths`) the same two commands work:
the setup skips the guest build (there are no guest sources; the wheel carries the
prebuilt module) and writes models and images into the user data directory, and `lab`
first copies the notebooks the wheel ships into a working folder, never over a copy the
learner already has.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from wasi_lab.paths import (
    CHECKOUT,
    IMAGES_DIR,
    NODE_HOST_DIR,
    NOTEBOOKS_SOURCE,
    PREBUILT_MODULE,
    REPO_ROOT,
)


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
            return (
                "no wasm-capable Rust toolchain; using guest/prebuilt.\n"
                + missing_toolchain_advice()
            )
        tc = find_toolchain()
    if not build:
        return (
            f"{tc.version} ({tc.target}) ready; notebook 01 builds the guest "
            "(guest/prebuilt until then)"
        )
    res = build_guest(toolchain=tc, progress=sys.stderr.isatty())
    state = "up to date" if res.up_to_date else f"compiled {len(res.compiled)} crates"
    return f"guest {state} with {tc.version} ({tc.target}): {res.module.name} {res.size:,} bytes"


def ensure_models() -> str:
    from wasi_lab.models.registry import ensure_model

    path = ensure_model("efficientnet-lite0")
    return f"{path.name} ready"


def ensure_images() -> str:
    from wasi_lab.images import prepare_images

    files = prepare_images()
    return f"{len(files)} images in {IMAGES_DIR if CHECKOUT is None else 'images/'}"


def ensure_node_packages(node_dir: Path = NODE_HOST_DIR) -> str:
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
    out = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=node_dir,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        tail = " | ".join(out.stderr.strip().splitlines()[-2:])
        return f"`npm ci` failed ({tail}): `bench --wasm-peers` will skip its peers"
    return "npm ci done (onnxruntime-web, @tensorflow/tfjs-*)"


def run_setup(
    log: Callable[[str], None] = print, build: bool = True, checkout: Path | None = CHECKOUT
) -> int:
    """The setup's steps; outside a checkout (`checkout` None) the toolchain and build step
    is replaced by a line saying which packaged module runs: there is nothing to build."""
    if checkout is None:
        log(
            f"[setup] guest: installed kit, running the packaged {PREBUILT_MODULE} "
            "(building the guest needs a checkout of wasi-lab)"
        )
        ok = PREBUILT_MODULE.is_file()
        if not ok:
            log(f"[setup] guest: FAILED: {PREBUILT_MODULE} is missing: reinstall wasi-lab")
    else:
        ok = _step(
            "toolchain + guest" if build else "toolchain",
            lambda: ensure_toolchain_and_build(build),
            log,
        )
    ok &= _step("models", ensure_models, log)
    ok &= _step("images", ensure_images, log)
    return 0 if ok else 1


#: What the test suite needs beyond Python packages, by the command that shows it is there:
#: Debian's Chromium for the browser test, rustfmt for `make lint`'s `cargo fmt --check`.
TEST_APT_PACKAGES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("chromium", "chromium-browser"): ("chromium", "chromium-driver"),
    ("cargo-fmt",): ("rustfmt",),
}


def missing_test_packages(which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """The Debian packages of TEST_APT_PACKAGES whose commands are all absent."""
    return [
        pkg
        for commands, pkgs in TEST_APT_PACKAGES.items()
        if not any(which(c) for c in commands)
        for pkg in pkgs
    ]


def ensure_test_deps(log: Callable[[str], None] = print) -> int:
    """Install Chromium and rustfmt from apt when missing and we may (root on Debian), and
    the wasm peers' npm packages (tests and benchmarks only: a workshop laptop needs none)."""
    from wasi_lab.toolchain import apt_usable

    _step("wasm peers (npm)", ensure_node_packages, log)
    missing = missing_test_packages()
    if not missing:
        log("[setup] test tools: chromium and rustfmt present")
        return 0
    if not apt_usable():
        log(
            f"[setup] test tools: {', '.join(missing)} missing and apt is not usable; the "
            "browser test will be skipped and `cargo fmt --check` cannot run"
        )
        return 0
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        if subprocess.run(cmd, env=env).returncode != 0:
            log(f"[setup] test tools: `{' '.join(cmd)}` failed")
            return 1
    log(f"[setup] test tools: installed {', '.join(missing)}")
    return 0


# ------------------------------------------------------------------------- wasi-lab lab
def default_notebook_dir(checkout: Path | None = CHECKOUT) -> Path:
    """Where JupyterLab opens: the checkout's notebooks/, or outside a checkout a working
    copy in the user data directory (the same one from whichever directory `lab` runs)."""
    return checkout / "notebooks" if checkout else REPO_ROOT / "notebooks"


def copy_notebooks(source: Path, dest: Path) -> tuple[list[str], list[str]]:
    """Copy the course's notebooks from `source` into `dest`, skipping every one `dest`
    already has, whatever its content: it is the learner's copy and may hold their edits.
    A notebook new in `source` (a newer wheel) is added. Returns (copied, kept) names."""
    dest.mkdir(parents=True, exist_ok=True)
    copied, kept = [], []
    for nb in sorted(source.glob("*.ipynb")):
        target = dest / nb.name
        if target.exists():
            kept.append(nb.name)
            continue
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(nb, tmp)
        tmp.replace(target)  # never a half-written notebook, even when interrupted
        copied.append(nb.name)
    return copied, kept


def jupyter_lab_argv(
    notebooks: Path, as_root: bool | None = None, extra: tuple[str, ...] = ()
) -> list[str]:
    """JupyterLab on `notebooks`, from this interpreter (no PATH lookup, so the venv's own
    JupyterLab runs on every OS). Root needs --allow-root: containers and CI machines are."""
    if as_root is None:
        as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    argv = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={notebooks}", *extra]
    return [*argv, "--allow-root"] if as_root else argv


def run_lab(
    dry_run: bool = False,
    build: bool = False,
    log: Callable[[str], None] = print,
    notebooks: Path | None = None,
    source: Path = NOTEBOOKS_SOURCE,
    extra: tuple[str, ...] = (),
) -> int:
    """What `make lab` does after installing: the setup (without the guest build unless
    `build`: notebook 01 does it, live), then JupyterLab until it exits. A failed setup step
    stops here, as it stops make, with the step's message above.

    When `notebooks` is not where the course is kept (`source`: always so for an installed
    wheel), the notebooks are first copied there (`copy_notebooks`)."""
    notebooks = Path(notebooks) if notebooks else default_notebook_dir()
    argv = jupyter_lab_argv(notebooks, extra=extra)
    if not source.is_dir():
        log(
            f"wasi-lab lab: no notebooks at {source}: reinstall wasi-lab, or run it from a checkout"
        )
        return 1
    copy = notebooks.resolve() != source.resolve()
    if dry_run:
        if copy:
            log(f"copy the notebooks missing in {notebooks} from {source}")
        log(
            "setup: "
            + ("toolchain, " + ("guest, " if build else "") if CHECKOUT else "")
            + "models, images"
            + ("" if build or not CHECKOUT else " (notebook 01 builds the guest)")
        )
        log(" ".join(argv))
        return 0
    if copy:
        try:
            copied, kept = copy_notebooks(source, notebooks)
        except OSError as exc:
            log(f"wasi-lab lab: cannot copy the notebooks to {notebooks}: {exc}")
            return 1
        log(
            f"[lab] notebooks in {notebooks}: {len(copied)} copied"
            + (f", {len(kept)} kept as they are (yours)" if kept else "")
        )
    if run_setup(log, build=build) != 0:
        log("wasi-lab lab: setup failed (see above); not starting JupyterLab")
        return 1
    try:
        return subprocess.run(argv).returncode
    except KeyboardInterrupt:  # Ctrl-C reached JupyterLab too; it shuts itself down
        return 130


def add_lab_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lab",
        help="set up, then start JupyterLab on the notebooks "
        "(what `make lab` does after installing)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument(
        "--build",
        action="store_true",
        help="also build the guest first (otherwise notebook 01 builds it)",
    )
    p.add_argument(
        "--notebook-dir",
        type=Path,
        default=None,
        help="working folder for the notebooks (default: the checkout's notebooks/, "
        "or for an installed kit notebooks/ in its data directory); missing "
        "notebooks are copied in, existing ones are never overwritten",
    )
    p.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open a browser (remote machines: open the printed URL)",
    )
    p.add_argument("--port", type=int, default=None, help="JupyterLab's port (default 8888)")
    p.set_defaults(
        func=lambda args: run_lab(
            dry_run=args.dry_run,
            build=args.build,
            notebooks=args.notebook_dir,
            extra=(
                *(["--no-browser"] if args.no_browser else []),
                *([f"--port={args.port}"] if args.port is not None else []),
            ),
        )
    )
    return p
