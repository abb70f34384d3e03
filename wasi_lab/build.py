"""Build the guest with cargo, live, and find the module the kit should run.

The kit always works without Rust: `guest/prebuilt/` holds the release module built from
the sources in `guest/src`. A build writes to `guest/target/`; `--update-prebuilt` copies
the result over the prebuilt one (and is how the prebuilt module is refreshed).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

# The prebuilt module's location lives in `paths` (and `default_module`, which callers
# import from there); the names below are what a build writes, so they are named here too.
from wasi_lab.paths import (
    CHECKOUT,
    CLI_NAME,
    GUEST_DIR,
    LIB_NAME,
    PREBUILT_COMMAND,
    PREBUILT_DIR,
    PREBUILT_MODULE,
)
from wasi_lab.postlink import fold_file
from wasi_lab.relaxed import FuseReport, fuse_file
from wasi_lab.toolchain import Toolchain, find_toolchain

__all__ = [
    "CLI_NAME",
    "FMA_FEATURE",
    "GUEST_DIR",
    "LIB_NAME",
    "PREBUILT_COMMAND",
    "PREBUILT_DIR",
    "PREBUILT_MODULE",
    "SIMD_FLAGS",
    "BuildError",
    "BuildResult",
    "build_guest",
    "built_module",
    "run_guest_unit_tests",
    "variant_name",
]
#: Wasm SIMD128: 4 f32 lanes per instruction for the engine's kernels.
SIMD_FLAGS = "-C target-feature=+simd128"
#: The cargo feature whose multiply-add marker calls become `f32x4.relaxed_madd` after
#: linking (see `wasi_lab.relaxed`).
FMA_FEATURE = "relaxed-fma"


class BuildError(RuntimeError):
    """cargo failed; the message carries the tail of its output."""


@dataclass
class BuildResult:
    module: Path
    command: Path | None
    seconds: float
    toolchain: Toolchain
    profile: str
    features: tuple[str, ...]
    compiled: list[str]
    #: Address adds folded into load offsets in the library module (`wasi_lab.postlink`).
    #: Counted on every build: even when cargo compiles nothing it may copy the unfolded
    #: artifact back into place, and the pass folds it again.
    folded: int = 0
    #: What the relaxed-SIMD rewrite did to the library module (`relaxed-fma` builds only).
    fused: FuseReport | None = None

    @property
    def up_to_date(self) -> bool:
        """cargo had nothing to compile: the module already matched the sources."""
        return not self.compiled

    @property
    def size(self) -> int:
        return self.module.stat().st_size


def variant_name(release: bool, features: Sequence[str]) -> str:
    """A target directory per flag set, so switching variants never rebuilds everything."""
    parts = ["release" if release else "debug", *sorted(features)]
    return "-".join(parts)


def _cargo_env(tc: Toolchain, target_dir: Path) -> dict[str, str]:
    """cargo's environment for one target directory, with a fresh lock file: rustup
    toolchains must not pick up the Debian registry's Cargo.lock and vice versa."""
    env = tc.env()
    env["CARGO_TARGET_DIR"] = str(target_dir)
    env["CARGO_TERM_COLOR"] = "never"
    lock = GUEST_DIR / "Cargo.lock"
    if lock.exists():
        lock.unlink()
    return env


def build_guest(
    release: bool = True,
    features: Sequence[str] = (),
    toolchain: Toolchain | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
    update_prebuilt: bool = False,
) -> BuildResult:
    """Run `cargo build` for the wasm target and return where the modules landed.

    `echo` receives cargo's output line by line (the notebook shows it live); a tqdm bar
    counts crates compiled.
    """
    features = tuple(features)
    if FMA_FEATURE in features and "scalar" in features:
        raise BuildError(
            f"`{FMA_FEATURE}` rewrites SIMD multiply-adds; the `scalar` build "
            "has none: choose one of the two"
        )
    if CHECKOUT is None:  # an installed wheel: its guest sources are a read-only copy
        raise BuildError(
            "building the guest needs a checkout of wasi-lab (this is an "
            f"installed kit; it runs its packaged {PREBUILT_MODULE})"
        )
    tc = toolchain or find_toolchain()
    target_dir = GUEST_DIR / "target" / variant_name(release, features)
    cmd = [
        str(tc.cargo),
        "build",
        "--target",
        tc.target,
        *tc.cargo_config_args(),
        "--manifest-path",
        str(GUEST_DIR / "Cargo.toml"),
    ]
    if release:
        cmd.append("--release")
    if features:
        cmd += ["--features", ",".join(features)]
    env = _cargo_env(tc, target_dir)
    if "scalar" not in features:
        env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " " + SIMD_FLAGS).strip()
    start = time.perf_counter()
    lines: list[str] = []
    compiled: list[str] = []
    bar = tqdm(desc="cargo build", unit=" crate", disable=not progress, leave=False)
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=GUEST_DIR
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            if echo:
                echo(line)
            if line.lstrip().startswith("Compiling"):
                compiled.append(line.split()[1])
                bar.update(1)
                bar.set_postfix_str(line.split()[1], refresh=False)
    bar.close()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join(lines[-40:])
        raise BuildError(f"cargo build failed (exit {proc.returncode}):\n{tail}")
    out = target_dir / tc.target / ("release" if release else "debug")
    module = out / LIB_NAME
    command = out / CLI_NAME
    folded = fold_file(module)
    if command.exists():
        fold_file(command)
    fused = None
    if FMA_FEATURE in features:
        fused = fuse_file(module)
        if command.exists():
            fuse_file(command)
    result = BuildResult(
        module=module,
        command=command if command.exists() else None,
        seconds=seconds,
        toolchain=tc,
        profile="release" if release else "debug",
        features=features,
        compiled=compiled,
        folded=folded,
        fused=fused,
    )
    if update_prebuilt:
        if not release or features:
            raise BuildError("only the default release build may replace guest/prebuilt")
        PREBUILT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module, PREBUILT_MODULE)
        if result.command:
            shutil.copyfile(result.command, PREBUILT_COMMAND)
    return result


def run_guest_unit_tests(
    toolchain: Toolchain | None = None, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    """`cargo test --lib` for the host: the engine's own unit tests (protobuf reader, graph
    planner, kernels with their row, column and border tails against the plain loops).

    They run natively, where the 4-lane type is emulated with arrays (`lanes.rs`), so they
    check the blocking and tail logic the SIMD build shares; the wasm build itself is tested
    from Python against the NumPy reference.
    """
    tc = toolchain or find_toolchain()
    env = _cargo_env(tc, GUEST_DIR / "target" / "host-tests")
    cmd = [
        str(tc.cargo),
        "test",
        "--lib",
        *tc.cargo_config_args(),
        "--manifest-path",
        str(GUEST_DIR / "Cargo.toml"),
    ]
    return subprocess.run(
        cmd, env=env, cwd=GUEST_DIR, capture_output=True, text=True, timeout=timeout
    )


def built_module(release: bool = True, features: Sequence[str] = ()) -> Path | None:
    """The module a previous build left in guest/target, if any."""
    base = GUEST_DIR / "target" / variant_name(release, features)
    for target in ("wasm32-wasip1", "wasm32-wasi"):
        p = base / target / ("release" if release else "debug") / LIB_NAME
        if p.exists():
            return p
    return None
