"""Fuzz the URL checker: Hypothesis-generated addresses, URLs and redirect targets through
`address_problem`, `parse_url` + `resolve_checked`, and a whole `fetch_image` whose loopback
origin redirects wherever Hypothesis says.

The URL suite's socket guard is installed for the module (its fixtures are imported), so
any connect outside loopback, or any DNS query for a name, fails the example that made it,
even when the checker turned it into a tidy error. Hosts that only DNS could answer are
only ever given to the loopback-only policy, which refuses names before asking DNS.
Hypothesis runs derandomized, without a database and with bounded example counts.
"""

from __future__ import annotations

import http.server
import ipaddress
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.loopback import serve
from tests.test_redteam_url import no_escape, socket_guard  # noqa: F401 - fixtures
from wasi_lab.paths import IMAGES_DIR
from wasi_lab.server.errors import ERROR_CODES, ApiError
from wasi_lab.server.urlfetch import (
    METADATA_NETWORKS,
    FetchPolicy,
    address_problem,
    fetch_image,
    parse_url,
    resolve_checked,
)

FUZZ = settings(
    deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
#: (allow_private, loopback_only) as the server's flags set them.
POLICIES = [(False, False), (True, False), (False, True), (True, True)]
GRACE = (IMAGES_DIR / "grace_hopper.jpg").read_bytes()

# Interesting IPv4 addresses: every special range's edges, and anything at all.
SPECIAL_V4 = [
    "0.0.0.0",
    "0.1.2.3",
    "10.0.0.1",
    "100.64.0.1",
    "100.100.100.200",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "169.254.170.2",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.192",
    "192.0.2.1",
    "192.168.1.1",
    "198.18.0.1",
    "168.63.129.16",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
]
V4 = st.one_of(st.sampled_from(SPECIAL_V4).map(ipaddress.IPv4Address), st.ip_addresses(v=4))


def wrappings(v4: ipaddress.IPv4Address) -> dict[str, ipaddress.IPv6Address]:
    """The IPv6 spellings a gateway turns into a connection to `v4`."""
    n = int(v4)
    return {
        "mapped": ipaddress.IPv6Address((0xFFFF << 32) | n),
        "compatible": ipaddress.IPv6Address(n),
        "translated": ipaddress.IPv6Address((0xFFFF << 48) | n),
        "nat64": ipaddress.IPv6Address((0x64FF9B << 96) | n),
        "nat64-local/96": ipaddress.IPv6Address((0x64FF9B0001 << 80) | n),
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),
        "teredo": ipaddress.IPv6Address((0x20010000 << 96) | (n << 64) | (~n & 0xFFFFFFFF)),
    }


WRAPPED = st.builds(
    lambda v4, form: (v4, form),
    V4,
    st.sampled_from(sorted(wrappings(ipaddress.IPv4Address("1.2.3.4")))),
)
ADDRESSES = st.one_of(V4, st.ip_addresses(v=6), WRAPPED.map(lambda c: wrappings(c[0])[c[1]]))


def effective(ip: ipaddress.IPv4Address | ipaddress.IPv6Address):
    """The address a connection really goes to (IPv4-mapped is IPv4 on the wire)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_promises(ip, allow_private: bool, loopback_only: bool) -> None:
    """What README and the flags promise of an address the checker lets through."""
    problem = address_problem(ip, allow_private, loopback_only)
    real = effective(ip)
    if problem is not None:
        assert isinstance(problem, str) and problem
        return
    assert not any(real.version == n.version and real in n for n in LINK_LOCAL), ip
    assert not any(real.version == n.version and real in n for n in METADATA_NETWORKS), ip
    assert not (real.is_multicast or real.is_unspecified), ip
    if loopback_only:
        assert real.is_loopback, ip
    elif not allow_private:
        assert real.is_global, ip
        assert address_problem(ip, True) is None, "allowed strict, refused with private"
    else:
        assert real.is_global or real.is_private or real.is_loopback, ip


@settings(FUZZ, max_examples=400)
@given(ip=ADDRESSES)
def test_no_mode_lets_through_an_address_it_promises_to_refuse(ip) -> None:
    for allow_private, loopback_only in POLICIES:
        check_promises(ip, allow_private, loopback_only)


@settings(FUZZ, max_examples=300)
@given(case=WRAPPED)
def test_an_ipv4_refused_is_refused_in_every_ipv6_dress(case) -> None:
    v4, form = case
    wrapped = wrappings(v4)[form]
    if form == "compatible" and int(v4) <= 1:
        return  # ::  and ::1 are themselves, not a wrapping
    for allow_private, loopback_only in POLICIES:
        if address_problem(v4, allow_private, loopback_only) is not None:
            assert address_problem(wrapped, allow_private, loopback_only) is not None, (
                str(v4),
                form,
                str(wrapped),
                allow_private,
                loopback_only,
            )


def literal_spellings(ip) -> st.SearchStrategy[str]:
    """How a URL may write an address: bracketed IPv6 (full, compressed, upper case)."""
    if ip.version == 6:
        return st.sampled_from([f"[{ip}]", f"[{ip.exploded}]", f"[{str(ip).upper()}]"])
    return st.just(str(ip))


LITERAL_HOSTS = ADDRESSES.flatmap(literal_spellings) | st.just("localhost")
NAME_HOSTS = st.one_of(
    st.sampled_from(
        [
            "0x7f.1",
            "2130706433",
            "0177.0.0.1",
            "127.1",
            "metadata.google.internal",
            "localhost.",
            "LOCALHOST",
            "xn--nxasmq6b",
            "images.example",
            "a.b",
            "[::ffff:169.254.169.254]",
            "[fe80::1%25eth0]",
            "[127.0.0.1]",
        ]
    ),
    st.from_regex(r"\A[a-z0-9][a-z0-9.-]{0,20}\Z"),
)
PORTS = st.one_of(st.just(""), st.integers(0, 70000).map(lambda p: f":{p}"))
PATHS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)
ALLOWED_CODES = {"bad_url", "forbidden_address", "fetch_failed"}


def check_url(url: str, allow_private: bool, loopback_only: bool) -> None:
    try:
        parsed = parse_url(url)
        ip = resolve_checked(parsed.host, parsed.port, allow_private, loopback_only)
    except ApiError as exc:
        assert exc.code in ALLOWED_CODES, (url, exc)
        assert 400 <= ERROR_CODES[exc.code][0] < 600
        return
    assert 1 <= parsed.port <= 65535, url
    check_promises(ip, allow_private, loopback_only)


@settings(FUZZ, max_examples=300)
@given(
    scheme=st.sampled_from(["http", "https"]),
    host=LITERAL_HOSTS,
    port=PORTS,
    path=PATHS,
    policy=st.sampled_from(POLICIES),
)
def test_literal_urls_resolve_only_to_addresses_their_policy_allows(
    scheme, host, port, path, policy
) -> None:
    """IP literals (and localhost) need no DNS: every policy is tried."""
    check_url(f"{scheme}://{host}{port}/{path}", *policy)


@settings(FUZZ, max_examples=200)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP"]),
    host=NAME_HOSTS | LITERAL_HOSTS,
    port=PORTS,
    path=PATHS,
    allow_private=st.booleans(),
)
def test_any_host_under_loopback_only_never_asks_dns_or_leaves(
    scheme, host, port, path, allow_private
) -> None:
    """Names, odd numeric spellings and zones: refused before DNS or resolved to loopback;
    the socket guard fails the example if a query or a connection left the machine."""
    check_url(f"{scheme}://{host}{port}/{path}", allow_private, True)


# ------------------------------------------------------------------ redirects


class _Redirector(http.server.BaseHTTPRequestHandler):
    """/go answers 302 to `target`; /grace_hopper.jpg the image; the rest 404."""

    target = "/"
    lock = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/grace_hopper.jpg":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GRACE)))
            self.end_headers()
            self.wfile.write(GRACE)
            return
        if self.path == "/go":
            self.send_response(302)
            self.send_header("Location", type(self).target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def redirector() -> Iterator[str]:
    with serve(_Redirector) as url:
        yield url


REDIRECT_HOSTS = st.one_of(LITERAL_HOSTS, NAME_HOSTS)


@settings(FUZZ, max_examples=80)
@given(
    scheme=st.sampled_from(["http", "https", "ftp", ""]),
    host=REDIRECT_HOSTS,
    port=PORTS,
    path=st.sampled_from(["/grace_hopper.jpg", "/x", "/go", ""]),
    relative=st.booleans(),
)
def test_a_redirect_anywhere_is_checked_like_the_first_url(
    redirector: str, scheme, host, port, path, relative
) -> None:
    """The loopback origin redirects to a generated URL (or a relative one): under
    loopback-only the download ends as the image from 127.0.0.1 or a documented refusal,
    and the guard sees no query and no connection leave."""
    here_port = redirector.rsplit(":", 1)[1]
    if relative:
        target = path or "/"
    elif host in ("127.0.0.1", "localhost") and port == "":
        target = f"{scheme}://{host}:{here_port}{path}"  # the origin itself, by name
    else:
        target = f"{scheme}://{host}{port}{path}"
    with _Redirector.lock:
        _Redirector.target = target
        policy = FetchPolicy(timeout_s=3.0, max_redirects=2, loopback_only=True)
        try:
            body = fetch_image(f"{redirector}/go", policy)
        except ApiError as exc:
            assert exc.code in ALLOWED_CODES | {"fetch_timeout"}, (target, exc)
            return
    assert body == GRACE, target
