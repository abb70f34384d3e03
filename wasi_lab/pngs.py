"""Tiny PNGs built by hand: test inputs, and the decompression bomb the server refuses.

A PNG is a signature and chunks (length, type, payload, CRC of type + payload); IHDR says
how big the image claims to be. That claim is what a decompression bomb lies with: a
20000x20000 header over 64 KiB of zeros that compress to about a hundred bytes.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC of type+payload."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def make_png(width: int, height: int, pixels: bytes | None = None) -> bytes:
    """A valid 8-bit RGB PNG; with no `pixels` and a huge size, a decompression bomb."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if pixels is None and width * height > 4096:
        # A header that promises the moon, followed by 64 KiB of zeros (deflated: ~100 bytes).
        return (
            SIGNATURE
            + ihdr
            + png_chunk(b"IDAT", zlib.compress(bytes(65536)))
            + png_chunk(b"IEND", b"")
        )
    if pixels is None:
        pixels = bytes((x * 7 + y * 13) % 256 for y in range(height) for x in range(width * 3))
    raw = b"".join(b"\0" + pixels[y * width * 3 : (y + 1) * width * 3] for y in range(height))
    return SIGNATURE + ihdr + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")


def decompression_bomb() -> bytes:
    """A PNG whose header announces 20000x20000 pixels (1.2 GB of RGB) in under 200 bytes."""
    return make_png(20000, 20000)
