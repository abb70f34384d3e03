"""The knobs that keep one request from hurting the others, with safe defaults.

Each limit answers a specific attack or accident: a huge body (memory on the host), a
small file that announces a huge image (a decompression bomb: memory in the guest), a
graph or image that takes forever (the deadline, enforced inside wasm by epochs), and a
guest whose allocator runs away (the store's memory limit).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import anyio
from starlette.requests import ClientDisconnect, Request

from wasi_lab.server.errors import ApiError

MiB = 1024 * 1024
#: How much of an oversized body is read and dropped before answering 413.
DRAIN_FACTOR = 4


@dataclass
class Limits:
    """Per-request limits and pool sizing; `wasi-lab serve` flags map one to one."""

    max_body: int = 16 * MiB  # bytes accepted in a request body
    max_pixels: int = 4096 * 4096  # width*height from the header, before decoding
    deadline_ms: int = 10_000  # wall time from arrival to answer (queue included)
    tick_ms: int = 10  # epoch ticker period: deadline resolution
    memory_limit: int = 512 * MiB  # per guest linear memory (store limit)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    max_queue: int = 256  # requests waiting for a guest before 503
    max_download: int = 16 * MiB  # URL mode: bytes downloaded
    fetch_timeout: float = 5.0  # URL mode: seconds for the whole download
    max_redirects: int = 3  # URL mode: redirects followed (each re-checked)
    max_fetches: int = 8  # URL mode: downloads at once (own threads)
    allow_private_urls: bool = False  # URL mode: allow loopback/private targets
    loopback_only_urls: bool = False  # URL mode: allow loopback and nothing else
    header_timeout: float = 10.0  # seconds for a request's line and headers
    body_timeout: float = 30.0  # seconds for a whole request body
    keep_alive: float = 5.0  # seconds an idle keep-alive connection is kept
    recycle_memory: int = 256 * MiB  # a guest grown past this is replaced after use
    test_hooks: bool = False  # X-Test-Trap / X-Test-Spin-Ms headers (tests)

    def deadline_ticks(self, remaining_ms: float) -> int:
        """Epoch ticks for the time left; at least one (the call traps at the next tick)."""
        return max(1, int(remaining_ms // self.tick_ms) + 1)


async def read_body(request: Request, limit: int, timeout: float = 30.0) -> bytes:
    """The body, refused with 413 as soon as it (or its Content-Length) passes `limit`.

    The size is counted as the body streams, so a chunked upload (no Content-Length) is
    capped the same way. The whole read has one `timeout` (a client that trickles its body
    gets a 408 instead of holding a connection and a handler), and a body that ends before
    its Content-Length (the client hung up) is a 400 `incomplete_body`, never a 500.
    """
    declared_text = request.headers.get("content-length")
    declared = (
        int(declared_text)
        if declared_text is not None and declared_text.isascii() and declared_text.isdigit()
        else None
    )
    if declared is not None and declared > limit:
        raise ApiError("body_too_large", f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    started = time.monotonic()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    # Keep reading (and dropping) a bounded amount so the client sees the
                    # 413 instead of a reset connection halfway through its upload.
                    if size > DRAIN_FACTOR * limit:
                        break
                    chunks.clear()
                    continue
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            "request_timeout",
            f"the body did not arrive within {timeout:g} s ({size} bytes came; --body-timeout)",
        ) from None
    except ClientDisconnect:
        raise ApiError(
            "incomplete_body",
            f"the client hung up after {size} of {declared if declared is not None else '?'} bytes",
        ) from None
    if size > limit:
        raise ApiError("body_too_large", f"the body is over the limit of {limit} bytes")
    if declared is not None and size < declared:
        raise ApiError(
            "incomplete_body",
            f"the body ended after {size} of its {declared} bytes (Content-Length)",
        )
    request.state.access["body_read_ms"] = round((time.monotonic() - started) * 1000, 3)
    return b"".join(chunks)
