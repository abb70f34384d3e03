"""The helpers notebooks 01 and 02 call: charts from the build record, WAT that assembles,
the out-of-bounds outcome, and a refusal message that names the function once."""

from __future__ import annotations

import os

import matplotlib
import pytest
import wasmtime

matplotlib.use("Agg")

from wasi_lab import buildrecord, workshop  # noqa: E402
from wasi_lab.inspect import inspect_module  # noqa: E402
from wasi_lab.runtime import BadPointerError, Guest  # noqa: E402


def _signatures(report) -> list[tuple[str, str, str]]:
    return [(e.name, e.kind, e.signature) for e in report.exports]


def test_guest_interface_is_valid_wat_with_the_same_exports(module_path) -> None:
    report = inspect_module(module_path)
    wat = workshop.wat_interface(report)
    stub = inspect_module(bytes(wasmtime.wat2wasm(wat)))
    assert _signatures(stub) == _signatures(report)
    assert stub.globals == report.globals
    assert stub.memory["min_pages"] == report.memory["min_pages"]


def test_tiny_module_interface_round_trips() -> None:
    report = inspect_module(workshop.tiny_module())
    stub = inspect_module(bytes(wasmtime.wat2wasm(workshop.wat_interface(report))))
    assert _signatures(stub) == _signatures(report)


def _tiny():
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    inst = wasmtime.Instance(store, wasmtime.Module(engine, workshop.tiny_module()), [])
    return store, inst.exports(store)


def test_trap_or_value_on_the_tiny_module() -> None:
    store, t = _tiny()
    page = t["memory"].data_len(store)
    assert page == 65536
    past = workshop.trap_or_value(lambda: t["sum"](store, page - 6, 10))
    assert past == "trap: wasm trap: out of bounds memory access"
    inside = workshop.trap_or_value(lambda: t["sum"](store, page - 10, 10))
    assert inside == "returned 0"
    assert workshop.trap_or_value(None) is None
    assert workshop.trap_or_value(lambda: None) is None


def test_figures_come_from_the_record() -> None:
    rec = buildrecord.load()
    fig = workshop.size_figure(rec)
    (ax,) = fig.axes
    assert [round(p.get_height()) for p in ax.patches] == \
        [round(rec.size("debug") / 1024), round(rec.size("release") / 1024)]
    assert f"{rec.cpu_count}-core" in ax.get_title()
    fig = workshop.feature_cost_figure(rec)
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
