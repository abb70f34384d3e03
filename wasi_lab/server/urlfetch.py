"""Download an image from a URL without becoming a proxy into the private network.

The article's server fetched whatever URL it was given. A server that does that can be
asked for `http://169.254.169.254/` (cloud credentials) or `http://127.0.0.1:6379/`. So:

* only http and https with a well-formed host and a port other than 0; anything that does
  not parse is a 400 `bad_url`, never a crash;
* the host is resolved once, and *every* address it resolves to is checked
  (`address_problem`): loopback, private, link-local, metadata, multicast, reserved ...
  are refused, and an IPv6 address that carries an IPv4 address (IPv4-mapped,
  -compatible, -translated, NAT64, 6to4, Teredo) is judged by the IPv4 address too;
* cloud metadata and credential endpoints are refused even with `--allow-private-urls`:
  all of link-local (169.254.0.0/16, fe80::/10) and the well-known ones outside it;
* the connection goes to the checked address itself (the Host header and TLS name stay
  the URL's), so a second DNS answer cannot swap in another address (DNS rebinding);
* redirects are followed a bounded number of times, each hop parsed and checked again;
* the whole download (connect, TLS, status line, headers, body) has one deadline, checked
  before every socket operation, and one size cap however the body is framed.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import re
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from wasi_lab.server.errors import ApiError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Refused whatever the flags: where clouds hand out instance credentials and control.
METADATA_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local: 169.254.169.254 (AWS, GCP, Azure, OCI ...),
        # 169.254.170.2 (ECS task credentials), 169.254.0.23 (Tencent)
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::/32",  # AWS IPv6 instance metadata (fd00:ec2::254) and its services
        "fd20:ce::254/128",  # GCP IPv6 metadata server
        "168.63.129.16/32",  # Azure wireserver
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud classic metadata
    )
)
#: Kept for callers of the old name: the single addresses among METADATA_NETWORKS.
METADATA_ADDRESSES = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}

_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_V4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_HOST_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$")
_HOST_PORT = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[^\[\]:]*)(?::[0-9]*)?$")
_PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_CHUNK = 64 * 1024


@dataclass
class FetchPolicy:
    max_bytes: int = 16 * 1024 * 1024
    timeout_s: float = 5.0
    max_redirects: int = 3
    allow_private: bool = False
    loopback_only: bool = False  # labs and tests: nothing may leave the machine


def redact_url(url: str) -> str:
    """The URL with any `user:password@` replaced by `***@` (for logs and messages)."""
    return _USERINFO.sub(r"\1***@", url)


def _bits(n: int, start: int, stop: int) -> int:
    """Bits start..stop-1 of a 128-bit value, counted from the most significant."""
    return (n >> (128 - stop)) & ((1 << (stop - start)) - 1)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (RFC 4291, 6052, 3056, 4380).

    Python's `ipaddress` calls several of these forms global, but a gateway turns them into
    a connection to the IPv4 address inside, so that is the address to judge. For the
    local-use NAT64 prefix (64:ff9b:1::/48) the operator picks where the IPv4 bits sit:
    every layout RFC 6052 allows under a /48 is returned.
    """
    n = int(ip)
    found: list[int] = []
    if ip.ipv4_mapped is not None:
        found.append(int(ip.ipv4_mapped))
    if ip in _V4_TRANSLATED or ip in _NAT64_WELL_KNOWN or (ip in _V4_COMPATIBLE and n > 1):
        found.append(n & 0xFFFFFFFF)
    if ip in _NAT64_LOCAL:
        found += [
            (_bits(n, 48, 64) << 16) | _bits(n, 72, 88),  # /48
            (_bits(n, 56, 64) << 24) | _bits(n, 72, 96),  # /56
            _bits(n, 72, 104),  # /64
            n & 0xFFFFFFFF,
        ]  # /96
    if ip.sixtofour is not None:
        found.append(int(ip.sixtofour))
    if ip.teredo is not None:  # (server, client); Python already undoes the client's XOR
        found += [int(a) for a in ip.teredo]
    return [ipaddress.IPv4Address(v) for v in dict.fromkeys(found)]


def metadata_network(ip: IPAddress) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The metadata/credential network `ip` is in, or None."""
    for net in METADATA_NETWORKS:
        if ip.version == net.version and ip in net:
            return net
    return None


def address_problem(ip: IPAddress, allow_private: bool, loopback_only: bool = False) -> str | None:
    """Why this address may not be fetched, or None when it may.

    `loopback_only` allows loopback and nothing else (with or without `allow_private`);
    `allow_private` adds loopback and private (RFC 1918, ULA) ranges to the public ones.
    Metadata/credential endpoints are refused in every mode.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%")[0])
        if ip.ipv4_mapped is not None:  # on the wire this *is* the IPv4 address
            return address_problem(ip.ipv4_mapped, allow_private, loopback_only)
        problems = [
            f"{problem}: {inner} carried inside the IPv6 address {ip}"
            for inner in embedded_ipv4(ip)
            if (problem := address_problem(inner, allow_private, loopback_only))
        ]
        if problems:  # name the worst one: a metadata address before a merely odd one
            return sorted(problems, key=lambda p: "metadata" not in p)[0]
    if (
        ip.is_unspecified
        or ip.is_multicast
        or (ip.version == 4 and ip in _THIS_NETWORK)
        or ip == ipaddress.IPv4Address("255.255.255.255")
    ):
        return "an unspecified, 'this network', broadcast or multicast address"
    net = metadata_network(ip)
    if net is not None:
        return (
            f"a cloud metadata or credentials address ({net}; refused even with "
            f"--allow-private-urls)"
        )
    if loopback_only:
        return (
            None
            if ip.is_loopback
            else "not a loopback address (the server runs with --loopback-only-urls)"
        )
    if ip.is_global:
        return None
    if allow_private and (ip.is_loopback or ip.is_private):
        return None
    kind = "a loopback" if ip.is_loopback else "a private" if ip.is_private else "a non-public"
    return f"{kind} address"


def _advice(ip: IPAddress, allow_private: bool, loopback_only: bool) -> str:
    """The flag that would allow `ip`, if there is one and the server does not run with it."""
    if allow_private or loopback_only or address_problem(ip, True) is not None:
        return ""
    return " (start it with --allow-private-urls for a lab)"


def resolve_checked(
    host: str, port: int, allow_private: bool, loopback_only: bool = False
) -> IPAddress:
    """Resolve `host` and return the address to connect to, if all of them are allowed."""
    literal = _ip_literal(host)
    if loopback_only and literal is None and host.lower().rstrip(".") != "localhost":
        # a name: do not even ask DNS (the query itself leaves the box)
        raise ApiError(
            "forbidden_address",
            f"{host!r} is not localhost or an IP literal (the server runs "
            f"with --loopback-only-urls)",
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ApiError("fetch_failed", f"cannot resolve {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        if info[0] not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            addresses.append(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        except ValueError:
            continue
    if not addresses:
        raise ApiError("fetch_failed", f"{host!r} resolved to no address")
    for ip in addresses:
        problem = address_problem(ip, allow_private, loopback_only)
        if problem:
            raise ApiError(
                "forbidden_address",
                f"{host!r} resolves to {ip}, {problem}; the server refuses to "
                f"fetch from it{_advice(ip, allow_private, loopback_only)}",
            )
    return addresses[0]


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


@dataclass
class ParsedUrl:
    scheme: str
    host: str  # as DNS and the Host header want it (IDNA-encoded, no brackets)
    port: int
    target: str  # path and query for the request line
    netloc: str  # host[:port] for the Host header


def parse_url(url: str) -> ParsedUrl:
    """Split and validate an http(s) URL; every malformed form is a 400 `bad_url`."""
    shown = redact_url(url)[:200]
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ApiError("bad_url", f"{shown!r} contains spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        explicit_port = parts.port
    except ValueError as exc:
        raise ApiError("bad_url", f"{shown!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ApiError("bad_url", f"{shown!r} is not an http(s) URL with a host")
    if not _HOST_PORT.match(parts.netloc.rpartition("@")[2]):
        raise ApiError("bad_url", f"{shown!r} has a malformed host or port")
    bracketed = "[" in parts.netloc
    if bracketed:
        if not isinstance(_ip_literal(host), ipaddress.IPv6Address) or "%" in host:
            raise ApiError(
                "bad_url", f"{shown!r}: only an IPv6 address (without a zone) may stand in brackets"
            )
    else:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ApiError(
                "bad_url", f"{shown!r} has a host name that is not valid (IDNA)"
            ) from None
        if not _HOST_NAME.match(host):
            raise ApiError("bad_url", f"{shown!r} has an invalid host name")
    if explicit_port == 0:
        raise ApiError("bad_url", f"{shown!r}: port 0 is not a port anything listens on")
    port = explicit_port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = quote(target, safe=_PRINTABLE)  # non-ASCII path bytes, percent-encoded
    shown_host = f"[{host}]" if bracketed else host
    netloc = shown_host if explicit_port is None else f"{shown_host}:{port}"
    return ParsedUrl(parts.scheme, host, port, target, netloc)


class _DeadlineSocket:
    """A connected socket as http.client sees it, with the download's deadline enforced.

    Before every send and every receive the socket timeout is set to the time left, so a
    peer that drips its status line, headers or body a byte a second is cut at the
    deadline, not after one timeout per byte.
    """

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline
        self._readers = 0  # like socket.makefile: close() waits for the readers
        self._closing = False

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the download's deadline passed")
        self._sock.settimeout(left)

    def sendall(self, data: bytes) -> None:
        self._arm()
        self._sock.sendall(data)

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        self._arm()
        return self._sock.recv_into(buffer, nbytes)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        self._readers += 1
        return io.BufferedReader(_DeadlineReader(self), _CHUNK)

    def reader_closed(self) -> None:
        self._readers -= 1
        if self._closing and self._readers <= 0:
            self._sock.close()

    def close(self) -> None:
        self._closing = True
        if self._readers <= 0:
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock: _DeadlineSocket):
        self._dsock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._dsock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._dsock.reader_closed()


def _connect(ip: IPAddress, port: int, deadline: float) -> socket.socket:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the download's deadline passed")
    target = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    return socket.create_connection((str(target), port), timeout=left)


def _tls_handshake(raw: socket.socket, host: str, deadline: float) -> ssl.SSLSocket:
    """TLS with the URL's name, the handshake bounded by the same deadline."""
    context = ssl.create_default_context()
    tls = context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
    tls.setblocking(False)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the TLS handshake ran past the deadline")
        try:
            tls.do_handshake()
            return tls
        except ssl.SSLWantReadError:
            ready = select.select([tls], [], [], left)[0]
        except ssl.SSLWantWriteError:
            ready = select.select([], [tls], [], left)[1]
        if not ready:
            raise TimeoutError("the TLS handshake ran past the deadline")


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP(S) connection to an address we checked, whatever DNS says later."""

    def __init__(self, url: ParsedUrl, ip: IPAddress, deadline: float):
        super().__init__(url.host, url.port)
        self._url = url
        self._ip = ip
        self._deadline = deadline

    def connect(self) -> None:
        raw = _connect(self._ip, self._url.port, self._deadline)
        sock: socket.socket = raw
        if self._url.scheme == "https":
            sock = _tls_handshake(raw, self._url.host, self._deadline)
        self.sock = _DeadlineSocket(sock, self._deadline)  # type: ignore[assignment]


def fetch_image(url: str, policy: FetchPolicy, deadline: float | None = None) -> bytes:
    """The bytes at `url`, or an ApiError saying which rule refused it.

    `deadline` (time.monotonic) defaults to now + `policy.timeout_s`; the caller passes
    its own when waiting for a fetch slot already used part of the budget.
    """
    if deadline is None:
        deadline = time.monotonic() + policy.timeout_s
    current = url.strip()
    for hop in range(policy.max_redirects + 1):
        shown = redact_url(current)[:300]
        try:
            parsed = parse_url(current)
        except ApiError as exc:  # the client's URL is a 400; an origin's redirect a 502
            if hop == 0:
                raise
            raise ApiError(
                "fetch_failed", f"redirected to an unusable URL: {exc.message}"
            ) from None
        ip = resolve_checked(parsed.host, parsed.port, policy.allow_private, policy.loopback_only)
        conn = _PinnedHTTP(parsed, ip, deadline)
        resp: http.client.HTTPResponse | None = None
        try:
            conn.putrequest("GET", parsed.target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", parsed.netloc)
            conn.putheader("User-Agent", "wasi-lab-serve")
            conn.putheader("Accept", "image/*")
            conn.endheaders()
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise ApiError("fetch_failed", f"{shown} redirected without a Location")
                current = urljoin(current, location.strip())
                continue
            if resp.status != 200:
                raise ApiError("fetch_failed", f"{shown} answered HTTP {resp.status}")
            return _read_capped(resp, policy.max_bytes, shown)
        except TimeoutError:
            raise ApiError(
                "fetch_timeout", f"{shown} did not deliver the image within {policy.timeout_s:g} s"
            ) from None
        except ValueError as exc:  # http.client.InvalidURL and friends
            raise ApiError("bad_url" if hop == 0 else "fetch_failed", f"{shown}: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError("fetch_failed", f"{shown}: {exc}") from None
        finally:
            if resp is not None:
                resp.close()
            conn.close()
    raise ApiError(
        "fetch_failed", f"{redact_url(url)[:300]} redirected more than {policy.max_redirects} times"
    )


def _read_capped(resp: http.client.HTTPResponse, max_bytes: int, shown: str) -> bytes:
    """Read the body in chunks, counting as it streams: Content-Length, chunked or
    read-until-close, nothing past `max_bytes` is kept (the socket carries the deadline)."""
    declared = resp.getheader("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > max_bytes:
        raise ApiError(
            "download_too_large", f"{shown} is {int(declared)} bytes; the limit is {max_bytes}"
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = resp.read1(_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise ApiError("download_too_large", f"{shown} is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
