"""Servers the tests (and benchmarks/load_test.py) start on 127.0.0.1; none is shipped.

* `run_in_thread` runs the app under uvicorn in this process, on a real socket: for the
  tests where the socket is the point (slow clients, connection limits, the access log);
  tests that only need answers use Starlette's `TestClient` instead.
* `HostileOrigin` is the package's `ImageServer` plus routes that misbehave on purpose,
  for the URL-mode red-team tests and the load test's faults.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlencode

import uvicorn

from wasi_lab.server.app import create_app
from wasi_lab.server.imageorigin import ImageServer
from wasi_lab.server.launch import LOOPBACK
from wasi_lab.server.limits import Limits
from wasi_lab.server.protocol import uvicorn_config


@dataclass
class RunningServer:
    """A server in a background thread of this process."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(
    limits: Limits | None = None, access_log: str | None = None, **app_kwargs: object
) -> RunningServer:
    """uvicorn on an ephemeral loopback port in a thread; returns once it is healthy."""
    from wasi_lab.server.accesslog import configure_access_log

    configure_access_log(access_log)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    port = sock.getsockname()[1]
    app = create_app(limits, **app_kwargs)  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn_config(app, limit_concurrency=1024))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn"
    )
    thread.start()
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + 180
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start (see the log above)")
        time.sleep(0.05)
    return RunningServer(url, server, thread)


HOSTILE = ("drip-status", "drip-headers", "drip-body", "chunked", "unsized")


class HostileOrigin(ImageServer):
    """An `ImageServer` with routes that misbehave on purpose.

    `/redirect/<n>/<name>` redirects n times before serving; `/status/<code>` answers code;
    `/drip-status/<name>`, `/drip-headers/<name>`, `/drip-body/<name>` send that part one
    byte per `drip_s` (for at most `drip_limit_s`); `/chunked/<name>` and `/unsized/<name>`
    send the file chunked or without a length (until close); `/chain/<n>?to=<url>`
    redirects n times, then to `url`.
    """

    def extra_route(self, handler: BaseHTTPRequestHandler, parts: list[str], query: str) -> bool:
        if parts[:1] == ["chain"] and len(parts) == 2 and parts[1].isdigit():
            n = int(parts[1])
            to = parse_qs(query).get("to", [""])[0]
            _redirect(handler, f"/chain/{n - 1}?{urlencode({'to': to})}" if n > 0 else to)
            return True
        if len(parts) == 2 and parts[0] in HOSTILE and parts[1] in self.files:
            self._hostile(handler, parts[0], self.files[parts[1]])
            return True
        if parts[:1] == ["status"] and len(parts) == 2 and parts[1].isdigit():
            handler.send_response(int(parts[1]))
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return True
        if parts[:1] == ["redirect"] and len(parts) == 3 and parts[1].isdigit():
            n = int(parts[1])
            _redirect(handler, f"/redirect/{n - 1}/{parts[2]}" if n > 1 else f"/{parts[2]}")
            return True
        return False

    def _drip(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:
        end = time.monotonic() + self.drip_limit_s
        for i in range(len(data)):
            if time.monotonic() > end:
                return
            handler.wfile.write(data[i : i + 1])
            handler.wfile.flush()
            time.sleep(self.drip_s)

    def _hostile(self, handler: BaseHTTPRequestHandler, kind: str, data: bytes) -> None:
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        ).encode()
        out = handler.wfile
        if kind == "drip-status":
            self._drip(handler, head + data)
        elif kind == "drip-headers":
            out.write(head[:17])
            self._drip(handler, head[17:] + data)
        elif kind == "drip-body":
            out.write(head)
            self._drip(handler, data)
        elif kind == "chunked":
            out.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            for i in range(0, len(data), 65536):
                piece = data[i : i + 65536]
                out.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            out.write(b"0\r\n\r\n")
        else:  # unsized: no length, the end is the close
            out.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            out.write(data)
        handler.close_connection = True


def _redirect(handler: BaseHTTPRequestHandler, target: str) -> None:
    handler.send_response(302)
    handler.send_header("Location", target)
    handler.send_header("Content-Length", "0")
    handler.end_headers()
