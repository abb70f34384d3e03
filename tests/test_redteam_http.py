"""Red team, HTTP and guest memory: slow clients, lying bodies, odd queries, images whose
decode does not fit, and guests that grew. Real servers on 127.0.0.1, real guests.

The socket guard of the URL suite is active here too (the servers run in this process).
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.servers import run_in_thread
from tests.test_redteam_url import no_escape, socket_guard  # noqa: F401 - fixtures
from wasi_lab.paths import IMAGES_DIR, REPO_ROOT
from wasi_lab.pngs import SIGNATURE, make_png, png_chunk
from wasi_lab.predict import Classifier
from wasi_lab.runtime import Guest, GuestOutOfMemoryError, GuestTrap, shared_module
from wasi_lab.server.errors import ERROR_CODES, ApiError
from wasi_lab.server.imagehead import read_head
from wasi_lab.server.launch import free_port
from wasi_lab.server.limits import Limits, MiB
from wasi_lab.server.pool import GuestPool

GRACE = (IMAGES_DIR / "grace_hopper.jpg").read_bytes()
MODEL = "efficientnet-lite0"


def _code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and ERROR_CODES[body["error"]["code"]][0] == r.status_code
    return body["error"]["code"]


def png(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A valid all-zero PNG of any bit depth and colour type (compresses to almost nothing)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    row = 1 + -(-width * channels * depth // 8)
    raw = zlib.compress(bytes(row * height), 9)
    chunks = [png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))]
    if colour == 3:
        chunks.append(png_chunk(b"PLTE", bytes(range(48))))
    return SIGNATURE + b"".join(chunks) + png_chunk(b"IDAT", raw) + png_chunk(b"IEND", b"")


def jpeg(width: int, height: int, mode: str = "RGB", **save: object) -> bytes:
    rng = np.random.default_rng(width * 7 + height)
    shape = (height, width) if mode == "L" else (height, width, len(mode))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(
        buf, format="JPEG", quality=40, **save
    )
    return buf.getvalue()


def healthz_pool(server) -> dict:
    return httpx.get(f"{server.url}/healthz", timeout=10).json()["pools"][MODEL]


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """One guest, test hooks on (X-Test-Spin-Ms keeps it busy a known time), tight reads;
    a 192 MiB cap, so a 4096x4096 16-bit RGBA PNG (~250 MiB) is refused from its header."""
    log = tmp_path_factory.mktemp("log") / "access.jsonl"
    limits = Limits(
        workers=1,
        test_hooks=True,
        max_body=256 * 1024,
        header_timeout=1.0,
        body_timeout=1.0,
        keep_alive=1.0,
        deadline_ms=20_000,
        memory_limit=192 * MiB,
    )
    with run_in_thread(limits, access_log=str(log)) as server:
        server.log = log  # type: ignore[attr-defined]
        yield server


def _raw(server, data: bytes, *, shut: bool = False, wait: float = 5.0) -> tuple[bytes, float]:
    """Send raw bytes, read until the server closes; returns (answer, seconds)."""
    host, port = server.url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        if data:
            sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks), time.monotonic() - t0


def _json_of(answer: bytes) -> dict:
    return json.loads(answer.partition(b"\r\n\r\n")[2] or b"{}")


# ------------------------------------------------------------------ slow clients


def _drip_until_answer(sock: socket.socket, limit_s: float = 10.0) -> bytes:
    """Send a byte every 0.2 s until the server answers (or closes, or `limit_s`)."""
    answer = b""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            sock.sendall(b"X")
        except OSError:
            break
        sock.settimeout(0.2)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        answer += chunk
        if not chunk or b"\r\n\r\n" in answer:
            break
    return answer


def test_a_silent_connection_gets_408_at_the_header_timeout(hooks) -> None:
    answer, took = _raw(hooks, b"")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert _json_of(answer)["error"]["code"] == "request_timeout"
    assert 0.8 < took < 3.0


def test_headers_dripped_a_byte_at_a_time_are_cut_at_the_header_timeout(hooks) -> None:
    host, port = hooks.url.removeprefix("http://").split(":")
    t0 = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        answer = _drip_until_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert time.monotonic() - t0 < 3.0


def test_a_keep_alive_connection_waits_for_its_next_head_only_so_long(hooks) -> None:
    """Every byte cancels uvicorn's idle timer; the header deadline still applies."""
    host, port = hooks.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        length = int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(first.partition(b"\r\n\r\n")[2]) < length:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = _drip_until_answer(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert time.monotonic() - t0 < 3.0


def test_a_trickled_body_gets_408_at_the_body_timeout(hooks) -> None:
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    answer, took = _raw(hooks, head + GRACE[:1000])
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert _json_of(answer)["error"]["code"] == "request_timeout"
    assert took < 3.0


def test_a_body_shorter_than_its_content_length_is_refused(hooks) -> None:
    served = healthz_pool(hooks)["served"]
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    _raw(hooks, head + GRACE[:1000], shut=True)
    time.sleep(0.3)
    records = [json.loads(x) for x in Path(hooks.log).read_text().splitlines()]
    last = [r for r in records if r.get("path") == "/predict"][-1]
    assert last["status"] == 400 and last["error"] == "incomplete_body", last
    assert healthz_pool(hooks)["served"] == served  # nothing reached a guest


def test_a_chunked_upload_is_capped_while_it_streams(hooks) -> None:
    """No Content-Length to refuse up front; a JPEG ignores trailing bytes, so without the
    streamed cap this would be a 200."""
    body = GRACE + bytes(300 * 1024)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 32 * 1024):
            yield body[i : i + 32 * 1024]

    r = httpx.post(f"{hooks.url}/predict", content=chunks(), timeout=30)
    assert _code(r) == "body_too_large"
    r = httpx.post(f"{hooks.url}/predict", content=iter([GRACE]), timeout=30)
    assert r.status_code == 200 and r.json()["top"][0]["label"] == "military uniform"


# ------------------------------------------------------------------ queries


@pytest.mark.parametrize(
    "top",
    [
        "\u0665",
        "\uff15",
        " 5",
        "5 ",
        "+5",
        "5_0",
        "\u00b2",
        "5.0",
        "-1",
        "0x5",
        "1e1",
        "",
        "9" * 40,
    ],
)
def test_top_takes_ascii_digits_only(hooks, top: str) -> None:
    r = httpx.post(f"{hooks.url}/predict", params={"top": top}, content=GRACE, timeout=30)
    assert _code(r) == "bad_request", top


def test_top_with_leading_zeros_is_still_a_number(hooks) -> None:
    r = httpx.post(f"{hooks.url}/predict?top=03", content=GRACE, timeout=30)
    assert r.status_code == 200 and len(r.json()["top"]) == 3


# ------------------------------------------------------------------ cheap refusals


def test_cheap_refusals_do_not_wait_behind_a_busy_guest(hooks) -> None:
    busy = threading.Thread(
        target=lambda: httpx.post(
            f"{hooks.url}/predict", content=GRACE, headers={"X-Test-Spin-Ms": "8000"}, timeout=60
        )
    )
    busy.start()
    time.sleep(0.4)
    try:
        cases = [
            ("/predict", b"\0" * (300 * 1024), "body_too_large"),
            ("/predict", make_png(20000, 20000), "image_too_large"),
            ("/predict", png(4096, 4096, 16, 6), "guest_out_of_memory"),
            ("/predict", b"", "empty_body"),
            ("/predict?top=abc", GRACE, "bad_request"),
            ("/", b"http://[::1/", "bad_url"),
        ]
        for path, body, code in cases:
            t0 = time.monotonic()
            r = httpx.post(f"{hooks.url}{path}", content=body, timeout=30)
            took = time.monotonic() - t0
            assert _code(r) == code, (path, code)
            assert took < 3.0, f"{code} waited {took:.1f} s for the busy guest (8 s)"
        assert healthz_pool(hooks)["busy"] == 1  # the guest really was busy all along
    finally:
        busy.join()


# ------------------------------------------------------------------ the latency estimate


def test_the_typical_latency_estimate_recovers_after_refusing() -> None:
    """One slow success must not make every later request 504: refusals decay it."""
    pool = GuestPool(shared_module(epochs=True), None, Limits(workers=1, deadline_ms=1000))
    try:
        pool.typical_ms = 5000.0  # as if one request had taken 5 s
        outcomes = []
        for _ in range(30):
            try:
                asyncio.run(
                    pool.run(lambda w: w.guest.image_size(make_png(8, 6)), time.perf_counter(), {})
                )
                outcomes.append("ok")
                break
            except ApiError as exc:
                assert exc.code == "deadline_exceeded"
                outcomes.append("refused")
        assert outcomes[0] == "refused" and outcomes[-1] == "ok", outcomes
        snap = pool.snapshot()
        assert snap["refused_early"] == len(outcomes) - 1 and snap["replaced"] == 0
        assert pool.typical_ms < 1000
    finally:
        pool.close()


# ------------------------------------------------------------------ guest memory


@pytest.fixture(scope="module")
def base_bytes() -> int:
    """Linear memory of a fresh guest with the default model resident."""
    guest = Guest(shared_module(epochs=True))
    Classifier(MODEL, module=guest.compiled, guest=guest)
    return guest.pages * 65536


GENERATED = {
    "png rgb8": lambda: png(1500, 1000),
    "png rgba16": lambda: png(1200, 1000, 16, 6),
    "png gray16": lambda: png(1500, 1000, 16, 0),
    "png gray-alpha16": lambda: png(1000, 1000, 16, 4),
    "png palette": lambda: png(1500, 1000, 8, 3),
    "png 1-bit gray": lambda: png(2000, 1000, 1, 0),
    "png wide": lambda: png(30000, 2),
    "png tall": lambda: png(2, 200000),
    "png 160000x1": lambda: png(160000, 1),
    "png rgb8 big": lambda: png(4096, 4096),
    "png rgba16 big": lambda: png(4096, 4096, 16, 6),
    "jpeg 4:2:0": lambda: jpeg(1500, 1000),
    "jpeg 4:4:4": lambda: jpeg(1500, 1000, subsampling=0),
    "jpeg progressive": lambda: jpeg(1500, 1000, progressive=True),
    "jpeg progressive big": lambda: jpeg(3000, 3000, progressive=True),
    "jpeg 4:2:0 big": lambda: jpeg(3000, 3000),
    "jpeg gray": lambda: jpeg(1500, 1000, "L"),
    "jpeg cmyk": lambda: jpeg(1000, 1000, "CMYK"),
    "jpeg wide": lambda: jpeg(20000, 8),
}


@pytest.mark.parametrize("kind", sorted(GENERATED))
def test_the_memory_estimate_is_never_an_under_estimate(kind: str, base_bytes: int) -> None:
    """A guest capped at (fresh memory + the estimate) decodes and classifies the image."""
    data = GENERATED[kind]()
    head = read_head(data)
    assert head.width and head.height, kind
    need = head.decode_bytes(head.width, head.height, len(data))
    guest = Guest(shared_module(epochs=True), memory_limit=base_bytes + need)
    classifier = Classifier(MODEL, module=guest.compiled, guest=guest)
    try:
        classifier.classify(data)
    except (GuestTrap, GuestOutOfMemoryError) as exc:
        pytest.fail(f"{kind}: estimated {need >> 20} MiB, yet {exc}")
    grown = guest.pages * 65536 - base_bytes
    assert grown <= need, (kind, grown, need)


def test_16_bit_rgba_is_refused_by_the_estimate_not_by_a_trap() -> None:
    """8 bytes a pixel decoded (+3 for the RGB copy): 2800x2800 needs ~87 MiB on top of the
    ~68 MiB a guest starts with, more than a 128 MiB cap."""
    data = png(2800, 2800, 16, 6)
    with run_in_thread(Limits(workers=1, memory_limit=128 * MiB)) as server:
        r = httpx.post(f"{server.url}/predict", content=data, timeout=60)
        assert _code(r) == "guest_out_of_memory", r.text
        assert "on top of" in r.json()["error"]["message"]  # the server's check, not a trap
        r = httpx.post(f"{server.url}/predict", content=GRACE, timeout=60)
        assert r.json()["top"][0]["label"] == "military uniform"
        assert healthz_pool(server)["replaced"] == 0


def test_a_wide_png_is_answered_without_a_big_resize_buffer() -> None:
    """545 bytes, 160000x1: the guest resizes a row at a time, so this needs a few MiB (a
    whole-image resize would want 160000 x 224 x 16 bytes, 547 MiB, past the 512 MiB cap)."""
    data = png(160000, 1)
    assert len(data) < 1000
    with run_in_thread(Limits(workers=1)) as server:
        r = httpx.post(f"{server.url}/predict", content=data, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["image_size"] == [160000, 1]
        pool = healthz_pool(server)
        assert pool["replaced"] == 0 and pool["recycled"] == 0, pool
        assert pool["guest_mib"] <= pool["base_mib"] + 16, pool


def test_memory_comes_back_and_the_same_request_gets_the_same_answer(base_bytes: int) -> None:
    """A 4096x4096 16-bit RGBA PNG grows a guest by ~178 MiB, past a ceiling 64 MiB above a
    fresh guest; it is replaced after answering, an 8-bit 4096x4096 PNG (~48 MiB) is then
    answered by a fresh guest, and the first request again gets the same answer."""
    big, square = png(4096, 4096, 16, 6), png(4096, 4096)
    ceiling = base_bytes + 64 * MiB
    with run_in_thread(Limits(workers=1, recycle_memory=ceiling)) as server:
        first = httpx.post(f"{server.url}/predict", content=big, timeout=120)
        assert first.status_code == 200, first.text
        r = httpx.post(f"{server.url}/predict", content=square, timeout=120)
        assert r.status_code == 200, r.text
        again = httpx.post(f"{server.url}/predict", content=big, timeout=120)
        assert again.status_code == 200, again.text
        assert again.json()["top"] == first.json()["top"]
        deadline = time.monotonic() + 60
        pool = healthz_pool(server)
        while (pool["idle"] != 1 or pool["replacing"]) and time.monotonic() < deadline:
            time.sleep(0.1)
            pool = healthz_pool(server)
        assert pool["recycled"] == 2, pool  # after each big request, not after the square
        assert pool["guest_mib"] <= ceiling / MiB, pool  # back under the ceiling
        assert pool["lost"] == 0 and pool["failed"] == 0


@settings(
    max_examples=12,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(
    width=st.integers(1, 3000),
    height=st.integers(1, 3000),
    form=st.sampled_from(
        [(1, 0), (8, 0), (16, 0), (8, 2), (16, 2), (8, 3), (8, 4), (16, 4), (8, 6), (16, 6)]
    ),
)
def test_any_png_header_gets_an_answer_or_the_documented_413(
    hooks_small, width: int, height: int, form
) -> None:
    depth, colour = form
    r = httpx.post(
        f"{hooks_small.url}/predict", content=png(width, height, depth, colour), timeout=60
    )
    if r.status_code != 200:
        assert _code(r) in ("guest_out_of_memory", "image_too_large"), r.text
    assert healthz_pool(hooks_small)["replaced"] == 0  # no guest ever trapped


def test_a_progressive_jpeg_cut_in_its_last_scan_is_422_not_a_label(hooks_small) -> None:
    """Cut inside the last progressive scan (every scan header present), with and without
    EOI: 422 bad_image from the guest's scan walk, never a 200 labelling zero-padded
    coefficients; the whole file is a 200 and no guest was replaced."""
    photo = np.asarray(Image.open(IMAGES_DIR / "grace_hopper.jpg").convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=85, progressive=True)
    full = buf.getvalue()
    url = f"{hooks_small.url}/predict"
    r = httpx.post(url, content=full, timeout=60)
    assert r.status_code == 200 and r.json()["top"][0]["label"] == "military uniform", r.text
    last, end = full.rindex(b"\xff\xda"), len(full) - 2
    for n in sorted({last + 40, (last + end) // 2, end - 50, end - 7, end - 1}):
        for tail in (b"\xff\xd9", b""):
            r = httpx.post(url, content=full[:n] + tail, timeout=60)
            assert r.status_code == 422 and _code(r) == "bad_image", (n, tail, r.text)
            assert "truncated" in r.json()["error"]["message"]
    assert healthz_pool(hooks_small)["replaced"] == 0


@pytest.fixture(scope="module")
def hooks_small() -> Iterator:
    """A small memory cap, so generated headers land on both sides of it."""
    with run_in_thread(
        Limits(workers=1, memory_limit=128 * MiB, max_pixels=8_000_000), access_log=None
    ) as server:
        yield server


# ------------------------------------------------------------------ the CLI


def test_serve_on_a_busy_port_says_so_in_one_line_and_fails() -> None:
    port = free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen(1)
        proc = subprocess.run(
            [sys.executable, "-m", "wasi_lab", "serve", "--port", str(port), "--workers", "1"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode != 0
    assert "Listening" not in proc.stdout
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "already in use" in lines[0] and "--port" in lines[0], lines


def test_read_body_refuses_a_stream_that_ends_short_of_its_content_length() -> None:
    """h11 already stops most short bodies (a disconnect); the check behind it still holds
    for a server that hands the app a body that simply ends early."""
    from starlette.requests import Request

    from wasi_lab.server.limits import read_body

    async def receive() -> dict:
        return {"type": "http.request", "body": b"abc", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "query_string": b"",
        "headers": [(b"content-length", b"10")],
        "state": {"access": {}},
    }
    with pytest.raises(ApiError) as info:
        asyncio.run(read_body(Request(scope, receive), 1000))
    assert info.value.code == "incomplete_body" and "3 of its 10" in info.value.message
