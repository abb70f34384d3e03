"""The preflight: one call a learner runs on arrival, one ✓/✗ line per thing the course needs.

``wasi-lab doctor`` answers "what did the kit find?" for someone fixing a machine; the
preflight answers "can I start?" for someone sitting in the room. It reuses the doctor's
findings (`wasi_lab.doctor.diagnose`: toolchain, module path, Node, models, images) and adds
the checks only a running kernel can make: the module really instantiates, widgets import
with a matching front-end, memory is free, a loopback port accepts connections.

Each line starts with ``✓`` (fine), ``✗`` (the course will stop here; the fix follows on the
same line) or ``–`` (optional and absent: the notebooks that need it say so and move on).
A preflight never raises: a broken piece is a ✗ line, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wasi_lab.exercises import FAIL, PASS

OPTIONAL = "–"
#: pyproject.toml's requires-python.
MIN_PYTHON = (3, 11)
#: The Node host (`hosts/node/classify.mjs`) needs `node:wasi` with version "preview1".
MIN_NODE = 20
#: Free memory the course wants: a kernel that has classified an image peaks at about
#: 250 MiB (max RSS measured on the project's 2-core machine), JupyterLab itself and notebook
#: 06's server with its 2 guests add a few hundred more.
MIN_FREE_BYTES = 1 << 30
#: ipywidgets 8 renders in JupyterLab through jupyterlab_widgets 3.
WIDGET_FRONTEND = {8: 3, 7: 1}
MODEL = "efficientnet-lite0"


@dataclass(frozen=True)
class Check:
    """One preflight line: what was checked, what was found, and the fix when it failed."""

    name: str
    mark: str  # PASS, FAIL or OPTIONAL
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.mark != FAIL

    def line(self) -> str:
        if self.mark == FAIL:
            return f"{FAIL} {self.name}: {self.detail} → fix: {self.fix}"
        if self.mark == OPTIONAL:
            return f"{OPTIONAL} {self.name}: optional, not found: {self.detail}"
        return f"{PASS} {self.name}: {self.detail}"


def _guarded(name: str, fn: Callable[[], Check], fix: str) -> Check:
    """Run one check; whatever it raises becomes a ✗ line with a fix, never a traceback."""
    try:
        return fn()
    except Exception as exc:  # the point of a preflight is to report, not to crash
        return Check(name, FAIL, f"the check itself failed ({type(exc).__name__}: {exc})", fix)


def check_python() -> Check:
    v = sys.version_info
    found = f"Python {v.major}.{v.minor}.{v.micro} ({sys.executable})"
    if (v.major, v.minor) >= MIN_PYTHON:
        return Check("python", PASS, found)
    want = ".".join(map(str, MIN_PYTHON))
    return Check(
        "python",
        FAIL,
        f"{found} is older than {want}",
        f"install Python {want} or newer, then `make setup` (it builds .venv with it)",
    )


def check_widgets(shown: bool = False) -> Check:
    """ipywidgets and its JupyterLab front-end import at matching versions.

    Importable is not the same as rendering (that happens in the browser), so the notebook
    displays a slider just above this line: ``shown`` says it did.
    """
    fix = (
        "`pip install ipywidgets jupyterlab_widgets` in the kernel's environment "
        "(`make setup` does), then restart JupyterLab and reload the page"
    )
    try:
        import ipywidgets
    except ImportError as exc:
        return Check("widgets", FAIL, f"ipywidgets does not import ({exc})", fix)
    major = int(ipywidgets.__version__.split(".")[0])
    try:
        import jupyterlab_widgets

        front = jupyterlab_widgets.__version__
    except ImportError:
        front = None
    want = WIDGET_FRONTEND.get(major)
    if front is None or (want is not None and int(front.split(".")[0]) != want):
        found = "absent" if front is None else front
        return Check(
            "widgets",
            FAIL,
            f"ipywidgets {ipywidgets.__version__} but the JupyterLab "
            f"front-end jupyterlab_widgets is {found} (want {want}.x)",
            fix,
        )
    try:
        import anywidget

        extra = f", anywidget {anywidget.__version__}"
    except ImportError:
        extra = ""
    return Check(
        "widgets",
        PASS,
        f"ipywidgets {ipywidgets.__version__} with jupyterlab_widgets "
        f"{front}{extra}"
        + (
            " — if you see a slider above, widgets render"
            if shown
            else " (rendering is checked in notebooks/00_preflight)"
        ),
    )


def _module_origin(path: Path) -> str:
    from wasi_lab.build import PREBUILT_MODULE
    from wasi_lab.paths import GUEST_DIR

    if path.resolve() == PREBUILT_MODULE.resolve():
        return "prebuilt"
    if (GUEST_DIR / "target").resolve() in path.resolve().parents:
        return "built here"
    env = os.environ.get("WASI_LAB_MODULE")
    return "from WASI_LAB_MODULE" if env and Path(env).resolve() == path.resolve() else "given"


def _module_fix(path: Path) -> str:
    """The one-line fix for a missing or broken module, by where the path came from."""
    origin = _module_origin(path)
    if origin == "prebuilt":
        return (
            "`git checkout guest/prebuilt` restores the committed module; `make setup` rebuilds it"
        )
    if origin == "from WASI_LAB_MODULE":
        return "unset WASI_LAB_MODULE, or point it at the .wasm `wasi-lab build` printed"
    return "use the .wasm `wasi-lab build` printed, or leave the path out for the prebuilt one"


def check_module(path: Path) -> Check:
    """The guest exists and instantiates (a real wasmtime Store, WASI and all)."""
    fix = _module_fix(path)
    if not path.is_file():
        return Check("guest module", FAIL, f"{path} does not exist", fix)
    with path.open("rb") as f:
        if f.read(4) != b"\0asm":
            return Check(
                "guest module",
                FAIL,
                f"{path} is not a WebAssembly module (it does not start with the bytes \\0asm)",
                fix,
            )
    from wasi_lab.runtime import Guest

    try:
        guest = Guest(path)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check(
            "guest module",
            FAIL,
            f"{path.name} ({_module_origin(path)}) does not instantiate: {first}",
            fix,
        )
    pages = guest.memory.size(guest.store)
    return Check(
        "guest module",
        PASS,
        f"{path.name} ({_module_origin(path)}, "
        f"{path.stat().st_size:,} bytes) instantiates: {pages} pages of memory, "
        f"{guest.instantiate_ms:.1f} ms",
    )


def check_model(models: list[dict]) -> Check:
    row = next((m for m in models if m.get("name") == MODEL), None)
    fix = "`wasi-lab models prepare` (offline; or `make setup`)"
    if row is None:
        return Check("model", FAIL, f"{MODEL} is not registered", fix)
    if not row.get("present"):
        return Check("model", FAIL, f"{MODEL} is absent ({row.get('path')})", fix)
    return Check("model", PASS, f"{MODEL} present ({row['size']:,} bytes)")


def check_images(count: int) -> Check:
    if count:
        return Check("images", PASS, f"{count} sample images in images/")
    return Check(
        "images", FAIL, "no sample images in images/", "`wasi-lab images prepare` (or `make setup`)"
    )


def check_node(version: str | None) -> Check:
    why = "notebook 05 skips the Node host; to run it, install Node.js 20 or newer"
    if not version:
        return Check("node", OPTIONAL, f"`node` is not on PATH ({why})")
    m = re.match(r"v?(\d+)", version)
    if not m or int(m.group(1)) < MIN_NODE:
        return Check("node", OPTIONAL, f"Node {version} is older than {MIN_NODE} ({why})")
    return Check("node", PASS, f"Node {version}")


def available_memory() -> int | None:
    """Bytes the OS could give us now (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(free: int | None = None) -> Check:
    free = available_memory() if free is None else free
    if free is None:
        return Check("memory", PASS, "free memory unknown on this OS (need about 1 GiB)")
    found = f"{free / 2**30:.1f} GiB available"
    if free >= MIN_FREE_BYTES:
        return Check("memory", PASS, found)
    return Check(
        "memory",
        FAIL,
        f"{found}, the course wants {MIN_FREE_BYTES / 2**30:.0f} GiB",
        "shut down other notebooks' kernels (Kernel → Shut Down Kernel) and other "
        "programs; on a hub, ask for a larger server",
    )


def check_port(host: str = "127.0.0.1") -> Check:
    """A free port on loopback that really accepts a connection (notebook 06 needs one)."""
    fix = "loopback is blocked or out of ports: close other servers; on a hub, ask the admin"
    with socket.socket() as server:
        try:
            server.bind((host, 0))
            server.listen(1)
            port = server.getsockname()[1]
            with socket.create_connection((host, port), timeout=5):
                conn, _ = server.accept()
                conn.close()
        except OSError as exc:
            return Check("port", FAIL, f"no free port on {host} ({exc})", fix)
    return Check("port", PASS, f"{host}:{port} is free and accepts connections")


def check_rust(toolchain: dict | None) -> Check:
    if toolchain is None:
        from wasi_lab.toolchain import RUSTUP_HINT

        return Check(
            "rust",
            OPTIONAL,
            "no toolchain with the wasm target (notebook 01 shows "
            f"stored build results; to build live: `{RUSTUP_HINT}`)",
        )
    return Check("rust", PASS, f"{toolchain['version']} for {toolchain['target']}")


def run_checks(module: Path | str | None = None, widget_shown: bool = False) -> list[Check]:
    """Every preflight check, in the order a learner meets them in the course."""
    from wasi_lab.doctor import diagnose

    rep = diagnose()
    path = Path(module) if module is not None else Path(rep.module)
    setup = "`make setup`"
    return [
        _guarded("python", check_python, setup),
        _guarded("widgets", lambda: check_widgets(widget_shown), setup),
        _guarded("guest module", lambda: check_module(path), "`make setup`"),
        _guarded("model", lambda: check_model(rep.models), "`wasi-lab models prepare`"),
        _guarded("images", lambda: check_images(rep.images), "`wasi-lab images prepare`"),
        _guarded("node", lambda: check_node(rep.node), "install Node.js 20+ (optional)"),
        _guarded("memory", check_memory, "free some memory"),
        _guarded("port", check_port, "check that 127.0.0.1 is usable"),
        _guarded("rust", lambda: check_rust(rep.toolchain), "`wasi-lab doctor` says more"),
    ]


def format_checks(checks: list[Check]) -> str:
    failed = sum(not c.ok for c in checks)
    summary = (
        "all set: open 01_compile_the_guest"
        if not failed
        else f"{failed} check{'s' * (failed > 1)} failed: apply the fix on each ✗ line, then "
        "run this again (`wasi-lab doctor` says more)"
    )
    return "\n".join([*(c.line() for c in checks), summary])


def preflight(module: Path | str | None = None, widget: bool = True) -> list[Check]:
    """The notebook's one call: show a slider (if widgets render, it appears), print the lines."""
    shown = False
    if widget:
        try:
            import ipywidgets
            from IPython.display import display

            display(ipywidgets.IntSlider(value=3, min=0, max=10, description="slider"))
            shown = True
        except Exception:  # the widgets line below says what is wrong
            pass
    checks = run_checks(module, widget_shown=shown)
    print(format_checks(checks))
    return checks


def _cmd_preflight(args: argparse.Namespace) -> int:
    checks = run_checks(args.module)
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1


def add_preflight_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``preflight`` to a CLI's sub-parsers (wired in by ``wasi_lab.cli``)."""
    p = subparsers.add_parser("preflight", help="can the course start here? one ✓/✗ line each")
    p.add_argument("--module", help="guest module to try (default: the kit's)")
    p.set_defaults(func=_cmd_preflight)
    return p
