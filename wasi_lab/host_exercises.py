"""Checks for the host code learners write in notebook 03, against the real guest.

Each check builds what it needs from the learner's own objects (their Engine, Linker and
Module) and from the run, never from typed constants, and prints one ``✓``/``✗`` line
through `wasi_lab.exercises`: whatever the learner wrote, the check returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import wasmtime

from wasi_lab.exercises import check_call, check_value
from wasi_lab.runtime import PAGE_SIZE

JPEG_MAGIC = b"\xff\xd8\xff"


def fresh_instance(
    engine: wasmtime.Engine, linker: wasmtime.Linker, module: wasmtime.Module
) -> tuple[wasmtime.Store, wasmtime.Instance]:
    """A new Store with WASI and a new instance of `module`: the first cells of notebook 03."""
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    return store, linker.instantiate(store, module)


def check_writer(
    fn: Callable[..., Any] | None,
    engine: wasmtime.Engine,
    linker: wasmtime.Linker,
    module: wasmtime.Module,
    model: bytes,
    image: bytes,
    expected_class: int,
) -> bool:
    """Use the learner's ``write_guest_memory(store, instance, data)`` for the model and the
    image on a fresh instance, then call ``infer_from_ptrs``: right offsets, right bytes,
    and the class the plain run found."""
    name = "write_guest_memory"
    hint = (
        "exports['alloc'](store, len(data)) gives an offset; "
        "exports['memory'].write(store, data, offset) copies; return the offset"
    )
    if fn is None or not callable(fn):
        return check_call(name, fn, (), lambda r: None, hint)

    def run() -> tuple:
        store, instance = fresh_instance(engine, linker, module)
        return store, instance, fn(store, instance, model), fn(store, instance, image)

    def verify(result: tuple) -> str | None:
        store, instance, mptr, iptr = result
        exports = instance.exports(store)
        for what, ptr, data in (("model", mptr, model), ("image", iptr, image)):
            if not isinstance(ptr, int) or isinstance(ptr, bool):
                return f"it returned {ptr!r} for the {what}, not an offset (an int)"
            if ptr <= 0:
                return f"it returned {ptr} for the {what}: alloc answers 0 when it fails"
            if bytes(exports["memory"].read(store, ptr, ptr + len(data))) != data:
                return f"the {len(data):,} bytes at {ptr:#x} are not the {what}'s bytes"
        got = exports["infer_from_ptrs"](store, mptr, len(model), iptr, len(image))
        if got != expected_class:
            return f"infer_from_ptrs returned {got}, the plain run returned {expected_class}"
        return None

    return check_call(name, run, (), verify, hint)


def check_jpeg_page(
    answer: Any, store: wasmtime.Store, memory: wasmtime.Memory, img_ptr: int
) -> bool:
    """The page that holds the image's first bytes: right when it is ``img_ptr``'s page
    *and* reading that page of memory finds ``FF D8 FF`` where the image starts."""
    expected = img_ptr // PAGE_SIZE

    def equal(got: Any, exp: int) -> bool:
        if not isinstance(got, int) or got != exp:
            return False
        page = bytes(memory.read(store, got * PAGE_SIZE, (got + 1) * PAGE_SIZE))
        at = img_ptr - got * PAGE_SIZE
        return page[at : at + len(JPEG_MAGIC)] == JPEG_MAGIC

    return check_value(
        "page holding FF D8 FF",
        answer,
        expected,
        "an address is page * 65536 + offset: divide iptr by 65536 (//)",
        equal=equal,
    )
