"""Fixtures shared by the whole suite: the real guest module, sample images, a Guest."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest

from wasi_lab.build import default_module
from wasi_lab.runtime import Guest


@pytest.fixture(scope="session")
def module_path() -> Path:
    path = default_module()
    assert path.exists(), f"{path} missing: run `make setup`"
    return path


@pytest.fixture()
def guest(module_path: Path) -> Guest:
    return Guest(module_path)


@pytest.fixture(scope="session")
def grace_hopper_bytes() -> bytes:
    import matplotlib.cbook as cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC of type+payload."""
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def make_png(width: int, height: int, pixels: bytes | None = None) -> bytes:
    """A valid RGB PNG (or only its header, when `pixels` is None and the size is huge)."""
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if pixels is None and width * height > 4096:
        # A header that promises the moon, followed by a few KiB of zeros: a bomb.
        return sig + ihdr + png_chunk(b"IDAT", zlib.compress(bytes(65536))) + \
            png_chunk(b"IEND", b"")
    if pixels is None:
        pixels = bytes((x * 7 + y * 13) % 256 for y in range(height) for x in range(width * 3))
    raw = b"".join(b"\0" + pixels[y * width * 3:(y + 1) * width * 3] for y in range(height))
    return sig + ihdr + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def small_png() -> bytes:
    return make_png(40, 30)
