"""Notebook 03's out-of-bounds lab: what a bad pointer or length really does, shown for real.

Three small pieces, none of which needs a guest rebuild:

* ``oob/one_page.wat`` — one 64 KiB page and a load: a read past the end of memory traps
  (``wasmtime.Trap``, "out of bounds memory access"). That is the sandbox: the host is safe.
* ``oob/trusting_abi.wat`` — the article's ABI written by hand *without* checks: a bump
  ``alloc`` and an ``infer_from_ptrs`` that believes its lengths and reads every byte it is
  told about (it returns their Adler-32, so the host can prove which bytes it read). The
  article's Node bug against it reads the neighbouring block silently when the range stays
  inside memory and traps when it runs past the end.
* ``oob/detach_on_grow.mjs`` — the JavaScript pitfall of a ``memory.buffer`` view made
  before ``memory.grow`` (run under Node when it is installed).

The WAT sources are files, shown in the notebook with `listing`, never pasted copies.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import zlib
from pathlib import Path

import wasmtime

from wasi_lab.listings import Listing

OOB_DIR = Path(__file__).resolve().parent / "oob"
_LANG = {".wat": "wat", ".mjs": "javascript"}


def source(name: str) -> str:
    """The text of one of the lab's files (``one_page.wat``, ``trusting_abi.wat`` ...)."""
    path = OOB_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"no lab file {name!r} in {OOB_DIR.name}/: one of "
            f"{', '.join(sorted(p.name for p in OOB_DIR.iterdir()))}"
        )
    return path.read_text()


def listing(name: str) -> Listing:
    """A lab file as a listing (read from the file when the cell runs)."""
    path = OOB_DIR / name
    return Listing(
        f"wasi_lab/oob/{name}", source(name).rstrip(), _LANG.get(path.suffix, "text"), path, 1
    )


def wasm(name: str) -> bytes:
    """A WAT file of the lab assembled to a binary module (``wasmtime.wat2wasm``)."""
    return wasmtime.wat2wasm(source(name))


def module(engine: wasmtime.Engine, name: str) -> wasmtime.Module:
    """A WAT file of the lab compiled for `engine`."""
    return wasmtime.Module(engine, wasm(name))


def trap_message(exc: BaseException) -> str:
    """What a trap says, without its backtrace: wasmtime puts the reason under "Caused by"
    ("memory fault at wasm address 0x10000 ...", "wasm trap: out of bounds memory access")."""
    text = str(exc).strip()
    causes = [
        re.sub(r"^\d+:\s*", "", line.strip())
        for line in text.splitlines()
        if "wasm trap:" in line or "memory fault" in line
    ]
    if causes:
        return "; ".join(reversed(causes))
    return text.splitlines()[0] if text else type(exc).__name__


def place(store: wasmtime.Store, exports, data: bytes) -> int:
    """``alloc(len(data))`` and ``Memory.write``: notebook 03's ``write_guest_memory``,
    packaged for the WAT modules (which export ``alloc`` and ``memory`` like the guest)."""
    ptr = exports["alloc"](store, len(data))
    if ptr == 0:
        raise MemoryError(f"alloc({len(data):,}) returned 0: memory could not grow")
    exports["memory"].write(store, data, ptr)
    return ptr


def adler32(data: bytes) -> int:
    """The checksum the trusting ``infer_from_ptrs`` returns, computed by zlib on the host."""
    return zlib.adler32(data)


def moving_engine() -> wasmtime.Engine:
    """An engine whose memories are *not* reserved up front, so ``memory.grow`` may move
    them to a new address (as on 32-bit hosts or with a small reservation). The default
    engine reserves address space on 64-bit hosts and grows in place."""
    cfg = wasmtime.Config()
    cfg.memory_reservation = 0
    cfg.memory_reservation_for_growth = 0
    cfg.memory_may_move = True
    return wasmtime.Engine(cfg)


def run_detach_on_grow(node: Path | str | None = None, timeout: float = 30) -> dict:
    """Run ``detach_on_grow.mjs`` under Node against the trusting module; its JSON facts.

    Raises `wasi_lab.hosts.NodeNotFoundError` without a Node 20+ (the notebook then says
    so in one line and moves on).
    """
    from wasi_lab.hosts import NodeNotFoundError, find_node

    node = Path(node) if node else find_node()
    with tempfile.TemporaryDirectory(prefix="wasi-lab-oob-") as tmp:
        wasm_path = Path(tmp) / "trusting_abi.wasm"
        wasm_path.write_bytes(wasm("trusting_abi.wat"))
        try:
            out = subprocess.run(
                [str(node), str(OOB_DIR / "detach_on_grow.mjs"), str(wasm_path)],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except OSError as exc:
            raise NodeNotFoundError(f"{node} does not run: {exc}") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"detach_on_grow.mjs did not finish in {timeout:.0f} s") from None
    if out.returncode != 0:
        raise RuntimeError(
            f"detach_on_grow.mjs failed ({out.returncode}): {out.stderr.strip()[-600:]}"
        )
    return json.loads(out.stdout.strip().splitlines()[-1])
