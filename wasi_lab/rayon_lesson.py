"""The rayon lesson, in one place: why the article's guest panicked, replayed on this one.

wasm32-wasi has no threads, so rayon-core cannot start its global pool. The guest's
`rayon-demo` feature adds two exports that show it without the `image` crate in the way:
`rayon_demo_build_pool` gets rayon's `ThreadPoolBuildError` back as a value, and
`rayon_demo_global` panics as the article's guest did (a panic in this `panic = "abort"`
module is a wasm trap). Notebook 01 builds the feature and reads both answers
(`rayon_demo_outcome`, `format_rayon`); the article table of notebook 05 compares the panic
with the article's (`rayon_panic`, `panic_note`); `buildrecord` records the outcome with
each build.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from wasi_lab.paths import REPO_ROOT

#: The guest's cargo feature that adds rayon and the two demo exports.
RAYON_FEATURE = "rayon-demo"
#: The panic the article quotes (wasmtime run tf-example.wasm --dir=.), its line breaks as
#: spaces and nothing else changed (the article closes with `})}`, no space).
ARTICLE_PANIC = (
    "The global thread pool has not been initialized.: ThreadPoolBuildError { "
    'kind: IOError(Custom { error: "operation not supported on this platform" })}'
)


def _shown(module: Path | str) -> str:
    """The module's path as the repository names it (just its name outside the checkout)."""
    try:
        return str(Path(module).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return Path(module).name


def rayon_demo_outcome(module: Path | str) -> dict:
    """Call the rayon-demo guest's two exports with plain wasmtime-py; say what happened.

    `rayon_demo_build_pool` reports its failure the checked way (a negative code, the message
    through `last_error`); `rayon_demo_global` panics inside rayon-core, and a panic in this
    `panic = "abort"` module is a wasm trap. The panic message goes to the guest's stderr,
    which we point at a file.
    """
    import wasmtime

    from wasi_lab.runtime import ERROR_CLASSES, get_engine, instantiate_with_wasi

    engine = get_engine()
    with tempfile.TemporaryDirectory(prefix="wasi-lab-rayon-") as tmp:
        err = Path(tmp) / "stderr"
        wasi = wasmtime.WasiConfig()
        wasi.stderr_file = str(err)
        store, instance = instantiate_with_wasi(
            engine, wasmtime.Module.from_file(engine, str(module)), wasi
        )
        ex = instance.exports(store)
        code = ex["rayon_demo_build_pool"](store)
        buf = ex["alloc"](store, 1024)
        n = ex["last_error"](store, buf, 1024)
        pool_error = ex["memory"].read(store, buf, buf + min(max(n, 0), 1024)).decode()
        trap = ""
        try:
            ex["rayon_demo_global"](store)
        except wasmtime.Trap as exc:
            trap = str(exc)
        stderr = err.read_text(encoding="utf-8", errors="replace")
    cls = ERROR_CLASSES.get(code)
    return {
        "module": _shown(module),
        "pool_code": code,
        "pool_code_name": cls.__name__.removesuffix("Error") if cls else None,
        "pool_error": pool_error,
        "trapped": bool(trap),
        # the last line is the cause: "wasm trap: wasm `unreachable` instruction executed"
        "trap": re.sub(r"^\d+:\s*", "", trap.strip().splitlines()[-1].strip()) if trap else "",
        "panic_message": panic_text(stderr),
        "rayon_frames": [line.strip() for line in trap.splitlines() if "rayon" in line],
    }


def panic_text(stderr: str) -> str:
    """The payload of Rust's panic line: `panicked at '...'` (old) or on its own line (new)."""
    m = re.search(r"panicked at '(.*)', ", stderr, re.S)
    if m:
        return m.group(1)
    m = re.search(r"panicked at [^\n]*:\n(.*)", stderr)
    return m.group(1).strip() if m else stderr.strip()


def format_rayon(demo: dict) -> str:
    """The rayon-demo guest's two answers, as `rayon_demo_outcome` recorded them."""
    if not demo:
        return "(no rayon-demo run in this record)"
    name = f" (the guest's {demo['pool_code_name']} code)" if demo.get("pool_code_name") else ""
    lines = [
        f"rayon_demo_build_pool() returned {demo['pool_code']}{name}",
        f"    last_error: {demo['pool_error']}",
    ]
    if demo.get("trapped"):
        lines += [
            "rayon_demo_global() raised wasmtime.Trap: " + demo["trap"],
            f"    the guest's stderr: {demo['panic_message']}",
        ]
        if demo.get("rayon_frames"):
            lines.append("    rayon frames in the wasm backtrace:")
            lines += [f"      {f}" for f in demo["rayon_frames"]]
    else:
        lines.append("rayon_demo_global() returned without a trap")
    return "\n".join(lines)


def rayon_panic(build: bool | None = None) -> tuple[str | None, str]:
    """(the guest's panic message, how it was obtained) or (None, why not).

    Builds the guest with `--features rayon-demo`, calls `rayon_demo_global` under
    wasmtime-py and reads the panic from the guest's stderr. `build=None` builds only when
    no rayon-demo build exists yet (the panic does not depend on the rest of the guest, so
    an older build shows the same thing); True always runs cargo; False never does.
    """
    from wasi_lab.build import BuildError, build_guest, built_module
    from wasi_lab.paths import GUEST_DIR
    from wasi_lab.toolchain import ToolchainError

    if not (GUEST_DIR / "src" / "rayon_demo.rs").is_file():
        return None, "guest/src/rayon_demo.rs is not in this checkout"
    module = built_module(True, (RAYON_FEATURE,))
    if build or (build is None and module is None):
        try:
            module = build_guest(release=True, features=(RAYON_FEATURE,), progress=False).module
        except ToolchainError as exc:
            if module is None:
                return None, f"no Rust toolchain for wasm32-wasi: {exc}"
        except BuildError as exc:
            if module is None:
                return None, f"the rayon-demo build failed: {str(exc).splitlines()[0]}"
    if module is None:
        return None, "no rayon-demo build: run `wasi-lab build --features rayon-demo`"
    try:
        outcome = rayon_demo_outcome(module)
    except KeyError as exc:  # wasmtime's exports raise KeyError for a missing name
        return None, f"{module} has no {exc.args[0]} export"
    if not outcome["trapped"]:
        return None, "rayon_demo_global returned instead of panicking"
    message = outcome["panic_message"].strip()
    return message, (
        f"`wasi-lab build --features rayon-demo`, then rayon_demo_global() "
        f"under wasmtime-py; the panic from the guest's stderr "
        f"({_shown(module)})"
    )


def panic_note(message: str) -> str:
    """How this guest's rayon panic compares with the article's, read from the message."""
    note = "same cause: rayon-core cannot start its global pool on wasm32-wasi"
    if "operation not supported on this platform" in message:
        return note + "; the same io error text as the article's"
    if "Unsupported" in message:
        return note + "; this Rust spells the io error `kind: Unsupported`"
    return note
