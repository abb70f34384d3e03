"""Find a Rust toolchain that can build the guest, and say why it was chosen.

The first `rustc` on PATH is often a rustup toolchain without the wasm target, while a
Debian `rustc` in /usr/bin has it (package libstd-rust-dev-wasm32). So we never trust PATH
order: we look at every candidate's sysroot for the wasm std and pick the first that has it,
rustup toolchains before /usr/bin.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

#: Wasm targets in order of preference: the current name, then the pre-1.78 name.
WASM_TARGETS = ("wasm32-wasip1", "wasm32-wasi")
#: Where Debian's librust-*-dev packages put crate sources.
DEBIAN_REGISTRY = Path("/usr/share/cargo/registry")
#: Debian packages that give a toolchain able to build the guest offline.
APT_PACKAGES = ("rustc", "cargo", "libstd-rust-dev-wasm32", "librust-image-dev")
RUSTUP_HINT = "rustup target add wasm32-wasip1"


@dataclass
class Candidate:
    """One rustc/cargo pair we looked at, with what we found."""

    rustc: Path
    cargo: Path | None
    origin: str
    version: str = ""
    sysroot: Path | None = None
    targets: list[str] = field(default_factory=list)

    @property
    def target(self) -> str | None:
        return next((t for t in WASM_TARGETS if t in self.targets), None)


@dataclass
class Toolchain:
    """The chosen pair, the wasm target it builds for, and the crate source to use."""

    rustc: Path
    cargo: Path
    version: str
    target: str
    origin: str
    reason: str
    use_debian_registry: bool
    candidates: list[Candidate]

    def cargo_config_args(self) -> list[str]:
        """`--config` flags that point cargo at Debian's registry, for this build only.

        A `.cargo/config.toml` in the repo would break the crates.io path for everyone else,
        so the replacement lives on the command line (cargo >= 1.63).
        """
        if not self.use_debian_registry:
            return []
        return [
            "--config",
            "source.crates-io.replace-with='debian'",
            "--config",
            f"source.debian.directory='{DEBIAN_REGISTRY}'",
            "--offline",
        ]

    def env(self) -> dict[str, str]:
        """Environment for cargo: call *this* rustc, not whatever rustup's proxy picks."""
        env = dict(os.environ)
        env["RUSTC"] = str(self.rustc)
        env["PATH"] = f"{self.rustc.parent}{os.pathsep}{env.get('PATH', '')}"
        env.pop("RUSTUP_TOOLCHAIN", None)
        return env


class ToolchainError(RuntimeError):
    """No toolchain can build the guest; the message says what to install."""


def _run(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _rustup_toolchain_dirs() -> list[Path]:
    home = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup"))
    tc = home / "toolchains"
    if not tc.is_dir():
        return []
    # stable first, then the rest in name order
    return sorted(
        (p for p in tc.iterdir() if (p / "bin" / "rustc").exists()),
        key=lambda p: (not p.name.startswith("stable"), p.name),
    )


def probe(rustc: Path, origin: str) -> Candidate:
    """Ask one rustc for its version and sysroot and list the wasm std it ships."""
    cargo = rustc.parent / "cargo"
    cand = Candidate(rustc=rustc, cargo=cargo if cargo.exists() else None, origin=origin)
    cand.version = _run([str(rustc), "--version"])
    sysroot = _run([str(rustc), "--print", "sysroot"])
    if sysroot:
        cand.sysroot = Path(sysroot)
        rustlib = cand.sysroot / "lib" / "rustlib"
        cand.targets = [t for t in WASM_TARGETS if (rustlib / t / "lib").is_dir()]
    return cand


def candidates() -> list[Candidate]:
    """Every rustc we can find: rustup toolchains, PATH entries, then Debian's /usr/bin."""
    seen: set[Path] = set()
    found: list[Candidate] = []

    def add(path: Path | None, origin: str) -> None:
        if path is None or not path.exists():
            return
        real = path.resolve()
        if real in seen or real.name == "rustup":  # a rustup proxy is not a toolchain
            return
        seen.add(real)
        found.append(probe(path, origin))

    for d in _rustup_toolchain_dirs():
        add(d / "bin" / "rustc", f"rustup toolchain {d.name}")
    on_path = shutil.which("rustc")
    if on_path and Path(on_path).resolve().name != "rustup":
        add(Path(on_path), "first rustc on PATH")
    add(Path("/usr/bin/rustc"), "Debian (/usr/bin)")
    return found


def crates_io_reachable(timeout: float = 3.0) -> bool:
    """Can cargo fetch from crates.io? (DNS + TCP to the sparse index; no request sent.)"""
    try:
        with socket.create_connection(("index.crates.io", 443), timeout=timeout):
            return True
    except OSError:
        return False


def find_toolchain(check_network: bool = True) -> Toolchain:
    """Choose the first candidate that has a wasm std and a cargo next to it."""
    cands = candidates()
    for cand in cands:
        if cand.target is None or cand.cargo is None:
            continue
        debian = cand.rustc.resolve().parent == Path("/usr/bin")
        if debian:
            use_debian = DEBIAN_REGISTRY.is_dir()
            why_src = "Debian's crate registry (matches Debian's rustc)"
        elif check_network and crates_io_reachable():
            use_debian = False
            why_src = "crates.io"
        else:
            use_debian = DEBIAN_REGISTRY.is_dir()
            why_src = (
                "Debian's crate registry (crates.io unreachable)"
                if use_debian
                else "crates.io (unreachable; the build will fail unless crates are cached)"
            )
        skipped = [c for c in cands if c is not cand and c.target is None]
        why = f"{cand.origin} has the {cand.target} std in {cand.sysroot}"
        if skipped:
            why += "; skipped " + ", ".join(
                f"{c.origin} ({c.version or '?'}: no wasm target)" for c in skipped
            )
        return Toolchain(
            rustc=cand.rustc,
            cargo=cand.cargo,
            version=cand.version,
            target=cand.target,
            origin=cand.origin,
            reason=f"{why}; crates from {why_src}",
            use_debian_registry=use_debian,
            candidates=cands,
        )
    raise ToolchainError(missing_toolchain_advice(cands))


def apt_usable() -> bool:
    """Set-up may install Debian's toolchain itself only as root on a Debian/Ubuntu system."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def debian_like(os_release: Path = Path("/etc/os-release")) -> bool:
    """Is this Debian, Ubuntu or a derivative (``ID``/``ID_LIKE`` in os-release)?"""
    try:
        text = os_release.read_text(errors="replace")
    except OSError:
        return False
    ids: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("ID", "ID_LIKE"):
            ids.update(value.strip().strip("\"'").lower().split())
    return bool(ids & {"debian", "ubuntu"})


def missing_toolchain_advice(
    cands: list[Candidate] | None = None,
    *,
    rustup: bool | None = None,
    debian: bool | None = None,
    root: bool | None = None,
) -> str:
    """What to do without a wasm-capable toolchain, for *this* machine.

    A learner without rustup is not told to run rustup; apt-get is offered on Debian/Ubuntu
    only, with ``sudo`` when we are not root. The keyword arguments override what is
    detected (for tests and for explaining another machine).
    """
    cands = candidates() if cands is None else cands
    rustup = shutil.which("rustup") is not None if rustup is None else rustup
    debian = (debian_like() and shutil.which("apt-get") is not None) if debian is None else debian
    root = os.geteuid() == 0 if root is None else root
    seen = "; ".join(f"{c.origin}: {c.version or 'unknown'}" for c in cands) or "no rustc found"
    lines = [
        f"No Rust toolchain with a wasm32-wasip1/wasm32-wasi std was found ({seen}).",
        "The kit uses the prebuilt guest in guest/prebuilt/: every notebook works "
        "without Rust. To rebuild the guest yourself:",
    ]
    if rustup:
        lines.append(f"  {RUSTUP_HINT}")
    else:
        lines.append(f"  install Rust from https://rustup.rs, then run `{RUSTUP_HINT}`")
    if debian:
        sudo = "" if root else "sudo "
        lines.append(
            f"  or, offline-friendly on Debian/Ubuntu: "
            f"{sudo}apt-get install {' '.join(APT_PACKAGES)}"
        )
    lines.append("then run `wasi-lab build`.")
    return "\n".join(lines)


def install_with_apt() -> bool:
    """Install Debian's toolchain (root only). Returns True when it succeeded."""
    if not apt_usable():
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *APT_PACKAGES]):
        if subprocess.run(cmd, env=env).returncode != 0:
            return False
    return True
