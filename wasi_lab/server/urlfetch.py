"""Download an image from a URL without becoming a proxy into the private network.

The article's server fetched whatever URL it was given. A server that does that can be
asked for `http://169.254.169.254/` (cloud credentials) or `http://127.0.0.1:6379/`. So:

* only http and https, a host is required;
* the host is resolved once, and *every* address it resolves to is checked with
  `ipaddress` (loopback, private, link-local, metadata, multicast, reserved ... refused);
* the connection goes to the checked address itself (the Host header and TLS name stay
  the URL's), so a second DNS answer cannot swap in another address (DNS rebinding);
* redirects are followed a bounded number of times, each hop checked again;
* the whole download has one wall-clock budget and one size cap.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from wasi_lab.server.errors import ApiError

#: Cloud metadata endpoints: refused even with --allow-private-urls.
METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"),
                      ipaddress.ip_address("fd00:ec2::254"),
                      ipaddress.ip_address("100.100.100.200")}

_CHUNK = 64 * 1024


@dataclass
class FetchPolicy:
    max_bytes: int = 16 * 1024 * 1024
    timeout_s: float = 5.0
    max_redirects: int = 3
    allow_private: bool = False
    loopback_only: bool = False  # labs and tests: nothing may leave the machine


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address_problem(ip: IPAddress, allow_private: bool, loopback_only: bool = False
                    ) -> str | None:
    """Why this address may not be fetched, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return address_problem(ip.ipv4_mapped, allow_private, loopback_only)
    if loopback_only and not ip.is_loopback:
        return "not a loopback address (the server runs with --loopback-only-urls)"
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_unspecified or ip.is_multicast:
        return "an unspecified or multicast address"
    if ip.is_global:
        return None
    if allow_private and (ip.is_loopback or ip.is_private or ip.is_link_local):
        return None
    kind = ("a loopback" if ip.is_loopback else "a link-local" if ip.is_link_local
            else "a private" if ip.is_private else "a non-public")
    return f"{kind} address"


def resolve_checked(host: str, port: int, allow_private: bool, loopback_only: bool = False
                    ) -> IPAddress:
    """Resolve `host` and return an address to connect to, if all of them are allowed."""
    if loopback_only and host.lower().rstrip(".") != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:  # a name: do not even ask DNS (the query itself leaves the box)
            raise ApiError("forbidden_address",
                           f"{host!r} is not localhost or an IP literal (the server runs "
                           f"with --loopback-only-urls)") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ApiError("fetch_failed", f"cannot resolve {host!r}: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise ApiError("fetch_failed", f"{host!r} resolved to no address")
    for ip in addresses:
        problem = address_problem(ip, allow_private, loopback_only)
        if problem:
            raise ApiError("forbidden_address",
                           f"{host!r} resolves to {ip}, {problem}; the server refuses to "
                           f"fetch from it (start it with --allow-private-urls for a lab)")
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to an address we checked, whatever DNS says later."""

    def __init__(self, host: str, port: int, ip: IPAddress, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = str(ip)

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a checked address; certificate and SNI use the URL's host name."""

    def __init__(self, host: str, port: int, ip: IPAddress, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = str(ip)

    def connect(self) -> None:
        raw = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def _remaining(deadline: float, url: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ApiError("fetch_timeout", f"downloading {url} took too long")
    return left


def fetch_image(url: str, policy: FetchPolicy) -> bytes:
    """The bytes at `url`, or an ApiError saying which rule refused it."""
    deadline = time.monotonic() + policy.timeout_s
    current = url.strip()
    for _hop in range(policy.max_redirects + 1):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError("bad_url", f"{current[:200]!r} is not an http(s) URL with a host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ApiError("bad_url", f"{current[:200]!r} has an invalid port") from None
        ip = resolve_checked(parts.hostname, port, policy.allow_private, policy.loopback_only)
        cls = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
        conn = cls(parts.hostname, port, ip, timeout=_remaining(deadline, current))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", target, headers={"User-Agent": "wasi-lab-serve",
                                                 "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise ApiError("fetch_failed", f"{current} redirected without a Location")
                current = urljoin(current, location)
                continue
            if resp.status != 200:
                raise ApiError("fetch_failed", f"{current} answered HTTP {resp.status}")
            return _read_capped(conn, resp, policy.max_bytes, deadline, current)
        except TimeoutError:
            raise ApiError("fetch_timeout",
                           f"{current} did not answer within {policy.timeout_s:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError("fetch_failed", f"{current}: {exc}") from None
        finally:
            conn.close()
    raise ApiError("fetch_failed", f"{url} redirected more than {policy.max_redirects} times")


def _read_capped(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                 max_bytes: int, deadline: float, url: str) -> bytes:
    """Read the body in chunks, re-arming the socket timeout with the time left each time,
    so a server that drips one byte a second still hits the wall-clock cap."""
    declared = resp.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError("download_too_large",
                       f"{url} is {int(declared)} bytes; the limit is {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    while True:
        left = _remaining(deadline, url)
        if conn.sock is not None:
            conn.sock.settimeout(left)
        chunk = resp.read1(_CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            raise ApiError("download_too_large", f"{url} is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    _remaining(deadline, url)
    return b"".join(chunks)
