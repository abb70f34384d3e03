"""The wasm binary primitives: LEB128 both ways, and the rewrites' output pinned byte for byte.

The pinned modules are `test_postlink.MODULE` and `test_relaxed.MODULE` as wasmtime's
`wat2wasm` assembled them when the primitives moved into `wasi_lab.wasmbin`; the expected
digests are what `fold_offsets` and `fuse_multiply_adds` made of them before the move. Bytes
rather than WAT, so a new wasmtime cannot change the input under the test.
"""

from __future__ import annotations

import hashlib

import pytest

from wasi_lab.models.graphdef import encode_varint
from wasi_lab.paths import PREBUILT_COMMAND, PREBUILT_MODULE
from wasi_lab.postlink import fold_offsets, rewrite_code
from wasi_lab.relaxed import fuse_multiply_adds
from wasi_lab.wasmbin import Reader, WasmFormatError, instructions, read_sections, uleb128

FOLD_IN = bytes.fromhex(
    "0061736d01000000010b0260017f017f60017f017d03060500000101000503010001073006066d656d6f7279"
    "0200076f7574736964650000036f6e65000105636861696e00020473696d640003046b65707400040a63050a"
    "00200041106a2802000b0a00200041106a2802040b0d00200041086a41046a2a02040b1a00200041206afd00"
    "0400200041046afd090208fde401fd1f010b2200200041c0006a41073602002000417c6a280200200041016a"
    "2802ffffffff0f6a0b00d201046e616d6501ae010500076f75747369646501265f5a4e3134776173695f6c61"
    "625f677565737436656e67696e65376b65726e656c73336f6e6502285f5a4e3134776173695f6c61625f6775"
    "65737436656e67696e65376b65726e656c7335636861696e03275f5a4e3134776173695f6c61625f67756573"
    "7436656e67696e65376b65726e656c733473696d6404275f5a4e3134776173695f6c61625f67756573743665"
    "6e67696e65376b65726e656c73346b657074021a050001000170010100017002010001700301000170040100"
    "0170"
)
FUSE_IN = bytes.fromhex(
    "0061736d01000000010d0260037b7b7b017b60017f017d03030200010503010001071102066d656d6f727902"
    "00046d61646400010a5b020e0020002001fde6012002fde4010b4a01017b024003402000fd0004002000fd00"
    "04102000fd000420100021014101450d010c010b0b20002001fd0b04302001fd0c0000803f0000803f000080"
    "3f0000803f20011000fd1f000b0040046e616d65011a0100175f5f776173695f6c61625f72656c617865645f"
    "6d616464020b010102000170010361636303100101020004646f6e650105616761696e"
)
FOLDED_SHA256 = "a8823c4bc8fa66434bac8359fb6f71412cc04db8726ebe3684bd52e480237439"
FUSED_SHA256 = "834e4bcda2c1602cdcf0b9fa3784aa967dfe3e14c2a434160040a6d656408afe"

EDGES = [0, 1, 63, 64, 127, 128, 255, 300, 16383, 16384, 2**21 - 1, 2**28, 2**32 - 1]


def test_uleb128_round_trips_and_agrees_with_protobuf() -> None:
    for v in EDGES:
        enc = uleb128(v)
        r = Reader(enc)
        assert r.u32() == v and r.pos == len(enc), v
        assert enc == encode_varint(v), v  # protobuf's varint: the same encoding
    assert uleb128(127) == b"\x7f" and uleb128(128) == b"\x80\x01"
    with pytest.raises(ValueError, match="negative"):
        uleb128(-1)


def test_signed_and_malformed_leb128() -> None:
    assert Reader(b"\x7f").s32() == -1
    assert Reader(b"\x80\x7f").s32() == -128
    assert Reader(b"\x3f").s32() == 63
    with pytest.raises(WasmFormatError, match="too long"):
        Reader(b"\xff" * 6).u32()
    with pytest.raises(WasmFormatError, match="unexpected end"):
        Reader(b"\x80").u32()


def test_rewrites_are_byte_identical_to_before_the_move() -> None:
    assert hashlib.sha256(FOLD_IN).hexdigest().startswith("8fad48bc2e578dbb")
    folded, folds = fold_offsets(FOLD_IN)
    assert folds == 5 and len(folded) == 383
    assert hashlib.sha256(folded).hexdigest() == FOLDED_SHA256
    fused, report = fuse_multiply_adds(FUSE_IN)
    assert report.rewritten == 2 and len(fused) == 213
    assert hashlib.sha256(fused).hexdigest() == FUSED_SHA256


@pytest.mark.parametrize("module", [PREBUILT_MODULE, PREBUILT_COMMAND], ids=lambda p: p.name)
def test_decoder_accounts_for_every_byte_of_the_guest(module) -> None:
    """Each body rebuilt from its decoded instructions' spans is the body: the decoder
    neither skips nor overlaps a byte of anything LLVM emitted."""
    data = module.read_bytes()
    seen = 0

    def rebuild(d: bytes, start: int, end: int, _index: int) -> tuple[bytes, int]:
        nonlocal seen
        first, instrs = instructions(d, start, end)
        assert all(a[1] == b[0] for a, b in zip(instrs, instrs[1:], strict=False))
        seen += len(instrs)
        return d[start:first] + b"".join(d[s:e] for s, e, _ in instrs), 0

    out, edits, _ = rewrite_code(data, rebuild)
    assert out == data and edits == 0 and seen > 100_000
    assert [s.name for s in read_sections(data)][:2] == ["type", "import"]
