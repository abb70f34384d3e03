"""Fuzz the image headers the decoders trust: Hypothesis rewrites the fields of real JPEGs
(SOF dimensions, component counts, sampling factors and table selectors; DHT counts,
symbols and classes; SOS selectors and spectral bands; DRI; DQT) and of real PNGs (IHDR
size, bit depth, colour type, compression, filter, interlace, with the CRC recomputed so
the decoder reads on), then sends the file to the guest's image entry points
(`image_size`, `decode_image`, `classify`) and to the server's POST /predict.

Every input must get a documented answer: the guest returns or raises BadImage,
ImageTooLarge or OutOfMemory, never traps and leaks nothing; the server answers 200 or a
413/422 of its error table, never guest_trap, never a 500, and within a bound (no hang).
`test_fuzz_guest.py` mutates random bytes; this file aims at the fields that say how much
to allocate and how to read the rest. Derandomized, no database, bounded example counts.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.servers import run_in_thread
from tests.test_fuzz_guest import MEMORY_LIMIT, load, tiny_classifier
from wasi_lab.pngs import SIGNATURE, png_chunk
from wasi_lab.runtime import (
    BadImageError,
    Guest,
    GuestError,
    GuestOutOfMemoryError,
    ImageTooLargeError,
)
from wasi_lab.server.errors import ERROR_CODES
from wasi_lab.server.limits import Limits, MiB

FUZZ = settings(
    deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
GUEST_ERRORS = (BadImageError, ImageTooLargeError, GuestOutOfMemoryError)
#: What POST /predict may answer an image with (besides 200).
SERVER_CODES = {"bad_image", "image_too_large", "guest_out_of_memory"}
#: No single answer may take longer (the server's deadline is 20 s; decodes here are ms).
ANSWER_S = 30.0


# ------------------------------------------------------------------ seeds and their fields
def _jpeg(shape: tuple[int, ...], **save: object) -> bytes:
    a = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=75, **save)
    return buf.getvalue()


def jpeg_fields(data: bytes) -> list[tuple[str, int, int]]:
    """(name, offset, width in bytes) of every header field worth lying about."""
    fields: list[tuple[str, int, int]] = []
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            pos += 1  # entropy-coded data
            continue
        marker = data[pos + 1]
        if marker in (0x00, 0xFF) or 0xD0 <= marker <= 0xD7:
            pos += 2 if marker != 0xFF else 1
            continue
        if marker == 0xD9:
            break
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        seg = pos + 4  # first byte after the length
        fields.append((f"{marker:02X} length", pos + 2, 2))
        if marker in (0xC0, 0xC1, 0xC2):
            fields += [
                ("SOF precision", seg, 1),
                ("SOF height", seg + 1, 2),
                ("SOF width", seg + 3, 2),
                ("SOF components", seg + 5, 1),
            ]
            for i in range(data[seg + 5]):
                fields += [
                    (f"SOF c{i} id", seg + 6 + 3 * i, 1),
                    (f"SOF c{i} sampling", seg + 7 + 3 * i, 1),
                    (f"SOF c{i} quant table", seg + 8 + 3 * i, 1),
                ]
        elif marker == 0xC4:
            p = seg
            while p + 17 <= pos + 2 + length:
                fields.append(("DHT class/id", p, 1))
                fields += [(f"DHT count {n + 1}", p + 1 + n, 1) for n in range(16)]
                total = sum(data[p + 1 : p + 17])
                fields += [("DHT symbol", p + 17 + k, 1) for k in range(0, total, 7)]
                p += 17 + total
        elif marker == 0xDA:
            ns = data[seg]
            fields.append(("SOS components", seg, 1))
            for i in range(ns):
                fields += [
                    (f"SOS c{i} id", seg + 1 + 2 * i, 1),
                    (f"SOS c{i} tables", seg + 2 + 2 * i, 1),
                ]
            fields += [
                ("SOS Ss", seg + 1 + 2 * ns, 1),
                ("SOS Se", seg + 2 + 2 * ns, 1),
                ("SOS Ah/Al", seg + 3 + 2 * ns, 1),
            ]
        elif marker == 0xDB:
            fields.append(("DQT precision/id", seg, 1))
        elif marker == 0xDD:
            fields.append(("DRI interval", seg, 2))
        pos += 2 + length
    return fields


def _png(width: int, height: int, depth: int, colour: int) -> bytes:
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = 1 + -(-width * channels * depth // 8)
    rng = np.random.default_rng(width + height + depth + colour)
    rows = bytearray(rng.integers(0, 256, row * height, dtype=np.uint8).tobytes())
    rows[::row] = bytes(height)  # filter type 0 on every row
    chunks = [png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))]
    if colour == 3:
        chunks.append(png_chunk(b"PLTE", bytes(range(48))))
    return (
        SIGNATURE
        + b"".join(chunks)
        + png_chunk(b"IDAT", zlib.compress(bytes(rows)))
        + png_chunk(b"IEND", b"")
    )


JPEG_SEEDS = {
    "baseline 4:2:0": _jpeg((40, 56, 3)),
    "baseline 4:4:4 restarts": _jpeg((33, 47, 3), subsampling=0, restart_marker_blocks=2),
    "grey": _jpeg((24, 40)),
    "progressive": _jpeg((48, 64, 3), progressive=True),
    "progressive 4:4:4 optimised": _jpeg(
        (30, 30, 3), progressive=True, subsampling=0, optimize=True
    ),
}
JPEG_FIELDS = {name: jpeg_fields(data) for name, data in JPEG_SEEDS.items()}
PNG_SEEDS = {
    "rgb8": _png(30, 20, 8, 2),
    "rgba16": _png(9, 7, 16, 6),
    "palette": _png(16, 12, 8, 3),
    "grey1": _png(33, 5, 1, 0),
    "grey-alpha8": _png(12, 12, 8, 4),
}
#: IHDR field -> (offset in the file, struct format).
IHDR = {
    "width": (16, ">I"),
    "height": (20, ">I"),
    "bit depth": (24, "B"),
    "colour type": (25, "B"),
    "compression": (26, "B"),
    "filter": (27, "B"),
    "interlace": (28, "B"),
}


def _interesting(width: int) -> st.SearchStrategy[int]:
    if width == 2:
        return st.one_of(
            st.integers(0, 700),
            st.sampled_from(
                [0, 1, 2, 7, 8, 9, 15, 16, 17, 255, 256, 4095, 4096, 8192, 32767, 65535]
            ),
        )
    return st.one_of(
        st.integers(0, 255),
        st.sampled_from([0, 1, 2, 3, 4, 5, 15, 16, 17, 0x11, 0x22, 0x44, 0x41, 0xFF]),
    )


@st.composite
def mutated_jpegs(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(JPEG_SEEDS)))
    data = bytearray(JPEG_SEEDS[name])
    fields = JPEG_FIELDS[name]
    edits = draw(st.lists(st.sampled_from(fields), min_size=1, max_size=4))
    for field, offset, width in edits:
        value = draw(_interesting(width), label=field)
        data[offset : offset + width] = value.to_bytes(width, "big")
    if draw(st.booleans()):
        data = data[: draw(st.integers(2, len(data)))] + b"\xff\xd9"
    return name, bytes(data)


@st.composite
def mutated_pngs(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(PNG_SEEDS)))
    data = bytearray(PNG_SEEDS[name])
    for field in draw(st.lists(st.sampled_from(sorted(IHDR)), min_size=1, max_size=3)):
        offset, fmt = IHDR[field]
        if fmt == ">I":
            value = draw(
                st.one_of(
                    st.integers(0, 5000),
                    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 65535, 65536, 100_000]),
                ),
                label=field,
            )
        else:
            value = draw(
                st.one_of(st.sampled_from([0, 1, 2, 3, 4, 6, 7, 8, 16, 255]), st.integers(0, 255)),
                label=field,
            )
        data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    if draw(st.booleans()):  # usually the CRC is right, so the decoder reads the fields
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return name, bytes(data)


IMAGES = st.one_of(mutated_jpegs(), mutated_pngs())


def test_the_seeds_decode_and_their_fields_were_found() -> None:
    """Unmutated, every seed is a valid image, and the field lists cover each segment."""
    guest = Guest()
    for name, data in {**JPEG_SEEDS, **PNG_SEEDS}.items():
        w, h, tensor = guest.decode_image(data, 1)
        assert w > 0 and h > 0 and tensor.shape == (1, 224, 224, 3), name
    for name, fields in JPEG_FIELDS.items():
        kinds = {f[0].split()[0] for f in fields}
        assert {"SOF", "DHT", "SOS", "DQT"} <= kinds, (name, kinds)
        assert ("DRI" in kinds) == ("restarts" in name), name
        assert sum(f[0] == "SOS Ss" for f in fields) == (10 if "progressive" in name else 1), name


# ------------------------------------------------------------------ the guest
@pytest.fixture(scope="module")
def header_guest() -> Iterator[tuple[Guest, int]]:
    guest = Guest(memory_limit=MEMORY_LIMIT)
    model = tiny_classifier(224, 10)
    yield guest, load(guest, model)


def _guest_answers(guest: Guest, call, *args) -> None:
    start = time.monotonic()
    try:
        call(*args)
    except GuestError as exc:
        assert isinstance(exc, GUEST_ERRORS), exc
    assert guest.poisoned is None  # a trap would have poisoned the instance
    assert time.monotonic() - start < ANSWER_S


@settings(FUZZ, max_examples=250)
@given(case=IMAGES, mode=st.integers(0, 2))
def test_mutated_headers_through_the_guest_entry_points(header_guest, case, mode) -> None:
    guest, handle = header_guest
    name, data = case
    before = guest.call("live_allocations")
    _guest_answers(guest, guest.image_size, data)
    _guest_answers(guest, guest.decode_image, data, mode)
    ip, op = guest.write_bytes(data), guest.alloc(8 * 3)
    try:
        _guest_answers(guest, guest.call, "classify", handle, ip, len(data), mode, op, 3)
    finally:
        guest.dealloc(ip, len(data))
        guest.dealloc(op, 8 * 3)
    assert guest.call("live_allocations") == before, name


@settings(FUZZ, max_examples=150)
@given(name=st.sampled_from(sorted(JPEG_SEEDS)), where=st.floats(0, 1), eoi=st.booleans())
def test_any_cut_of_an_unmutated_jpeg_is_a_bad_image(header_guest, name, where, eoi) -> None:
    """With its headers intact a JPEG cut anywhere in its scans, baseline or progressive,
    closed with EOI or not, is BadImage: never pixels made up from zero padding."""
    guest, _ = header_guest
    data = JPEG_SEEDS[name]
    first, end = data.index(b"\xff\xda"), len(data) - 2
    cut = data[: first + int((end - 1 - first) * where)] + (b"\xff\xd9" if eoi else b"")
    with pytest.raises(BadImageError):
        guest.decode_image(cut, 1)
    assert guest.poisoned is None


# ------------------------------------------------------------------ the server
@pytest.fixture(scope="module")
def server() -> Iterator:
    """A tight guest (128 MiB, 8 megapixels), so generated headers land on both sides."""
    with run_in_thread(
        Limits(workers=1, memory_limit=128 * MiB, max_pixels=8_000_000, deadline_ms=20_000),
        access_log=None,
    ) as running:
        yield running


@settings(FUZZ, max_examples=70)
@given(case=IMAGES)
def test_mutated_headers_through_the_server(server, case) -> None:
    name, data = case
    start = time.monotonic()
    r = httpx.post(f"{server.url}/predict", content=data, timeout=ANSWER_S + 10)
    assert time.monotonic() - start < ANSWER_S, name
    if r.status_code == 200:
        assert r.json()["top"], r.text
        return
    body = r.json()
    code = body["error"]["code"]
    assert ERROR_CODES[code][0] == r.status_code, r.text
    assert code in SERVER_CODES, (name, r.text)


def test_no_server_guest_trapped_or_was_replaced(server) -> None:
    """Runs after the fuzzing above (file order): the pool never replaced a guest."""
    pools = httpx.get(f"{server.url}/healthz", timeout=10).json()["pools"]
    for pool in pools.values():
        assert pool["replaced"] == 0 and pool["lost"] == 0, pool
