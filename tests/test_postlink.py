"""The offset-folding pass: constant address adds move into load offsets, results unchanged.

Small WAT programs (assembled by wasmtime's `wat2wasm`) run before and after the pass under
the kit's engine; the real guest shows the build applied the pass (nothing left to fold).
"""

from __future__ import annotations

import struct
from pathlib import Path

import wasmtime

from wasi_lab.paths import PREBUILT_COMMAND, PREBUILT_MODULE
from wasi_lab.postlink import fold_file, fold_offsets, rewrite_code
from wasi_lab.runtime import get_engine
from wasi_lab.wasmbin import instructions, read_sections, uleb128

# Functions named like the guest's kernels are in the pass's scope; `outside` is not.
K = "$_ZN14wasi_lab_guest6engine7kernels"
MODULE = f"""
(module
  (memory (export "memory") 1)
  ;; outside the scope: left as it is
  (func $outside (export "outside") (param $p i32) (result i32)
    (i32.load (i32.add (local.get $p) (i32.const 16))))
  ;; p + 16, then offset 4: one fold, reading p + 20
  (func {K}3one (export "one") (param $p i32) (result i32)
    (i32.load offset=4 (i32.add (local.get $p) (i32.const 16))))
  ;; ((p + 8) + 4) + 4: a chain, folded completely into offset 16
  (func {K}5chain (export "chain") (param $p i32) (result f32)
    (f32.load offset=4 (i32.add (i32.add (local.get $p) (i32.const 8)) (i32.const 4))))
  ;; a SIMD load and a splat load fold the same way
  (func {K}4simd (export "simd") (param $p i32) (result f32)
    (f32x4.extract_lane 1
      (f32x4.add (v128.load (i32.add (local.get $p) (i32.const 32)))
                 (v128.load32_splat offset=8 (i32.add (local.get $p) (i32.const 4))))))
  ;; not folded: a negative constant (p - 4 is a real subtraction), a store's address (the
  ;; value sits between the add and the store), and an offset that would pass 2^32
  (func {K}4kept (export "kept") (param $p i32) (result i32)
    (i32.store (i32.add (local.get $p) (i32.const 64)) (i32.const 7))
    (i32.add
      (i32.load (i32.add (local.get $p) (i32.const -4)))
      (i32.load offset=4294967295 (i32.add (local.get $p) (i32.const 1)))))
)
"""


def run_all(wasm: bytes) -> tuple:
    """Every export's result on the same memory contents."""
    store = wasmtime.Store(get_engine())
    inst = wasmtime.Instance(store, wasmtime.Module(store.engine, wasm), [])
    ex = inst.exports(store)
    ex["memory"].write(store, struct.pack("<32f", *[1.5 * i for i in range(32)]), 0)
    kept = None
    try:
        ex["kept"](store, 8)
    except wasmtime.Trap as exc:  # the last load is out of bounds, folded or not
        kept = "trap" if "out of bounds" in str(exc) else str(exc)
    mem = ex["memory"].read(store, 0, 128)
    return (
        ex["one"](store, 4),
        ex["chain"](store, 12),
        ex["simd"](store, 16),
        kept,
        mem,
        ex["outside"](store, 0),
    )


def adds_before_loads(wasm: bytes) -> int:
    """How many `i32.const; i32.add; <load>` sequences the module still has."""
    seen = 0

    def count(data: bytes, start: int, end: int, _index: int) -> tuple[bytes, int]:
        nonlocal seen
        ops = [op for _, _, op in instructions(data, start, end)[1]]
        seen += sum(
            1
            for a, b, c in zip(ops, ops[1:], ops[2:], strict=False)
            if a == 0x41 and b == 0x6A and (0x28 <= c <= 0x35 or c == 0xFD)
        )
        return data[start:end], 0

    rewrite_code(wasm, count)
    return seen


def test_folds_give_the_same_results() -> None:
    wasm = bytes(wasmtime.wat2wasm(MODULE))
    folded, folds = fold_offsets(wasm)
    wasmtime.Module.validate(get_engine(), folded)
    # one + chain (2) + simd (2) = 5; `kept` keeps its two (and its store's add, which no
    # load follows), `outside` its one.
    assert folds == 5
    assert adds_before_loads(wasm) == 7 and adds_before_loads(folded) == 3
    assert len(folded) < len(wasm)
    before, after = run_all(wasm), run_all(folded)
    assert before == after
    assert before[0] == struct.unpack("<i", struct.pack("<f", 1.5 * 6))[0]  # bytes 24..28
    assert before[1] == 1.5 * 7 and before[2] == 1.5 * 13 + 1.5 * 7 and before[3] == "trap"
    # Idempotent: the chain folded completely the first time.
    assert fold_offsets(folded) == (folded, 0)


def test_scope_and_missing_names() -> None:
    wasm = bytes(wasmtime.wat2wasm(MODULE))
    assert fold_offsets(wasm, scope="no function has this name") == (wasm, 0)
    assert fold_offsets(wasm, scope="outside")[1] == 1
    # Without a `name` section nothing is known to be a kernel: nothing is folded.
    bare = bytes(wasmtime.wat2wasm(MODULE.replace(K, "$f").replace("$outside", "$g")))
    bare = strip_names(bare)
    assert fold_offsets(bare) == (bare, 0)


def strip_names(wasm: bytes) -> bytes:
    name = next(s for s in read_sections(wasm) if s.custom_name == "name")
    start = name.offset - 1 - len(uleb128(name.size))
    return wasm[:start] + wasm[name.offset + name.size :]


def test_fold_file_in_place(tmp_path: Path) -> None:
    path = tmp_path / "m.wasm"
    path.write_bytes(bytes(wasmtime.wat2wasm(MODULE)))
    assert fold_file(path) == 5
    assert fold_file(path) == 0
    assert not list(tmp_path.glob("*.tmp"))


def test_the_build_folded_the_prebuilt_modules() -> None:
    """The kit's modules went through the pass: nothing is left to fold in the kernels
    (and the rest, the JPEG decoder included, is untouched: `test_build` decodes with a
    fresh build)."""
    for module in (PREBUILT_MODULE, PREBUILT_COMMAND):
        data = module.read_bytes()
        out, folds = fold_offsets(data)
        assert folds == 0 and out == data, module.name
