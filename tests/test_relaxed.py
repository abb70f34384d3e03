"""The relaxed-SIMD rewrite: marker calls become `f32x4.relaxed_madd`, and nothing else moves.

The modules are small WAT programs assembled by wasmtime's own `wat2wasm` (which writes a
`name` section for `$names`), plus the kit's real guest for the decoder's walk over every
instruction LLVM emits.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import wasmtime

from wasi_lab.build import BuildError, build_guest
from wasi_lab.paths import PREBUILT_MODULE
from wasi_lab.relaxed import (
    MARKER,
    RELAXED_MADD,
    find_marker,
    fuse_file,
    fuse_multiply_adds,
    rewrite_calls,
)
from wasi_lab.runtime import get_engine
from wasi_lab.wasmbin import WasmFormatError, read_sections, uleb128

# a = b = 1 + 2^-12: a*b = 1 + 2^-11 + 2^-24 exactly, which f32 rounds to 1 + 2^-11. With
# c = -(1 + 2^-11), multiply-then-add gives 0 and a fused multiply-add gives 2^-24.
A = 1 + 2**-12
C = -(1 + 2**-11)

MODULE = f"""
(module
  (memory (export "memory") 1)
  (func ${MARKER} (param v128 v128 v128) (result v128)
    (f32x4.add (f32x4.mul (local.get 0) (local.get 1)) (local.get 2)))
  (func (export "madd") (param $p i32) (result f32)
    (local $acc v128)
    ;; a loop, a block and memory and lane instructions around the calls: the decoder has
    ;; to step over all of them to find the calls
    (block $done
      (loop $again
        (local.set $acc
          (call ${MARKER}
            (v128.load (local.get $p))
            (v128.load offset=16 (local.get $p))
            (v128.load offset=32 (local.get $p))))
        (br_if $done (i32.eqz (i32.const 1)))
        (br $done)))
    (v128.store offset=48 (local.get $p) (local.get $acc))
    (f32x4.extract_lane 0
      (call ${MARKER} (local.get $acc) (v128.const f32x4 1 1 1 1) (local.get $acc))))
)
"""


def assemble(text: str, names: bool = True) -> bytes:
    """The module's bytes; without `names`, its `name` section cut out."""
    wasm = bytes(wasmtime.wat2wasm(text))
    if names:
        return wasm
    name = next(s for s in read_sections(wasm) if s.custom_name == "name")
    start = name.offset - 1 - len(uleb128(name.size))
    return wasm[:start] + wasm[name.offset + name.size :]


def run_madd(wasm: bytes) -> tuple[float, float]:
    """(first multiply-add's lane 0, the function's result) with a, b, c from above."""
    store = wasmtime.Store(get_engine())
    inst = wasmtime.Instance(store, wasmtime.Module(store.engine, wasm), [])
    mem = inst.exports(store)["memory"]
    mem.write(store, struct.pack("<12f", *([A] * 4 + [A] * 4 + [C] * 4)), 0)
    result = inst.exports(store)["madd"](store, 0)
    first = struct.unpack("<f", mem.read(store, 48, 52))[0]
    return first, result


def host_has_fma() -> bool:
    try:
        return " fma " in Path("/proc/cpuinfo").read_text().replace("\n", " ")
    except OSError:
        return False


def test_marker_calls_become_relaxed_madd() -> None:
    wasm = assemble(MODULE)
    fused, report = fuse_multiply_adds(wasm)
    assert report.rewritten == 2 and report.functions_touched == 1
    assert fused.count(RELAXED_MADD) == 2
    assert report.size_after == len(fused)
    wasmtime.Module.validate(get_engine(), fused)
    # Unfused: the marker multiplies, rounds, then adds.
    assert run_madd(wasm)[0] == 0.0
    first, _ = run_madd(fused)
    assert first in (0.0, 2.0**-24)  # relaxed: either is allowed by the spec
    if host_has_fma():
        assert first == 2.0**-24  # wasmtime used the host's FMA: one rounding
    # Running the rewrite again changes nothing (cargo may hand back a fused module).
    again, report2 = fuse_multiply_adds(fused)
    assert again == fused and report2.rewritten == 0


def test_fuse_file_rewrites_in_place(tmp_path: Path) -> None:
    path = tmp_path / "guest.wasm"
    path.write_bytes(assemble(MODULE))
    assert fuse_file(path).rewritten == 2
    assert path.read_bytes().count(RELAXED_MADD) == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_decoder_walks_every_instruction_of_the_guest() -> None:
    """Rewriting calls to a function nothing calls must give back the same bytes."""
    data = PREBUILT_MODULE.read_bytes()
    out, report = rewrite_calls(data, marker=10**6)
    assert report.rewritten == 0
    assert out == data


def test_errors_say_what_is_missing() -> None:
    with pytest.raises(WasmFormatError, match="no `name` section"):
        find_marker(assemble(MODULE, names=False))
    with pytest.raises(WasmFormatError, match="relaxed-fma"):
        find_marker(PREBUILT_MODULE.read_bytes())
    wrong = MODULE.replace(
        "(param v128 v128 v128) (result v128)", "(param v128 v128) (result v128)"
    )
    wrong = wrong.replace("(v128.load offset=32 (local.get $p))", "")
    wrong = wrong.replace("(v128.const f32x4 1 1 1 1) (local.get $acc)", "(local.get $acc)")
    wrong = wrong.replace(
        "(f32x4.add (f32x4.mul (local.get 0) (local.get 1)) (local.get 2))",
        "(f32x4.mul (local.get 0) (local.get 1))",
    )
    with pytest.raises(WasmFormatError, match="not \\(v128, v128, v128\\) -> v128"):
        fuse_multiply_adds(assemble(wrong))
    with pytest.raises(WasmFormatError, match="past the end"):
        fuse_multiply_adds(PREBUILT_MODULE.read_bytes()[:5000])


def test_scalar_and_relaxed_fma_do_not_mix() -> None:
    with pytest.raises(BuildError, match="choose one"):
        build_guest(features=("scalar", "relaxed-fma"), progress=False)
