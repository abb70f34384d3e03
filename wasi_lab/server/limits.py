"""The knobs that keep one request from hurting the others, with safe defaults.

Each limit answers a specific attack or accident: a huge body (memory on the host), a
small file that announces a huge image (a decompression bomb: memory in the guest), a
graph or image that takes forever (the deadline, enforced inside wasm by epochs), and a
guest whose allocator runs away (the store's memory limit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from starlette.requests import Request

from wasi_lab.server.errors import ApiError

MiB = 1024 * 1024
#: How much of an oversized body is read and dropped before answering 413.
DRAIN_FACTOR = 4


@dataclass
class Limits:
    """Per-request limits and pool sizing; `wasi-lab serve` flags map one to one."""

    max_body: int = 16 * MiB              # bytes accepted in a request body
    max_pixels: int = 4096 * 4096         # width*height from the header, before decoding
    deadline_ms: int = 10_000             # wall time from arrival to answer (queue included)
    tick_ms: int = 10                     # epoch ticker period: deadline resolution
    memory_limit: int = 512 * MiB         # per guest linear memory (store limit)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_queue: int = 256                  # requests waiting for a guest before 503
    max_download: int = 16 * MiB          # URL mode: bytes downloaded
    fetch_timeout: float = 5.0            # URL mode: seconds for the whole download
    max_redirects: int = 3                # URL mode: redirects followed (each re-checked)
    allow_private_urls: bool = False      # URL mode: allow loopback/private targets
    loopback_only_urls: bool = False      # URL mode: refuse everything but loopback
    test_hooks: bool = False              # X-Test-Trap header forces a guest trap

    def deadline_ticks(self, remaining_ms: float) -> int:
        """Epoch ticks for the time left; at least one (the call traps at the next tick)."""
        return max(1, int(remaining_ms // self.tick_ms) + 1)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it (or its Content-Length) passes `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError("body_too_large",
                       f"the body is {int(declared)} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            # Keep reading (and dropping) a bounded amount so the client sees the 413
            # instead of a reset connection halfway through its upload.
            if size > DRAIN_FACTOR * limit:
                break
            chunks.clear()
            continue
        chunks.append(chunk)
    if size > limit:
        raise ApiError("body_too_large", f"the body is over the limit of {limit} bytes")
    return b"".join(chunks)
