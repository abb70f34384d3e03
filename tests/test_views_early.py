"""The helpers notebooks 01 and 02 call: charts from the build record, WAT that assembles,
the out-of-bounds outcome, and a refusal message that names the function once."""

from __future__ import annotations

import os

import matplotlib
import pytest
import wasmtime

matplotlib.use("Agg")

from wasi_lab import buildrecord  # noqa: E402
from wasi_lab.exercises import trap_or_value  # noqa: E402
from wasi_lab.inspect import inspect_module  # noqa: E402
from wasi_lab.runtime import BadPointerError, Guest  # noqa: E402
from wasi_lab.views.build_views import feature_cost_figure, size_figure  # noqa: E402
from wasi_lab.views.module_views import tiny_module, wat_interface  # noqa: E402


def _signatures(report) -> list[tuple[str, str, str]]:
    return [(e.name, e.kind, e.signature) for e in report.exports]


def test_guest_interface_is_valid_wat_with_the_same_exports(module_path) -> None:
    report = inspect_module(module_path)
    wat = wat_interface(report)
    stub = inspect_module(bytes(wasmtime.wat2wasm(wat)))
    assert _signatures(stub) == _signatures(report)
    assert stub.globals == report.globals
    assert stub.memory["min_pages"] == report.memory["min_pages"]


def test_tiny_module_interface_round_trips() -> None:
    report = inspect_module(tiny_module())
    stub = inspect_module(bytes(wasmtime.wat2wasm(wat_interface(report))))
    assert _signatures(stub) == _signatures(report)


def _tiny():
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    inst = wasmtime.Instance(store, wasmtime.Module(engine, tiny_module()), [])
    return store, inst.exports(store)


def test_trap_or_value_on_the_tiny_module() -> None:
    store, t = _tiny()
    page = t["memory"].data_len(store)
    assert page == 65536
    past = trap_or_value(lambda: t["sum"](store, page - 6, 10))
    assert past == "trap: wasm trap: out of bounds memory access"
    inside = trap_or_value(lambda: t["sum"](store, page - 10, 10))
    assert inside == "returned 0"
    assert trap_or_value(None) is None
    assert trap_or_value(lambda: None) is None


def test_figures_come_from_the_record() -> None:
    rec = buildrecord.load()
    fig = size_figure(rec)
    (ax,) = fig.axes
    assert [round(p.get_height()) for p in ax.patches] == [
        round(rec.size("debug") / 1024),
        round(rec.size("release") / 1024),
    ]
    assert f"{rec.cpu_count}-core" in ax.get_title()
    fig = feature_cost_figure(rec)
    assert len(fig.axes) == 3
    for ax in fig.axes:  # no empty panel: every bar has a height
        assert len(ax.patches) == 2 and all(p.get_height() > 0 for p in ax.patches)
    assert "2 cores" not in fig.get_suptitle() or os.cpu_count() == 2
    assert f"{rec.cpu_count}-core" in fig.get_suptitle()


def test_refusal_names_the_function_once() -> None:
    guest = Guest()
    ptr = guest.alloc(16)
    guest.dealloc(ptr, 16)
    with pytest.raises(BadPointerError) as info:
        guest.dealloc(ptr, 16)
    assert str(info.value).startswith("dealloc: pointer ")
    assert str(info.value).count("dealloc:") == 1


# --------------------------------------------------------------------------- facts the prose states


def _fresh_guest_exports(module_path):
    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    instance = linker.instantiate(store, wasmtime.Module.from_file(engine, str(module_path)))
    return store, instance.exports(store)


def test_notebook_02_memory_facts(module_path) -> None:
    """02 says: the first block sits a few bytes above __heap_base; alloc(n) grows a fresh
    instance to the pages that reach __heap_base + n; a refused dealloc leaves the block."""
    import math

    report = inspect_module(module_path)
    heap_base, pages = report.globals["__heap_base"], report.memory["min_pages"]
    for n in (32, 200_000, 1_000_000):
        store, ex = _fresh_guest_exports(module_path)
        assert ex["memory"].size(store) == pages
        ptr = ex["alloc"](store, n)
        assert 0 < ptr - heap_base <= 64
        assert ex["memory"].size(store) - pages == math.ceil((heap_base + n) / 65536) - pages
    q = ex["alloc"](store, 100)
    assert [
        ex["dealloc"](store, q, 99),
        ex["dealloc"](store, q, 100),
        ex["dealloc"](store, q, 100),
    ] == [-2, 0, -1]


def test_notebook_02_the_guest_opens_no_files(module_path) -> None:
    names = {i.name for i in inspect_module(module_path).imports}
    assert not names & {"path_open", "fd_read", "fd_prestat_get"}, names


def test_notebook_01_debug_module_facts() -> None:
    """01 says most of the debug module is debug info and its code is several times larger."""
    rec = buildrecord.load()
    d, r = rec.variants["debug"], rec.variants["release"]
    assert d.debug_info_bytes / d.size > 0.5
    assert d.sections["code"] / r.sections["code"] > 3
