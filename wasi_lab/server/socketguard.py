"""A guard that refuses (and reports) every connection outside loopback.

The URL-mode tests must never reach another machine, even when a check in `urlfetch` is
broken: with the guard installed, a connect to anything but 127.0.0.0/8 or ::1, or a DNS
query for a name other than localhost, raises `OSError` *and* is reported, so the test
fails even when the server turns the error into a tidy `fetch_failed`.

Tests install it in their own process (`install_guard`); a server started with
`--test-hooks` and `WASI_LAB_SOCKET_GUARD=1` in its environment installs it too and prints
each violation on stderr (`SOCKET-GUARD VIOLATION ...`), which the tests read back.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable
from typing import Any

ENV_VAR = "WASI_LAB_SOCKET_GUARD"
MARKER = "SOCKET-GUARD VIOLATION"

_real = {
    "connect": socket.socket.connect,
    "connect_ex": socket.socket.connect_ex,
    "create_connection": socket.create_connection,
    "getaddrinfo": socket.getaddrinfo,
}


def is_loopback_host(host: object) -> bool:
    """127.0.0.0/8, ::1 (and their IPv4-mapped form) or the name localhost."""
    if not isinstance(host, str):
        return False
    name = host.split("%")[0].strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def install_guard(on_violation: Callable[[str], None]) -> Callable[[], None]:
    """Patch connect, connect_ex, create_connection and getaddrinfo; returns the undo."""

    def refuse(what: str) -> OSError:
        message = f"{MARKER}: {what}"
        on_violation(message)
        return OSError(message)

    def check_address(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback_host(address[0]):
            raise refuse(f"connect to {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        check_address(self, address)
        return _real["connect"](self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check_address(self, address)
        return _real["connect_ex"](self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if not is_loopback_host(address[0]):
            raise refuse(f"create_connection to {address!r}")
        return _real["create_connection"](address, *args, **kwargs)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> list:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not is_loopback_host(name) and not _numeric(name):
            raise refuse(f"DNS query for {name!r}")  # the query itself would leave the box
        infos = _real["getaddrinfo"](host, *args, **kwargs)
        for info in infos:
            if (
                info[0] in (socket.AF_INET, socket.AF_INET6)
                and not is_loopback_host(info[4][0])
                and name is not None
                and not _numeric(name)
            ):
                raise refuse(f"{name!r} resolved to {info[4][0]}")
        return infos

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.create_connection = create_connection  # type: ignore[assignment]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]

    def undo() -> None:
        socket.socket.connect = _real["connect"]  # type: ignore[method-assign]
        socket.socket.connect_ex = _real["connect_ex"]  # type: ignore[method-assign]
        socket.create_connection = _real["create_connection"]  # type: ignore[assignment]
        socket.getaddrinfo = _real["getaddrinfo"]  # type: ignore[assignment]

    return undo


def install_from_environment(test_hooks: bool, environ: dict[str, str]) -> bool:
    """In a `--test-hooks` server with WASI_LAB_SOCKET_GUARD=1: guard, report on stderr."""
    if not (test_hooks and environ.get(ENV_VAR) == "1"):
        return False
    install_guard(lambda message: print(message, file=sys.stderr, flush=True))
    return True
