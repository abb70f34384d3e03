"""`wasi-lab serve` end to end: a real server on 127.0.0.1, real guests, real HTTP.

Servers run in this process (uvicorn in a thread, ephemeral port), or without a socket
under Starlette's TestClient where only the answers matter; one test drives the CLI as a
subprocess and checks the graceful drain on SIGTERM.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.servers import HostileOrigin, run_in_thread
from wasi_lab.paths import IMAGES_DIR
from wasi_lab.pngs import make_png
from wasi_lab.predict import Classifier
from wasi_lab.server.app import create_app
from wasi_lab.server.errors import ERROR_CODES
from wasi_lab.server.launch import start_server_process
from wasi_lab.server.limits import Limits
from wasi_lab.server.urlfetch import FetchPolicy, address_problem, fetch_image

GRACE = IMAGES_DIR / "grace_hopper.jpg"
MAX_BODY = 2 * 1024 * 1024


def _code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert ERROR_CODES[body["error"]["code"]][0] == r.status_code
    return body["error"]["code"]


@pytest.fixture(scope="module")
def grace() -> bytes:
    return GRACE.read_bytes()


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory: pytest.TempPathFactory):
    """A lab server: private URLs allowed (for the loopback image server), test hooks on."""
    log = tmp_path_factory.mktemp("log") / "access.jsonl"
    limits = Limits(
        workers=2,
        max_body=MAX_BODY,
        allow_private_urls=True,
        test_hooks=True,
        loopback_only_urls=True,
        fetch_timeout=1.0,
        max_download=1024 * 1024,
        max_redirects=2,
    )
    with run_in_thread(limits, access_log=str(log)) as server:
        server.log = log  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def strict_server():
    """Defaults: private URLs refused, no test hooks."""
    with run_in_thread(Limits(workers=1), access_log=None) as server:
        yield server


@pytest.fixture(scope="module")
def images(grace: bytes):
    with HostileOrigin(
        {"grace_hopper.jpg": grace, "big.png": b"\x89PNG\r\n\x1a\n" + bytes(2 * 1024 * 1024)},
        drip_s=0.4,
    ) as srv:
        yield srv


# --------------------------------------------------------------------------- predict


def test_predict_grace_hopper_matches_the_classifier(lab_server, grace: bytes) -> None:
    r = httpx.post(
        f"{lab_server.url}/predict",
        content=grace,
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["top"][0]["label"] == "military uniform"
    assert len(body["top"]) == 5
    for key in ("queue", "image_size", "write", "decode", "infer", "total"):
        assert body["timings_ms"][key] >= 0
    alone = Classifier("efficientnet-lite0").classify(grace).to_dict()
    assert [t["index"] for t in body["top"]] == [t["index"] for t in alone["top"]]
    assert body["top"][0]["prob"] == pytest.approx(alone["top"][0]["prob"], abs=1e-6)
    assert body["mode"] == alone["mode"] == "efficientnet"


def test_query_parameters(lab_server, grace: bytes) -> None:
    r = httpx.post(f"{lab_server.url}/predict?top=1&mode=article", content=grace, timeout=60)
    assert r.status_code == 200 and len(r.json()["top"]) == 1
    assert r.json()["mode"] == "article"
    for query, code in (
        ("top=0", "bad_request"),
        ("top=abc", "bad_request"),
        ("mode=sepia", "bad_request"),
        ("model=resnet", "unknown_model"),
        ("model=/etc/passwd", "unknown_model"),
    ):
        r = httpx.post(f"{lab_server.url}/predict?{query}", content=grace, timeout=60)
        assert _code(r) == code, query


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("zero bytes", b"", "empty_body"),
        ("text", b"hello, not an image", "bad_image"),
        ("corrupt jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "bad_image"),
        ("bomb", make_png(20000, 20000), "image_too_large"),
        ("oversized body", b"\0" * (MAX_BODY + 1), "body_too_large"),
    ],
)
def test_bad_bodies_get_documented_errors(lab_server, name: str, body: bytes, code: str) -> None:
    r = httpx.post(f"{lab_server.url}/predict", content=body, timeout=60)
    assert _code(r) == code, name


def test_truncated_image(lab_server, grace: bytes) -> None:
    r = httpx.post(f"{lab_server.url}/predict", content=grace[: len(grace) // 3], timeout=60)
    assert _code(r) == "bad_image"


def test_unknown_path_and_method(lab_server) -> None:
    assert _code(httpx.get(f"{lab_server.url}/nope")) == "not_found"
    assert _code(httpx.get(f"{lab_server.url}/predict")) == "method_not_allowed"


def test_trap_hook_replaces_the_guest_and_keeps_serving(lab_server, grace: bytes) -> None:
    before = httpx.get(f"{lab_server.url}/healthz").json()["pools"]["efficientnet-lite0"]
    r = httpx.post(
        f"{lab_server.url}/predict", content=grace, headers={"X-Test-Trap": "1"}, timeout=60
    )
    assert _code(r) == "guest_trap"
    for _ in range(3):  # every guest of the pool still answers right
        r = httpx.post(f"{lab_server.url}/predict", content=grace, timeout=60)
        assert r.json()["top"][0]["label"] == "military uniform"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = httpx.get(f"{lab_server.url}/healthz").json()["pools"]["efficientnet-lite0"]
        if after["replaced"] > before["replaced"]:
            break
        time.sleep(0.1)
    assert after["replaced"] == before["replaced"] + 1
    assert after["idle"] == after["size"]


def test_trap_header_is_ignored_without_test_hooks(strict_server, grace: bytes) -> None:
    r = httpx.post(
        f"{strict_server.url}/predict", content=grace, headers={"X-Test-Trap": "1"}, timeout=60
    )
    assert r.status_code == 200


def test_deadline_interrupts_the_guest_and_it_is_replaced(grace: bytes) -> None:
    """The guest spins in wasm for 3 s (a test hook) against a 300 ms deadline: it is
    interrupted on any CPU, however fast (a real inference may finish within 80 ms)."""
    limits = Limits(workers=1, deadline_ms=300, tick_ms=5, test_hooks=True)
    with TestClient(create_app(limits), raise_server_exceptions=False) as client:
        t0 = time.monotonic()
        r = client.post("/predict", content=grace, headers={"X-Test-Spin-Ms": "3000"})
        assert time.monotonic() - t0 < 2.5  # interrupted, not waited out
        assert _code(r) == "deadline_exceeded"
        assert "interrupted" in r.json()["error"]["message"]
        # the replacement is built off the request path (it parses the model again) ...
        pool = {}
        for _ in range(300):
            pool = client.get("/healthz").json()["pools"]["efficientnet-lite0"]
            if pool["replaced"] == 1 and pool["idle"] == 1:
                break
            time.sleep(0.05)
        assert pool["replaced"] == 1 and pool["idle"] == 1
        # ... and then serves the next request (a cheap one, within the deadline)
        r = client.post("/predict", content=b"not an image")
        assert _code(r) == "bad_image"


def test_memory_cap_refuses_what_cannot_fit(grace: bytes) -> None:
    """A 3000x3000 JPEG is fine for the pixel limit but not for a 120 MiB guest."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (3000, 3000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=40)
    app = create_app(Limits(workers=1, memory_limit=120 * 1024 * 1024))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/predict", content=buf.getvalue())
        assert _code(r) == "guest_out_of_memory"
        r = client.post("/predict", content=grace)
        assert r.json()["top"][0]["label"] == "military uniform"


def test_concurrent_requests_all_right(lab_server, grace: bytes) -> None:
    coffee = (IMAGES_DIR / "coffee.png").read_bytes()
    want = {}
    for name, data in (("grace", grace), ("coffee", coffee)):
        want[name] = httpx.post(f"{lab_server.url}/predict", content=data, timeout=60).json()["top"]
    results: list[bool] = []

    def client(name: str, data: bytes) -> None:
        with httpx.Client(timeout=60) as c:
            for _ in range(3):
                results.append(
                    c.post(f"{lab_server.url}/predict", content=data).json()["top"] == want[name]
                )

    threads = [
        threading.Thread(target=client, args=pair)
        for pair in (("grace", grace), ("coffee", coffee)) * 2
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 12


# --------------------------------------------------------------------------- URL mode


def test_article_url_endpoint(lab_server, images) -> None:
    url = f"{images.url}/grace_hopper.jpg"
    r = httpx.request(
        "GET", lab_server.url, content=url, headers={"Content-Type": "text/plain"}, timeout=60
    )
    assert r.status_code == 200 and r.text == "military uniform\n"
    assert r.headers["content-type"].startswith("text/plain")
    r = httpx.post(lab_server.url, content=f"{images.url}/redirect/2/grace_hopper.jpg", timeout=60)
    assert r.text == "military uniform\n"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/redirect/3/grace_hopper.jpg", "fetch_failed"),  # one hop more than allowed
        ("/status/404", "fetch_failed"),
        ("/missing.jpg", "fetch_failed"),
        ("/slow/grace_hopper.jpg", "fetch_timeout"),
        ("/big.png", "download_too_large"),
    ],
)
def test_url_faults(lab_server, images, path: str, code: str) -> None:
    r = httpx.post(lab_server.url, content=f"{images.url}{path}", timeout=60)
    assert _code(r) == code, path


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("", "empty_body"),
        ("ftp://example.org/x.jpg", "bad_url"),
        ("not a url", "bad_url"),
        ("http://169.254.169.254/latest/meta-data/", "forbidden_address"),
    ],
)
def test_url_body_refusals(lab_server, body: str, code: str) -> None:
    assert _code(httpx.post(lab_server.url, content=body, timeout=60)) == code


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/grace_hopper.jpg",
        "http://localhost:{port}/grace_hopper.jpg",
        "http://[::1]:{port}/grace_hopper.jpg",
        "http://10.0.0.1/x.jpg",
        "http://192.168.1.1/x.jpg",
        "http://0.0.0.0:{port}/x.jpg",
        "http://[::ffff:127.0.0.1]:{port}/x.jpg",
    ],
)
def test_private_addresses_refused_without_the_flag(strict_server, images, target: str) -> None:
    port = images.url.rsplit(":", 1)[1]
    r = httpx.request(
        "GET",
        strict_server.url,
        content=target.format(port=port),
        timeout=30,
        headers={"Content-Type": "text/plain"},
    )
    assert _code(r) == "forbidden_address", target


def test_redirect_to_a_private_address_is_checked_again(images) -> None:
    """Each hop is re-resolved and re-checked: a public start cannot bounce inward."""
    import ipaddress

    from wasi_lab.server.errors import ApiError

    assert address_problem(ipaddress.ip_address("8.8.8.8"), False) is None
    assert address_problem(ipaddress.ip_address("127.0.0.1"), True) is None
    assert address_problem(ipaddress.ip_address("169.254.169.254"), True)
    assert address_problem(ipaddress.ip_address("100.64.1.1"), False)
    assert address_problem(ipaddress.ip_address("fe80::1"), False)
    assert address_problem(ipaddress.ip_address("10.1.2.3"), True, loopback_only=True)
    assert address_problem(ipaddress.ip_address("8.8.8.8"), True, loopback_only=True)
    assert address_problem(ipaddress.ip_address("127.0.0.2"), True, loopback_only=True) is None
    with pytest.raises(ApiError) as info:  # no DNS query for names in loopback-only mode
        fetch_image("http://images.example/x.jpg", FetchPolicy(loopback_only=True))
    assert info.value.code == "forbidden_address"
    # with the loopback image server, a strict policy refuses at the first hop
    with pytest.raises(ApiError) as info:
        fetch_image(f"{images.url}/redirect/1/grace_hopper.jpg", FetchPolicy())
    assert info.value.code == "forbidden_address"
    data = fetch_image(f"{images.url}/redirect/1/grace_hopper.jpg", FetchPolicy(allow_private=True))
    assert data == GRACE.read_bytes()


# --------------------------------------------------------------------------- metadata


def test_healthz_models_openapi(lab_server) -> None:
    h = httpx.get(f"{lab_server.url}/healthz").json()
    assert h["status"] == "ok" and h["module"]["epochs"] is True
    assert h["pools"]["efficientnet-lite0"]["size"] == 2
    m = httpx.get(f"{lab_server.url}/models").json()
    assert m["default"] == "efficientnet-lite0"
    assert any(x["name"] == "efficientnet-lite0" and x["loaded"] for x in m["models"])
    doc = httpx.get(f"{lab_server.url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/predict", "/", "/healthz", "/models"} <= set(doc["paths"])
    codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
    assert set(codes["code"]["enum"]) == set(ERROR_CODES)


def test_access_log_has_timings(lab_server, grace: bytes) -> None:
    httpx.post(f"{lab_server.url}/predict", content=grace, timeout=60)
    lines = [json.loads(x) for x in Path(lab_server.log).read_text().splitlines()]
    ok = [x for x in lines if x["path"] == "/predict" and x["status"] == 200]
    assert ok, lines[-3:]
    for key in ("queue", "write", "decode", "infer", "total_ms", "label"):
        assert key in ok[-1]
    errors = [x for x in lines if x.get("error")]
    assert all(x["status"] >= 400 for x in errors)


# --------------------------------------------------------------------------- the CLI


def test_cli_serve_drains_in_flight_requests_on_sigterm(tmp_path: Path, grace: bytes) -> None:
    """The request keeps its guest busy for 2 s (a test hook), so it is surely in flight
    when SIGTERM arrives 0.5 s in, whatever the machine's speed."""
    server = start_server_process("--workers", "1", "--test-hooks", log_path=tmp_path / "serve.log")
    try:
        answers: list[httpx.Response] = []
        t = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{server.url}/predict",
                    content=grace,
                    timeout=60,
                    headers={"X-Test-Spin-Ms": "2000"},
                )
            )
        )
        t.start()
        time.sleep(0.5)
        assert t.is_alive()  # still in flight
        code = server.stop()
        t.join()
    finally:
        server.stop()
    assert code == 0
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["top"][0]["label"] == "military uniform"
    logged = [json.loads(x) for x in server.log_lines() if x.startswith("{")]
    assert any(x["path"] == "/predict" and x["status"] == 200 for x in logged)


def test_pool_refuses_before_starting_when_time_is_short() -> None:
    """Not enough deadline left for a typical request: refuse early, keep the guest."""
    import asyncio

    from wasi_lab.runtime import shared_module
    from wasi_lab.server.errors import ApiError
    from wasi_lab.server.pool import GuestPool

    pool = GuestPool(shared_module(epochs=True), None, Limits(workers=1, deadline_ms=1000))
    try:
        timings: dict[str, float] = {}
        size = asyncio.run(
            pool.run(lambda w: w.guest.image_size(make_png(8, 6)), time.perf_counter(), timings)
        )
        assert size == (8, 6) and timings["queue"] >= 0
        pool.typical_ms = 5000.0
        with pytest.raises(ApiError) as info:
            asyncio.run(
                pool.run(lambda w: w.guest.image_size(make_png(8, 6)), time.perf_counter(), {})
            )
        assert info.value.code == "deadline_exceeded"
        assert "left after queueing" in info.value.message
        snap = pool.snapshot()
        assert snap["replaced"] == 0 and snap["idle"] == 1
    finally:
        pool.close()


def test_overload_is_a_503_with_retry_after(grace: bytes) -> None:
    """More waiting requests than --max-queue: refused at once, the rest still right."""
    with run_in_thread(Limits(workers=1, max_queue=1)) as server:
        answers: list[httpx.Response] = []
        lock = threading.Lock()

        def send() -> None:
            r = httpx.post(f"{server.url}/predict", content=grace, timeout=60)
            with lock:
                answers.append(r)

        threads = [threading.Thread(target=send) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    statuses = sorted(r.status_code for r in answers)
    assert 200 in statuses and 503 in statuses, statuses
    for r in answers:
        if r.status_code == 503:
            assert _code(r) == "overloaded" and r.headers["retry-after"] == "1"
        else:
            assert r.json()["top"][0]["label"] == "military uniform"
