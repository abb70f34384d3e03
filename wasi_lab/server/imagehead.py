"""What decoding an image will cost the guest, read from the PNG or JPEG header.

The server refuses, before any guest work, an image whose decode cannot fit under the
guest's memory cap (past the cap `memory.grow` fails and the guest aborts). The estimate
follows the guest's real decode path (`guest/src/preprocess.rs` with the `image` 0.24,
`png` 0.17 and `jpeg-decoder` crates), per pixel unless said otherwise:

* the body itself, copied into linear memory;
* the guest's own pre-decode probe: it reserves 8 bytes a pixel and frees it;
* the decoded buffer: channels x bytes per sample from the header (16-bit RGBA PNG: 8;
  palette PNG: 4, it may expand to RGBA); a JPEG also holds its component planes (their
  sampling factors from the header, padded to whole MCUs), the decoder's output, a
  CMYK->RGB copy, and for progressive JPEGs 2 bytes of coefficients per planed sample;
* the RGB8 copy (`to_rgb8`): 3;
* the resize's intermediate: `imageops::resize` first resamples every column to 224 rows
  as RGBA f32, width x 224 x 16 bytes: 0.5 GiB for a 160000x1 PNG of 545 bytes;
* the 224x224 output, its tensor and slack for the allocator (fixed).

Measured against the guest (the smallest memory cap under which each image still
decodes, minus a fresh guest's memory) it over-estimates by 2-65 %: a 16-bit RGBA PNG
4000x4000 184 vs 169 MiB, a 40000x1 PNG 139 vs 137 MiB, a progressive 4:2:0 JPEG 227 vs
139 MiB. `tests/test_redteam_http.py` keeps it from becoming an under-estimate.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SIDE = 224
#: Bytes a pixel the guest reserves before it decodes (preprocess.rs, `decode_rgb`).
GUEST_PROBE_BPP = 8
#: Fixed costs: the 224x224 RGB output, the f32 tensor, allocator slack.
FIXED_BYTES = SIDE * SIDE * (3 + 4 + 16) + (1 << 20)

_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}  # colour type -> decoded channels
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


@dataclass(frozen=True)
class ImageHead:
    """What the header says; `None` fields were not found (the worst case is assumed)."""

    format: str                     # "png", "jpeg" or "unknown"
    width: int | None = None
    height: int | None = None
    bytes_per_pixel: int | None = None   # decoded: channels x bytes per sample
    components: int | None = None        # JPEG
    progressive: bool = False            # JPEG
    sampling: tuple[tuple[int, int], ...] = ()  # JPEG: (h, v) factors per component

    def decode_bytes(self, width: int, height: int, body: int) -> int:
        """Peak linear memory the guest's decode + resize of this image asks for."""
        pixels = width * height
        if self.format == "png":
            decoded = pixels * (self.bytes_per_pixel or 8)
        else:  # JPEG, or unknown: the JPEG worst case (4 full planes, progressive)
            comps = self.components or 4
            factors = self.sampling or ((1, 1),) * comps
            hmax = max(max(h for h, _ in factors), 1)
            vmax = max(max(v for _, v in factors), 1)
            padded = (-(-width // (8 * hmax)) * 8 * hmax) * (-(-height // (8 * vmax)) * 8 * vmax)
            planes = sum(padded * h * v // (hmax * vmax) for h, v in factors)
            if self.progressive or self.components is None:
                planes *= 3  # + i16 coefficients for every planed sample
            out = pixels * min(comps, 4)
            buffer = pixels * (1 if comps == 1 else 3)
            cmyk = pixels * 3 if comps == 4 else 0
            decoded = buffer + planes + out + cmyk
        decode_peak = max(pixels * GUEST_PROBE_BPP, decoded + pixels * 3)
        return body + decode_peak + width * SIDE * 16 + FIXED_BYTES


def read_head(data: bytes) -> ImageHead:
    """Parse the PNG IHDR or the JPEG SOF segment; never raises."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 29 and data[12:16] == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
        channels = _PNG_CHANNELS.get(colour)
        bpp = None if channels is None else channels * (2 if depth == 16 else 1)
        return ImageHead("png", width, height, bpp)
    if data[:2] == b"\xff\xd8":
        return _jpeg_head(data)
    return ImageHead("unknown")


def _jpeg_head(data: bytes) -> ImageHead:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return ImageHead("jpeg")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _SOF_MARKERS and i + 10 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            comps = data[i + 9]
            table = data[i + 10:i + 10 + 3 * comps]
            sampling = tuple((b >> 4, b & 15) for b in table[1::3]) \
                if len(table) == 3 * comps else ()
            return ImageHead("jpeg", width, height, None, components=comps,
                             progressive=marker in _PROGRESSIVE, sampling=sampling)
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return ImageHead("jpeg")
        i += 2 + length
    return ImageHead("jpeg")
