"""Our section reader against the real guest and a hand-written module."""

from __future__ import annotations

import pytest
import wasmtime

from wasi_lab.inspect import WasmFormatError, inspect_module, read_sections

TINY_WAT = """
(module
  (memory (export "memory") 1 2)
  (global (export "answer") i32 (i32.const 42))
  (func (export "add") (param i32 i32) (result i32)
    local.get 0 local.get 1 i32.add))
"""


def test_guest_exports_the_memory_abi(module_path) -> None:
    rep = inspect_module(module_path)
    exports = {e.name: e for e in rep.exports}
    for name in ("memory", "alloc", "dealloc", "last_error", "decode_image"):
        assert name in exports, name
    assert exports["alloc"].signature == "[i32] -> [i32]"
    assert exports["dealloc"].signature == "[i32, i32] -> [i32]"
    assert exports["memory"].kind == "memory"
    assert {i.module for i in rep.imports} == {"wasi_snapshot_preview1"}
    assert rep.memory["min_pages"] >= 1
    assert rep.globals["__heap_base"] >= rep.globals["__data_end"] > 0
    names = [s.name for s in rep.sections]
    assert names.index("type") < names.index("code") < names.index("data")
    assert sum(s.size for s in rep.sections) < rep.size
    assert "Rust" in " ".join(rep.producers.get("language", []))


def test_hand_written_module() -> None:
    wasm = wasmtime.wat2wasm(TINY_WAT)
    rep = inspect_module(bytes(wasm))
    assert [s.name for s in rep.sections] == [
        "type",
        "function",
        "memory",
        "global",
        "export",
        "code",
    ]
    assert rep.memory == {"name": "memory", "min_pages": 1, "max_pages": 2, "min_bytes": 65536}
    assert rep.globals == {"answer": 42}
    (add,) = [e for e in rep.exports if e.name == "add"]
    assert add.signature == "[i32, i32] -> [i32]"
    assert rep.imports == []


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\0asm",
        b"MZ\x90\0" * 4,
        b"\0asm\x02\0\0\0",
        b"\0asm\x01\0\0\0\x01\xff\xff\xff\xff\x0f",
    ],
)
def test_garbage_is_a_clear_error(bad: bytes) -> None:
    with pytest.raises(WasmFormatError):
        read_sections(bad)
