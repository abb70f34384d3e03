"""The out-of-bounds lab of notebook 03: real traps, a real trusting ABI, a real Node run."""

from __future__ import annotations

import ctypes
import zlib

import pytest
import wasmtime

from wasi_lab import oob_lab
from wasi_lab.hosts import NodeNotFoundError, find_node


@pytest.fixture(scope="module")
def engine() -> wasmtime.Engine:
    return wasmtime.Engine()


def _instance(engine: wasmtime.Engine, name: str):
    store = wasmtime.Store(engine)
    return store, wasmtime.Instance(store, oob_lab.module(engine, name), []).exports(store)


def test_a_read_past_one_page_traps(engine: wasmtime.Engine) -> None:
    store, x = _instance(engine, "one_page.wat")
    assert x["memory"].data_len(store) == 65536
    x["memory"].write(store, b"\x2a", 65535)
    assert x["load_u8"](store, 65535) == 42
    for name, addr in (("load_u8", 65536), ("load_u32", 65533)):
        with pytest.raises(wasmtime.Trap) as trap:
            x[name](store, addr)
        assert trap.value.trap_code == wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS
        message = oob_lab.trap_message(trap.value)
        assert message.startswith("wasm trap: out of bounds memory access")
        assert "backtrace" not in message


def test_trusting_abi_reads_the_neighbour_or_traps(engine: wasmtime.Engine) -> None:
    image = bytes([0xFF, 0xD8, 0xFF]) + bytes(range(256)) * 4 + b"\xff\xd9"
    model = b"\x0a\x40model" * 20_000  # 140 KB: alloc has to grow memory
    # article order: the image is the last block, the model's length runs off the end
    store, t = _instance(engine, "trusting_abi.wat")
    m, i = oob_lab.place(store, t, model), oob_lab.place(store, t, image)
    assert i >= m + len(model) and i % 8 == 0
    assert t["infer_from_ptrs"](store, m, len(model), i, len(image)) == zlib.adler32(image)
    with pytest.raises(wasmtime.Trap):
        t["infer_from_ptrs"](store, m, len(model), i, len(model))
    # a JPEG decoder stops at the end marker: no trap even with the bad length
    assert t["jpeg_end"](store, i, len(model)) == len(image)
    assert t["jpeg_end"](store, m, 10) == -1
    # the other order: the same bug stays inside memory and reads the model
    store, t = _instance(engine, "trusting_abi.wat")
    i, m = oob_lab.place(store, t, image), oob_lab.place(store, t, model)
    got = t["infer_from_ptrs"](store, m, len(model), i, len(model))
    seen = bytes(t["memory"].read(store, i, i + len(model)))
    assert got == oob_lab.adler32(seen) != zlib.adler32(image)
    assert seen[m - i :] == model[: len(model) - (m - i)]


def test_place_refuses_when_memory_cannot_grow() -> None:
    cfg = wasmtime.Config()
    engine = wasmtime.Engine(cfg)
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=2 * 65536)
    t = wasmtime.Instance(store, oob_lab.module(engine, "trusting_abi.wat"), []).exports(store)
    with pytest.raises(MemoryError, match="alloc"):
        oob_lab.place(store, t, bytes(3 * 65536))


def test_views_go_stale_on_grow(engine: wasmtime.Engine) -> None:
    for eng, may_move in ((engine, False), (oob_lab.moving_engine(), True)):
        store, x = _instance(eng, "trusting_abi.wat")
        view = x["memory"].get_buffer_ptr(store)
        x["alloc"](store, 100_000)
        assert len(view) == 65536 < x["memory"].data_len(store)
        moved = ctypes.addressof(view) != ctypes.addressof(x["memory"].data_ptr(store).contents)
        if not may_move:
            assert not moved
    # the moving engine really moved it once memory had to grow (else the lab says nothing)
    assert moved


def test_listing_and_unknown_file() -> None:
    assert oob_lab.listing("trusting_abi.wat").language == "wat"
    assert "infer_from_ptrs" in oob_lab.listing("trusting_abi.wat").text
    assert oob_lab.listing("detach_on_grow.mjs").language == "javascript"
    with pytest.raises(FileNotFoundError, match="trusting_abi.wat"):
        oob_lab.source("nope.wat")


def test_detach_on_grow_under_node() -> None:
    try:
        find_node()
    except NodeNotFoundError:
        pytest.skip("no Node 20+ here")
    facts = oob_lab.run_detach_on_grow()
    assert facts["pagesAfter"] > facts["pagesBefore"]
    assert facts["earlyLengthBefore"] == 65536 and facts["earlyLengthAfter"] == 0
    assert facts["earlySet"].startswith("TypeError") and "detached" in facts["earlySet"]
    assert facts["byteAfterEarlyStore"] == 0, "the store through the stale view is lost"
    assert facts["byteAfterFreshSet"] == 7


def test_detach_on_grow_with_a_node_that_does_not_run(tmp_path) -> None:
    with pytest.raises(NodeNotFoundError, match="does not run"):
        oob_lab.run_detach_on_grow(node=tmp_path / "no-such-node")
    broken = tmp_path / "node"
    broken.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(RuntimeError, match="failed \\(3\\): broken"):
        oob_lab.run_detach_on_grow(node=broken)
