"""What decoding an image will cost the guest, read from the PNG or JPEG header.

The server refuses, before any guest work, an image whose decode cannot fit under the
guest's memory cap (past the cap `memory.grow` fails and the guest aborts). The estimate
follows the guest's real decode path (`guest/src/preprocess.rs` with the `image` 0.24,
`png` 0.17 and `jpeg-decoder` crates), per pixel unless said otherwise:

* the body itself, copied into linear memory;
* the pixel buffer: channels x bytes per sample from the header (16-bit RGBA PNG: 8;
  palette PNG: 4, it may expand to RGBA; JPEG: 3, or 1 for grey: CMYK comes out RGB);
* then the larger of two things the guest reserves in turn (`read_into`):
  - the decoder's working memory: for PNG four scanlines plus 1 MiB (inflate window);
    for JPEG every component's plane padded to 16 (or to whole MCUs, if larger), the
    decoder's output, a CMYK->RGB copy, and for progressive files 2 bytes of
    coefficients per planed sample;
  - the RGB8 copy (`into_rgb8`, 3 a pixel unless the buffer already is 8-bit RGB) plus
    the resize, which filters one row at a time: a row of RGB f32 and the filter's
    weights, 12 x width + 8 x (width + height) + 2 MiB;
* the 224x224 output, its tensor and slack for the allocator (fixed).

Measured against the guest (the smallest memory cap under which each image still
decodes, minus a fresh guest's 68 MiB with EfficientNet-Lite0) it over-estimates by
1-10 % where the image dominates: a 16-bit RGBA PNG 4096x4096 180 vs 178 MiB, an 8-bit
RGB PNG 4096x4096 52 vs 48 MiB, a progressive 4:2:0 JPEG 3000x3000 135 vs 131 MiB, a
baseline one 84 vs 79 MiB (grey and CMYK JPEGs and 16-bit grey PNGs by 40-70 %). A
160000x1 PNG (545 bytes) is estimated at 7.6 MiB and fits in the fresh guest's free heap.
`tests/test_redteam_http.py` keeps it from becoming an under-estimate.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SIDE = 224
#: Fixed costs: the 224x224 RGB output, the f32 tensor, allocator slack.
FIXED_BYTES = SIDE * SIDE * (3 + 4 + 16) + (1 << 20)

_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}  # colour type -> decoded channels
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


@dataclass(frozen=True)
class ImageHead:
    """What the header says; `None` fields were not found (the worst case is assumed)."""

    format: str  # "png", "jpeg" or "unknown"
    width: int | None = None
    height: int | None = None
    bytes_per_pixel: int | None = None  # decoded: channels x bytes per sample
    components: int | None = None  # JPEG
    progressive: bool = False  # JPEG
    sampling: tuple[tuple[int, int], ...] = ()  # JPEG: (h, v) factors per component

    def decode_bytes(self, width: int, height: int, body: int) -> int:
        """Peak linear memory the guest's decode + resize of this image asks for.

        The guest holds its pixel buffer, then the larger of the decoder's working memory
        and (after the decoder is gone) the RGB copy plus the row-at-a-time resize.
        """
        pixels = width * height
        if self.format == "png":
            bpp = self.bytes_per_pixel or 8
            internal = 4 * (width * bpp + 1) + (1 << 20)  # four scanlines + inflate window
            rgb8 = self.bytes_per_pixel == 3  # 8-bit RGB (a palette counts as RGBA)
        else:  # JPEG, or unknown: the JPEG worst case (4 components, progressive)
            comps = self.components or 4
            bpp = 1 if comps == 1 else 3  # the decoder turns CMYK into RGB
            internal = self._jpeg_working_memory(width, height, comps)
            rgb8 = comps in (3, 4)
        buffer = pixels * bpp
        rgb = 0 if rgb8 else pixels * 3
        resize = 12 * width + 8 * (width + height) + (2 << 20)
        return body + buffer + max(internal, rgb + resize) + FIXED_BYTES

    def _jpeg_working_memory(self, width: int, height: int, comps: int) -> int:
        """jpeg-decoder's planes, output and (progressive) i16 coefficients.

        Planes are counted padded to 16 on both sides for every component, as the guest
        reserves them, or padded to whole MCUs by the header's sampling factors, whichever
        is larger; the progressive coefficients are two bytes a planed sample.
        """
        factors = self.sampling or ((1, 1),) * comps
        hmax = max(max(h for h, _ in factors), 1)
        vmax = max(max(v for _, v in factors), 1)
        padded = (-(-width // (8 * hmax)) * 8 * hmax) * (-(-height // (8 * vmax)) * 8 * vmax)
        planes = max(
            sum(padded * h * v // (hmax * vmax) for h, v in factors),
            (width + 15) * (height + 15) * comps,
        )
        if self.progressive or self.components is None:
            planes *= 3
        cmyk = width * height * 3 if comps == 4 else 0
        return planes + width * height * comps + cmyk + (1 << 20)


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
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in _SOF_MARKERS and i + 10 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            comps = data[i + 9]
            table = data[i + 10 : i + 10 + 3 * comps]
            sampling = (
                tuple((b >> 4, b & 15) for b in table[1::3]) if len(table) == 3 * comps else ()
            )
            return ImageHead(
                "jpeg",
                width,
                height,
                None,
                components=comps,
                progressive=marker in _PROGRESSIVE,
                sampling=sampling,
            )
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return ImageHead("jpeg")
        i += 2 + length
    return ImageHead("jpeg")
