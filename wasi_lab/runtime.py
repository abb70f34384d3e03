"""Run the guest under wasmtime: one engine per process, cheap instances, checked calls.

The article paid ~775 ms per request to instantiate the module. Here the expensive parts
happen once per process: the `Engine`, the compiled `Module` (and on disk, a serialized
`.cwasm` keyed by module hash and wasmtime version, so the next process skips Cranelift),
and an `InstancePre` that has resolved every WASI import. A `Guest` is then a `Store` plus
one instantiation of that pre-linked module: a few milliseconds.

Every guest entry point returns a negative code on failure and keeps a message for
`last_error`; `Guest.call` turns that into a Python exception. A trap (the guest hit
`unreachable`, ran out of its deadline ...) poisons the instance; `Guest.reset()` makes a
fresh one from the same pre-linked module.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import version as _dist_version
from pathlib import Path

import numpy as np
import wasmtime

from wasi_lab.paths import default_module

PAGE_SIZE = 65536
#: The wasmtime-py release: part of every cache key, shown by `wasi-lab doctor`.
WASMTIME_VERSION = _dist_version("wasmtime")


# --------------------------------------------------------------------------- errors


class GuestError(RuntimeError):
    """A guest entry point refused its input; `message` is the guest's own explanation."""

    code: int = 0

    def __init__(self, function: str, code: int, message: str):
        self.function = function
        self.code = code
        self.message = message
        # The guest's messages often name the entry point already ("dealloc: pointer ..."):
        # say it once.
        said = message if message.startswith(f"{function}: ") else f"{function}: {message}"
        super().__init__(f"{said} (guest error {code})")


class BadPointerError(GuestError):
    """The pointer is not a block the guest handed out."""


class LengthMismatchError(GuestError):
    """The length does not match the block (the article's Node bug)."""


class BadImageError(GuestError):
    """Not a JPEG/PNG the guest can decode."""


class ImageTooLargeError(GuestError):
    """The header announces more pixels than the guest accepts."""


class BadModelError(GuestError):
    """The model bytes are not a graph the engine can run."""


class BadHandleError(GuestError):
    """No model is loaded under that handle."""


class BadArgumentError(GuestError):
    """An argument is out of range."""


class GuestOutOfMemoryError(GuestError):
    """The guest's allocator failed (or the store's memory limit was hit)."""


class InferenceError(GuestError):
    """The graph failed while running."""


#: Mirrors `ErrorCode` in guest/src/abi.rs.
ERROR_CLASSES: dict[int, type[GuestError]] = {
    -1: BadPointerError,
    -2: LengthMismatchError,
    -3: BadImageError,
    -4: ImageTooLargeError,
    -5: BadModelError,
    -6: BadHandleError,
    -7: BadArgumentError,
    -8: GuestOutOfMemoryError,
    -9: InferenceError,
}


def trap_cause(detail: str, stderr: str = "") -> str:
    """The one line that says why a guest trapped.

    Rust prints the reason to stderr just before it aborts ("memory allocation of 268435456
    bytes failed", "panicked at ..."); wasmtime's own text starts with "error while
    executing at wasm backtrace:" and names the trap kind only at its end.
    """
    for line in reversed(stderr.strip().splitlines()):
        if line.strip():
            return line.strip()
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("wasm trap:") or "interrupt" in line.lower():
            return line
    return lines[0] if lines else ""


class GuestTrap(RuntimeError):
    """The guest trapped (or ran past its deadline). The instance is unusable until reset.

    `function` is the export that trapped, `cause` the one line that says why (the guest's
    last words on stderr, else wasmtime's trap kind), `detail` everything (stderr and the
    wasm backtrace).
    """

    def __init__(
        self, function: str, detail: str, deadline: bool = False, cause: str | None = None
    ):
        self.function = function
        self.detail = detail
        self.deadline = deadline
        self.cause = trap_cause(detail) if cause is None else cause
        what = "ran past its deadline" if deadline else "trapped"
        super().__init__(
            f"guest {what} in {function}: {self.cause}"
            if self.cause
            else f"guest {what} in {function}"
        )


class StderrTail:
    """The guest's stderr: passed on to this process's fd 2 (as `inherit_stderr` did, so a
    notebook's fd-level capture still sees it) and its last few KiB kept, so a trap can say
    what the guest printed before it aborted."""

    KEEP = 8192

    def __init__(self) -> None:
        self.tail = bytearray()
        self.written = 0

    def __call__(self, data: bytes) -> None:
        try:
            os.write(2, data)
        except OSError:
            pass
        self.tail += data
        del self.tail[: -self.KEEP]
        self.written += len(data)

    def since(self, mark: int) -> str:
        """What was written after `written` was `mark` (as much of it as is kept)."""
        n = min(self.written - mark, len(self.tail))
        return bytes(self.tail[len(self.tail) - n :]).decode("utf-8", "replace") if n else ""


# --------------------------------------------------------------------------- engine + module


_ENGINES: dict[bool, wasmtime.Engine] = {}
_MODULES: dict[tuple, CompiledModule] = {}
_LOCK = threading.Lock()


def engine_config(epochs: bool) -> wasmtime.Config:
    """One configuration, so serialized modules always match the engine that loads them.

    `epochs` turns on epoch interruption, which the server uses to enforce deadlines; it
    costs a check per loop back-edge, so plain notebooks and benchmarks leave it off.
    """
    cfg = wasmtime.Config()
    cfg.wasm_simd = True
    cfg.cranelift_opt_level = "speed"
    if epochs:
        cfg.epoch_interruption = True
    return cfg


def get_engine(epochs: bool = False) -> wasmtime.Engine:
    """The process-wide engine for this configuration."""
    with _LOCK:
        if epochs not in _ENGINES:
            _ENGINES[epochs] = wasmtime.Engine(engine_config(epochs))
        return _ENGINES[epochs]


def cache_dir_for(module_path: Path) -> Path:
    """Serialized modules live next to the module; elsewhere when that folder is read-only
    or is the installed package (pip would not remove a cache it did not install)."""
    from wasi_lab.paths import PACKAGE_DIR

    here = module_path.parent / "__wasmcache__"
    try:
        if not module_path.resolve().is_relative_to(PACKAGE_DIR):
            here.mkdir(exist_ok=True)
            if os.access(here, os.W_OK):
                return here
    except OSError:
        pass
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wasi-lab"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def cache_key(wasm: bytes, epochs: bool) -> str:
    """Module hash + wasmtime version + engine flags: any change gives a new file."""
    digest = hashlib.sha256(wasm).hexdigest()[:16]
    return f"{digest}-wasmtime{WASMTIME_VERSION}-{'epochs' if epochs else 'plain'}"


@dataclass
class CompiledModule:
    """A compiled module, pre-linked against WASI: instantiate it as often as you like."""

    path: Path
    engine: wasmtime.Engine
    module: wasmtime.Module
    instance_pre: wasmtime.InstancePre
    epochs: bool
    compile_ms: float
    from_cache: bool
    sha256: str

    @property
    def export_names(self) -> list[str]:
        return [e.name for e in self.module.exports]


def compile_module(
    path: Path | str | None = None, epochs: bool = False, use_cache: bool = True
) -> CompiledModule:
    """Compile (or load from the on-disk cache) and pre-link a module.

    With `use_cache=False` the module is compiled by Cranelift every time: the benchmark's
    "cold" column.
    """
    path = Path(path) if path else default_module()
    if not path.exists():
        raise FileNotFoundError(
            f"guest module {path} not found: run `wasi-lab build` (or `make setup`)"
        )
    wasm = path.read_bytes()
    engine = get_engine(epochs)
    key = cache_key(wasm, epochs)
    cached = cache_dir_for(path) / f"{path.stem}-{key}.cwasm"
    start = time.perf_counter()
    from_cache = False
    module = None
    if use_cache and cached.exists():
        try:
            module = wasmtime.Module.deserialize_file(engine, str(cached))
            from_cache = True
        except wasmtime.WasmtimeError:
            cached.unlink(missing_ok=True)  # stale or corrupt: recompile below
    if module is None:
        module = wasmtime.Module(engine, wasm)
        if use_cache:
            tmp = cached.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(module.serialize())
            os.replace(tmp, cached)
    compile_ms = (time.perf_counter() - start) * 1000
    pre = wasi_linker(engine).instantiate_pre(module)
    return CompiledModule(
        path=path,
        engine=engine,
        module=module,
        instance_pre=pre,
        epochs=epochs,
        compile_ms=compile_ms,
        from_cache=from_cache,
        sha256=hashlib.sha256(wasm).hexdigest(),
    )


def wasi_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """A linker that provides WASI preview 1: every import the guest's modules have."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    return linker


def instantiate_with_wasi(
    engine: wasmtime.Engine, module: wasmtime.Module, wasi: wasmtime.WasiConfig | None = None
) -> tuple[wasmtime.Store, wasmtime.Instance]:
    """A fresh Store with `wasi` (default: no arguments, no files) and one instance of
    `module`, linked the plain way: for one-off runs (a WASI command, the rayon demo, the
    image probe). `Guest` instantiates the pre-linked module instead, which is faster."""
    store = wasmtime.Store(engine)
    store.set_wasi(wasi or wasmtime.WasiConfig())
    return store, wasi_linker(engine).instantiate(store, module)


def shared_module(path: Path | str | None = None, epochs: bool = False) -> CompiledModule:
    """The process-wide compiled module for `path` (recompiled if the file changed)."""
    path = Path(path) if path else default_module()
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, epochs)
    with _LOCK:
        hit = _MODULES.get(key)
    if hit is None:
        hit = compile_module(path, epochs=epochs)
        with _LOCK:
            _MODULES[key] = hit
    return hit


# --------------------------------------------------------------------------- the guest


@dataclass
class Allocation:
    """A block the host asked for, remembered for the memory map."""

    ptr: int
    length: int
    label: str


@dataclass
class MemorySnapshot:
    """A copy of linear memory at one moment, with what the host knows about it."""

    data: bytes
    pages: int
    heap_base: int
    data_end: int
    allocations: list[Allocation] = field(default_factory=list)
    label: str = ""

    @property
    def size(self) -> int:
        return len(self.data)


class Guest:
    """One instance of the guest: a Store, WASI, and the exports, with checked calls.

    A Store never crosses threads: create one Guest per thread (the server keeps a pool).
    """

    def __init__(
        self,
        module: CompiledModule | Path | str | None = None,
        *,
        memory_limit: int | None = None,
        preopen: Path | str | None = None,
        argv: Iterable[str] | None = None,
    ):
        self.compiled = module if isinstance(module, CompiledModule) else shared_module(module)
        self.memory_limit = memory_limit
        self.preopen = preopen
        self.argv = list(argv) if argv is not None else None
        self.allocations: dict[int, Allocation] = {}
        self.instantiate_ms = 0.0
        self._instantiate()

    # -- lifecycle

    def _instantiate(self) -> None:
        start = time.perf_counter()
        store = wasmtime.Store(self.compiled.engine)
        wasi = wasmtime.WasiConfig()
        self.stderr = StderrTail()
        wasi.stderr_custom = self.stderr
        if self.argv is not None:
            wasi.argv = self.argv
        if self.preopen is not None:
            wasi.preopen_dir(str(self.preopen), ".")
        store.set_wasi(wasi)
        if self.memory_limit is not None:
            store.set_limits(memory_size=self.memory_limit)
        if self.compiled.epochs:
            store.set_epoch_deadline(1 << 62)
        instance = self.compiled.instance_pre.instantiate(store)
        self.store = store
        self.instance = instance
        self.exports = instance.exports(store)
        memory = self.exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory
        self.allocations.clear()
        self.poisoned: GuestTrap | None = None
        self.instantiate_ms = (time.perf_counter() - start) * 1000

    def reset(self) -> None:
        """Throw this instance away and start a fresh one (after a trap, or to start over)."""
        self._instantiate()

    def set_deadline(self, ticks: int) -> None:
        """Trap calls still running `ticks` epoch increments from now (server deadlines)."""
        if not self.compiled.epochs:
            raise RuntimeError("deadlines need a module compiled with epochs=True")
        self.store.set_epoch_deadline(max(1, int(ticks)))

    # -- calls

    def has_export(self, name: str) -> bool:
        return name in self.exports

    def raw_call(self, name: str, *args: int) -> int:
        """Call an export as is; a trap becomes GuestTrap and poisons the instance."""
        if self.poisoned is not None:
            raise GuestTrap(
                name, f"instance is unusable after an earlier trap ({self.poisoned}); call reset()"
            )
        try:
            func = self.exports[name]
        except KeyError:
            raise AttributeError(f"the guest has no export named {name!r}") from None
        mark = self.stderr.written
        try:
            return func(self.store, *args)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            text = str(exc)
            deadline = "interrupt" in text.lower() or "epoch" in text.lower()
            printed = self.stderr.since(mark)
            trap = GuestTrap(
                name,
                (printed + "\n" + text).strip(),
                deadline=deadline,
                cause=trap_cause(text, printed),
            )
            self.poisoned = trap
            raise trap from None

    def call(self, name: str, *args: int) -> int:
        """Call an export and raise the matching GuestError when it returns a negative code."""
        result = self.raw_call(name, *args)
        if isinstance(result, int) and result < 0:
            cls = ERROR_CLASSES.get(result, GuestError)
            raise cls(name, result, self.last_error())
        return result

    def last_error(self) -> str:
        """The guest's message for the last failure (copied through a scratch block)."""
        cap = 4096
        ptr = self.raw_call("alloc", cap)
        if ptr == 0:
            return "(the guest could not allocate a buffer for its error message)"
        try:
            n = self.raw_call("last_error", ptr, cap)
            return self.read_bytes(ptr, min(max(n, 0), cap)).decode("utf-8", "replace")
        finally:
            self.raw_call("dealloc", ptr, cap)

    # -- memory

    def alloc(self, length: int, label: str = "") -> int:
        """Ask the guest for `length` bytes; returns the offset in linear memory."""
        if length <= 0:
            raise BadArgumentError("alloc", -7, f"length must be at least 1 byte, not {length}")
        ptr = self.raw_call("alloc", length)
        if ptr == 0:
            raise GuestOutOfMemoryError("alloc", -8, self.last_error())
        self.allocations[ptr] = Allocation(ptr, length, label)
        return ptr

    def dealloc(self, ptr: int, length: int) -> None:
        """Give a block back; the guest refuses a pointer or length it did not hand out.

        After a trap there is nothing to give back (the instance's memory goes with it), and
        a cleanup in a `finally` must not replace the trap being raised with one of its own
        naming `dealloc`.
        """
        if self.poisoned is None:
            self.call("dealloc", ptr, length)
        self.allocations.pop(ptr, None)

    def forget(self, *ptrs: int) -> None:
        """The guest took ownership of these blocks (and freed them): stop tracking them."""
        for p in ptrs:
            self.allocations.pop(p, None)

    def _address(self, ptr: int, length: int) -> int:
        size = self.memory.data_len(self.store)
        if ptr < 0 or length < 0 or ptr + length > size:
            raise IndexError(f"{length} bytes at {ptr:#x} are outside linear memory ({size} bytes)")
        base = ctypes.addressof(self.memory.data_ptr(self.store).contents)
        return base + ptr

    def write_into(self, ptr: int, data: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Copy bytes to `ptr` with one memmove (the article's `write_guest_memory` copy)."""
        if isinstance(data, np.ndarray):
            arr = np.ascontiguousarray(data)
            ctypes.memmove(self._address(ptr, arr.nbytes), arr.ctypes.data, arr.nbytes)
            return
        view = memoryview(data).cast("B")
        n = view.nbytes
        if n == 0:
            return
        src = (
            (ctypes.c_ubyte * n).from_buffer_copy(view)
            if view.readonly
            else (ctypes.c_ubyte * n).from_buffer(view)
        )
        ctypes.memmove(self._address(ptr, n), src, n)

    def write_bytes(
        self, data: bytes | bytearray | memoryview | np.ndarray, label: str = ""
    ) -> int:
        """`alloc(len(data))` then copy: the article's `writeGuestMemory`, done once."""
        n = data.nbytes if isinstance(data, np.ndarray) else memoryview(data).nbytes
        ptr = self.alloc(n, label)
        self.write_into(ptr, data)
        return ptr

    def read_bytes(self, ptr: int, length: int) -> bytes:
        """Copy `length` bytes out of linear memory."""
        if length == 0:
            return b""
        return ctypes.string_at(self._address(ptr, length), length)

    def read_f32(self, ptr: int, count: int) -> np.ndarray:
        """Little-endian f32 values at `ptr` as a NumPy array (a copy)."""
        return np.frombuffer(self.read_bytes(ptr, 4 * count), dtype="<f4").copy()

    def read_u32(self, ptr: int, count: int) -> np.ndarray:
        return np.frombuffer(self.read_bytes(ptr, 4 * count), dtype="<u4").copy()

    @property
    def pages(self) -> int:
        """Current size of linear memory in 64 KiB pages (it only ever grows)."""
        return self.memory.size(self.store)

    def global_value(self, name: str) -> int | None:
        """An exported global's value (`__heap_base`, `__data_end`), or None."""
        g = self.exports[name] if self.has_export(name) else None
        return g.value(self.store) if isinstance(g, wasmtime.Global) else None

    def snapshot(self, label: str = "") -> MemorySnapshot:
        """A copy of all of linear memory plus the host's record of its blocks."""
        size = self.memory.data_len(self.store)
        return MemorySnapshot(
            data=self.read_bytes(0, size),
            pages=self.pages,
            heap_base=self.global_value("__heap_base") or 0,
            data_end=self.global_value("__data_end") or 0,
            allocations=sorted(self.allocations.values(), key=lambda a: a.ptr),
            label=label,
        )

    # -- image entry points

    def decode_image(self, image: bytes, mode: int = 0) -> tuple[int, int, np.ndarray]:
        """Decode + preprocess in the guest; returns (width, height, 1x224x224x3 tensor)."""
        out_len = self.call("decoded_len")
        side = self.call("tensor_side")
        img = self.write_bytes(image, "image")
        out = self.alloc(out_len, "decoded")
        try:
            self.call("decode_image", img, len(image), mode, out)
            w, h = (int(v) for v in self.read_u32(out, 2))
            tensor = np.frombuffer(self.read_bytes(out + 8, out_len - 8), dtype="<f4")
            return w, h, tensor.reshape(1, side, side, 3).copy()
        finally:
            self.dealloc(img, len(image))
            self.dealloc(out, out_len)

    def image_size(self, image: bytes) -> tuple[int, int]:
        """Width and height from the header, without decoding."""
        img = self.write_bytes(image, "image")
        out = self.alloc(8, "size")
        try:
            self.call("image_size", img, len(image), out)
            w, h = (int(v) for v in self.read_u32(out, 2))
            return w, h
        finally:
            self.dealloc(img, len(image))
            self.dealloc(out, 8)
