"""Red team, URL mode: a hostile origin on 127.0.0.1 and every trick that should not work.

A socket guard is installed for the whole module (this process runs the servers too):
any connect outside 127.0.0.0/8 and ::1, or a DNS query for a name other than
localhost, raises *and* fails the test that caused it, even if the server turned the
error into a tidy `fetch_failed`. So a broken address check shows up as a failing test,
not as a packet to 169.254.169.254.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.servers import HostileOrigin, run_in_thread
from wasi_lab.paths import IMAGES_DIR
from wasi_lab.server.errors import ERROR_CODES, ApiError
from wasi_lab.server.launch import start_server_process
from wasi_lab.server.limits import Limits
from wasi_lab.server.socketguard import ENV_VAR, MARKER, install_guard
from wasi_lab.server.urlfetch import (
    FetchPolicy,
    address_problem,
    embedded_ipv4,
    fetch_image,
    parse_url,
)

GRACE = (IMAGES_DIR / "grace_hopper.jpg").read_bytes()
VIOLATIONS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def socket_guard() -> Iterator[list[str]]:
    """Installed before the module's servers start, removed after they stop."""
    undo = install_guard(VIOLATIONS.append)
    try:
        yield VIOLATIONS
    finally:
        undo()


@pytest.fixture(autouse=True)
def no_escape(socket_guard: list[str]) -> Iterator[None]:
    """Fail the test that made a connection (or a DNS query) leave loopback."""
    before = len(socket_guard)
    yield
    new = socket_guard[before:]
    assert not new, f"the test tried to leave loopback: {new}"


def _code(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and ERROR_CODES[body["error"]["code"]][0] == r.status_code
    return body["error"]["code"]


@pytest.fixture(scope="module")
def origin() -> Iterator[HostileOrigin]:
    files = {"grace_hopper.jpg": GRACE, "big.png": b"\x89PNG\r\n\x1a\n" + bytes(3 << 20)}
    with HostileOrigin(files, drip_s=0.2, drip_limit_s=20) as srv:
        yield srv


@pytest.fixture(scope="module")
def access_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file for every server of the module (the access logger is per process)."""
    return tmp_path_factory.mktemp("log") / "access.jsonl"


@pytest.fixture(scope="module")
def strict(access_log: Path) -> Iterator:
    """Defaults: private URLs refused."""
    with run_in_thread(Limits(workers=1), access_log=str(access_log)) as server:
        yield server


@pytest.fixture(scope="module")
def lab(access_log: Path) -> Iterator:
    """--allow-private-urls (not loopback-only): what a lab runs; metadata must stay out."""
    limits = Limits(
        workers=1,
        allow_private_urls=True,
        fetch_timeout=1.0,
        max_download=1 << 20,
        max_redirects=3,
        max_fetches=4,
    )
    with run_in_thread(limits, access_log=str(access_log)) as server:
        server.log = access_log  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def loopback_only(access_log: Path) -> Iterator:
    """--loopback-only-urls alone: loopback allowed, nothing else."""
    with run_in_thread(
        Limits(workers=1, loopback_only_urls=True, fetch_timeout=1.0), access_log=str(access_log)
    ) as server:
        yield server


def _ask(server, body: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(server.url, content=body.encode("utf-8", "surrogatepass"), timeout=timeout)


# ------------------------------------------------------------------ IPv6 forms carrying IPv4

FORBIDDEN_V4 = [
    "169.254.169.254",
    "169.254.170.2",
    "10.0.0.1",
    "192.168.1.1",
    "127.0.0.1",
    "100.100.100.200",
    "168.63.129.16",
]


def ipv6_forms(v4: str) -> dict[str, str]:
    """Every IPv6 spelling that carries `v4` (RFC 4291, 6052, 3056, 4380)."""
    n = int(ipaddress.IPv4Address(v4))
    hi, lo = n >> 16, n & 0xFFFF
    return {
        "mapped": f"::ffff:{v4}",
        "compatible": f"::{v4}",
        "translated": f"::ffff:0:{v4}",
        "nat64": f"64:ff9b::{v4}",
        "nat64-local/96": f"64:ff9b:1::{v4}",
        "nat64-local/48": str(
            ipaddress.IPv6Address((0x0064FF9B0001 << 80) | (hi << 64) | (lo << 40))
        ),
        "nat64-local/64": str(ipaddress.IPv6Address((0x0064FF9B0001 << 80) | (n << 24))),
        "6to4": str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1)),
        "teredo-client": str(
            ipaddress.IPv6Address(
                (0x20010000 << 96)
                | (0x4136E378 << 64)
                | (0x8000 << 48)
                | (0x63BF << 32)
                | (n ^ 0xFFFFFFFF)
            )
        ),
        "teredo-server": str(
            ipaddress.IPv6Address(
                (0x20010000 << 96) | (n << 64) | (0x8000 << 48) | (0x63BF << 32) | 0x3FFFFDD2
            )
        ),
    }


@pytest.mark.parametrize("v4", FORBIDDEN_V4)
def test_every_ipv6_form_is_judged_by_the_ipv4_it_carries(v4: str) -> None:
    for form, text in ipv6_forms(v4).items():
        ip = ipaddress.ip_address(text)
        assert ipaddress.IPv4Address(v4) in embedded_ipv4(ip), (form, text)
        assert address_problem(ip, allow_private=False), (form, text)
        if ipaddress.IPv4Address(v4).is_link_local or v4 in ("100.100.100.200", "168.63.129.16"):
            assert address_problem(ip, allow_private=True), (form, text)
        assert (
            address_problem(ip, allow_private=True, loopback_only=True)
            or form == "mapped"
            and v4 == "127.0.0.1"
        ), (form, text)


def test_public_ipv4_inside_ipv6_is_not_refused_for_the_wrapping() -> None:
    for form, text in ipv6_forms("8.8.8.8").items():
        if form.startswith(("teredo", "nat64-local")):
            # Teredo: Python files 2001::/23 as private (refused anyway); local-use NAT64:
            # every layout is judged, and some read 0.0.0.0 here (refused on purpose)
            continue
        assert address_problem(ipaddress.ip_address(text), False) is None, (form, text)


@pytest.mark.parametrize("form", sorted(ipv6_forms("169.254.169.254")))
def test_server_refuses_metadata_in_ipv6_dress_without_connecting(strict, lab, form) -> None:
    """End to end: 403 from both servers, and the guard saw no connect attempt."""
    text = ipv6_forms("169.254.169.254")[form]
    for server in (strict, lab):
        r = _ask(server, f"http://[{text}]/latest/meta-data/")
        assert _code(r) == "forbidden_address", (form, r.text)
        assert "169.254.169.254" in r.json()["error"]["message"]


@pytest.mark.parametrize("form", ["mapped", "translated", "nat64", "6to4", "compatible"])
def test_private_in_ipv6_dress_refused_by_the_strict_server(strict, form) -> None:
    r = _ask(strict, f"http://[{ipv6_forms('10.0.0.1')[form]}]/x.jpg")
    assert _code(r) == "forbidden_address", r.text


# ------------------------------------------------------------------ metadata under the flag

METADATA = [
    "169.254.169.254",
    "169.254.170.2",
    "169.254.0.23",
    "169.254.1.1",
    "[fd00:ec2::254]",
    "[fd00:ec2::23]",
    "[fe80::1]",
    "[fe80::a9fe:a9fe]",
    "[fd20:ce::254]",
    "168.63.129.16",
    "100.100.100.200",
    "192.0.0.192",
]


@pytest.mark.parametrize("host", METADATA)
def test_metadata_and_credentials_refused_even_with_allow_private(lab, host) -> None:
    r = _ask(lab, f"http://{host}/latest/meta-data/iam/security-credentials/")
    assert _code(r) == "forbidden_address", r.text
    message = r.json()["error"]["message"]
    assert "metadata" in message
    assert "start it with" not in message  # it runs with the flag: do not advise it


def test_refusals_never_advise_a_flag_the_server_already_has(strict, lab, loopback_only) -> None:
    r = _ask(strict, "http://10.1.2.3/x.jpg")
    assert "--allow-private-urls" in r.json()["error"]["message"]
    for server, body in (
        (lab, "http://0.0.0.0/x.jpg"),
        (lab, "http://[ff02::1]/x.jpg"),
        (loopback_only, "http://10.1.2.3/x.jpg"),
        (loopback_only, "http://169.254.169.254/"),
    ):
        r = _ask(server, body)
        assert _code(r) == "forbidden_address", (body, r.text)
        assert "start it with" not in r.json()["error"]["message"], body


# ------------------------------------------------------------------ malformed URLs

MALFORMED = [
    "http://[::1/",
    "http://]/",
    "http://[/",
    "http://[127.0.0.1]/",
    "http://[::ffff:127.0.0.1%25lo]/",
    "http://[v1.fe]/",
    "http://:80/",
    "http://127.0.0.1:0/grace_hopper.jpg",
    "http://[::1]:0/",
    "http://localhost:00/",
    "http://host:99999/",
    "http://host:-1/",
    "http://host:8o/",
    "http://a b/",
    "http://h\x00/",
    "http:///x",
    "http://@/",
    "http://-bad-/",
    "http://a..b/",
    "http://\u2603\u0000/",
    "http://" + "a" * 300,
    "https://[::1]]/",
    "http://[[::1]]/",
    "javascript:alert(1)",
    "//127.0.0.1/",
    "file:///etc/passwd",
    "http:\\\\127.0.0.1\\x",
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_url_bodies_are_400_bad_url(loopback_only, body: str) -> None:
    r = _ask(loopback_only, body)
    assert _code(r) == "bad_url", (body, r.text)


def test_explicit_port_zero_is_refused_not_fetched_from_80() -> None:
    with pytest.raises(ApiError) as info:
        parse_url("http://127.0.0.1:0/x.jpg")
    assert info.value.code == "bad_url" and "port 0" in info.value.message
    assert parse_url("http://127.0.0.1/x.jpg").port == 80
    assert parse_url("https://[::1]/x.jpg").port == 443


URL_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))
HOSTS = st.one_of(
    st.sampled_from(
        [
            "127.0.0.1",
            "localhost",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "0x7f.1",
            "2130706433",
            "[64:ff9b::a9fe:a9fe]",
            "169.254.169.254",
            "[",
            "]",
            "[127.0.0.1]",
            "",
            "a" * 70,
            "xn--",
            "images.example",
        ]
    ),
    st.text(URL_CHARS, max_size=20),
    st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
)
PORTS = st.one_of(
    st.just(""),
    st.integers(-2, 70000).map(lambda p: f":{p}"),
    st.text(URL_CHARS, max_size=6).map(lambda t: f":{t}"),
)


@settings(max_examples=600, deadline=None, database=None, derandomize=True)
@given(
    scheme=st.sampled_from(["http", "https", "ftp", "HTTP", "gopher", ""]),
    userinfo=st.one_of(st.just(""), st.text(URL_CHARS, max_size=8).map(lambda t: t + "@")),
    host=HOSTS,
    port=PORTS,
    path=st.text(URL_CHARS, max_size=30),
)
def test_parse_url_never_crashes_and_only_passes_clean_urls(
    scheme, userinfo, host, port, path
) -> None:
    url = f"{scheme}://{userinfo}{host}{port}/{path}"
    try:
        parsed = parse_url(url)
    except ApiError as exc:
        assert exc.code == "bad_url"
        return
    assert parsed.scheme in ("http", "https")
    assert 1 <= parsed.port <= 65535
    assert parsed.host and parsed.host.isascii()
    assert all(0x21 <= ord(c) < 0x7F for c in parsed.target + parsed.netloc)
    try:
        ip = ipaddress.ip_address(parsed.host)
    except ValueError:
        assert all(c.isalnum() or c in "-._" for c in parsed.host)
    else:
        assert ip.version == 6 or "[" not in host


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(
    body=st.one_of(
        st.text(URL_CHARS, max_size=60),
        st.builds(lambda h, p: f"http://{h}{p}/x.jpg", HOSTS, PORTS),
    )
)
def test_any_url_body_gets_a_documented_4xx_or_5xx_never_internal_error(
    loopback_only, body
) -> None:
    r = _ask(loopback_only, body, timeout=30)
    if r.status_code == 200:
        return
    code = _code(r)
    assert code != "internal_error", (body, r.text)
    assert code in {
        "empty_body",
        "bad_url",
        "forbidden_address",
        "fetch_failed",
        "fetch_timeout",
        "bad_image",
        "download_too_large",
    }, (body, code)


# ------------------------------------------------------------------ loopback-only alone


def test_loopback_only_alone_allows_loopback_and_nothing_else(loopback_only, origin) -> None:
    r = _ask(loopback_only, f"{origin.url}/grace_hopper.jpg")
    assert r.status_code == 200 and r.text == "military uniform\n", r.text
    port = origin.url.rsplit(":", 1)[1]
    r = _ask(loopback_only, f"http://[::ffff:127.0.0.1]:{port}/grace_hopper.jpg")
    assert r.status_code == 200, r.text
    for body in (
        "http://10.0.0.1/x.jpg",
        "http://images.example/x.jpg",
        f"http://[64:ff9b::7f00:1]:{port}/grace_hopper.jpg",
    ):
        assert _code(_ask(loopback_only, body)) == "forbidden_address", body


# ------------------------------------------------------------------ the whole download


@pytest.mark.parametrize("route", ["drip-status", "drip-headers", "drip-body"])
def test_fetch_timeout_bounds_the_whole_download(lab, origin, route: str) -> None:
    """A byte every 0.2 s never trips a per-read timeout; the deadline cuts it at 1 s."""
    t0 = time.monotonic()
    r = _ask(lab, f"{origin.url}/{route}/grace_hopper.jpg")
    took = time.monotonic() - t0
    assert _code(r) == "fetch_timeout", r.text
    assert took < 1.0 + 1.5, f"{route}: answered after {took:.1f} s with --fetch-timeout 1"


@pytest.mark.parametrize("route", ["chunked", "unsized"])
def test_size_cap_counts_streamed_bodies(lab, origin, route: str) -> None:
    """No Content-Length to refuse up front: the cap is enforced while streaming."""
    r = _ask(lab, f"{origin.url}/{route}/big.png")
    assert _code(r) == "download_too_large", r.text
    r = _ask(lab, f"{origin.url}/{route}/grace_hopper.jpg")
    assert r.status_code == 200 and r.text == "military uniform\n", r.text


def test_slow_origins_do_not_starve_other_requests(lab, origin) -> None:
    """45 dripping URLs: /predict, /healthz and a normal URL are still answered promptly."""
    answers: list[tuple[int, float]] = []
    lock = threading.Lock()
    client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=100))

    def drip() -> None:
        t0 = time.monotonic()
        r = client.post(lab.url, content=f"{origin.url}/drip-body/grace_hopper.jpg")
        with lock:
            answers.append((r.status_code, time.monotonic() - t0))

    def named(prefix: str) -> int:
        return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))

    state = lab.server.config.app.state.server  # the app's ServerState

    def slots_free() -> int:
        return state.fetch_slots._value if state.fetch_slots is not None else 4

    generic_before = named("AnyIO worker")
    threads = [threading.Thread(target=drip) for _ in range(45)]
    for t in threads:
        t.start()
    end = time.monotonic() + 8
    while (
        slots_free() > 0 and named("AnyIO worker") - generic_before < 5 and time.monotonic() < end
    ):
        time.sleep(0.05)
    time.sleep(0.2)
    # the downloads run on their own 4 threads (--max-fetches), not on the shared pool
    assert slots_free() == 0
    assert len(state.fetch_executor._threads) <= 4
    assert named("AnyIO worker") - generic_before < 5
    t0 = time.monotonic()
    assert httpx.get(f"{lab.url}/healthz", timeout=10).status_code == 200
    r = httpx.post(f"{lab.url}/predict", content=GRACE, timeout=30)
    assert r.status_code == 200 and time.monotonic() - t0 < 10, r.text
    t0 = time.monotonic()
    r = _ask(lab, f"{origin.url}/grace_hopper.jpg")
    took = time.monotonic() - t0
    assert r.status_code in (200, 503), r.text  # a slot, or a prompt "overloaded"
    # bounded by --fetch-timeout (1 s) plus scheduling on a busy 2-core machine; without
    # fetch slots of its own it waits behind the drippers' 20 s
    assert took < 10, f"a normal URL waited {took:.1f} s behind the drippers"
    for t in threads:
        t.join()
    client.close()
    assert len(answers) == 45
    assert {status for status, _ in answers} <= {503, 504}
    assert max(took for _, took in answers) < 15  # the origin drips for 20 s


# ------------------------------------------------------------------ redirects and rebinding


@pytest.mark.parametrize("hops", [0, 1, 2])
@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[fe80::1]/",
        "http://168.63.129.16/",
    ],
)
def test_every_redirect_hop_is_checked_again(lab, origin, hops: int, target: str) -> None:
    """The first hops are allowed (loopback under --allow-private-urls); the last is not."""
    r = _ask(lab, f"{origin.url}/chain/{hops}?to={quote(target, safe='')}")
    assert _code(r) == "forbidden_address", r.text


def test_redirect_to_a_private_address_refused_in_loopback_only(loopback_only, origin) -> None:
    r = _ask(loopback_only, f"{origin.url}/chain/2?to={quote('http://10.0.0.1/', safe='')}")
    assert _code(r) == "forbidden_address", r.text


def test_connects_to_the_checked_address_not_the_name(
    origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers loopback once, then an outside address."""
    port = int(origin.url.rsplit(":", 1)[1])
    asked: list[str] = []
    previous = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "rebind.test":
            asked.append(host)
            address = "127.0.0.1" if len(asked) == 1 else "10.9.9.9"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return previous(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    origin.hosts.clear()
    data = fetch_image(
        f"http://rebind.test:{port}/grace_hopper.jpg", FetchPolicy(allow_private=True)
    )
    assert data == GRACE
    assert asked == ["rebind.test"]  # resolved once, by the check
    assert origin.hosts == [f"rebind.test:{port}"]  # the Host header stays the URL's


# ------------------------------------------------------------------ logs


def test_url_credentials_are_redacted_in_the_access_log(lab, origin) -> None:
    base = origin.url.replace("http://", "http://alice:s3cret-pw@")
    r = _ask(lab, f"{base}/grace_hopper.jpg")
    assert r.status_code == 200, r.text
    r = _ask(lab, f"{base}/status/404")
    assert "s3cret" not in r.text
    text = Path(lab.log).read_text()
    assert "s3cret" not in text and "alice" not in text
    urls = [json.loads(x).get("url", "") for x in text.splitlines()]
    assert any(u.startswith("http://***@127.0.0.1") for u in urls), urls[-3:]


# ------------------------------------------------------------------ a subprocess server


def test_subprocess_server_runs_with_the_guard(
    tmp_path: Path, origin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wasi-lab serve` with the guard installed: refusals never connect; the control
    request (a private address the flag allows) shows the guard is really there."""
    monkeypatch.setitem(os.environ, ENV_VAR, "1")
    log = tmp_path / "serve.log"
    with start_server_process(
        "--workers",
        "1",
        "--allow-private-urls",
        "--test-hooks",
        "--fetch-timeout",
        "1",
        log_path=log,
    ) as server:
        for body in (
            "http://169.254.169.254/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://[::a9fe:a9fe]/",
            f"{origin.url}/chain/2?to={quote('http://[fd00:ec2::254]/', safe='')}",
        ):
            assert _code(_ask(server, body)) == "forbidden_address", body
        r = _ask(server, f"{origin.url}/grace_hopper.jpg")
        assert r.text == "military uniform\n"
        assert MARKER not in log.read_text()
        r = _ask(server, "http://192.168.77.1/control.jpg")  # allowed by the flag ...
        assert _code(r) == "fetch_failed"
        time.sleep(0.2)
        assert f"{MARKER}: create_connection to ('192.168.77.1'" in log.read_text()  # ... guarded
