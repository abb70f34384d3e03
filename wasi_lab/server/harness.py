"""Start and stop servers on 127.0.0.1 for notebooks, tests and the load test.

* `run_in_thread` runs the app under uvicorn in this process (tests: fast, debuggable);
* `start_server_process` runs `wasi-lab serve` as a subprocess on a free port (notebook 06:
  exactly what a user types);
* `ImageServer` serves images (and a few misbehaving routes) for the URL endpoint.
All bind to loopback only and stop cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import httpx
import uvicorn

from wasi_lab.paths import REPO_ROOT
from wasi_lab.server.app import create_app
from wasi_lab.server.limits import Limits
from wasi_lab.server.protocol import uvicorn_config

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None
                 ) -> dict:
    """Poll /healthz until it answers 200 (the guests are built before the port opens)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            r = httpx.get(f"{url}/healthz", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become healthy in {timeout} s ({last})")


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


def run_in_thread(limits: Limits | None = None, access_log: str | None = None,
                  **app_kwargs: object) -> RunningServer:
    """uvicorn on an ephemeral loopback port in a thread; returns once it is healthy."""
    from wasi_lab.server.accesslog import configure_access_log

    configure_access_log(access_log)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    port = sock.getsockname()[1]
    app = create_app(limits, **app_kwargs)  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn_config(app, limit_concurrency=1024))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="uvicorn")
    thread.start()
    url = f"http://{LOOPBACK}:{port}"
    deadline = time.monotonic() + 180
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start (see the log above)")
        time.sleep(0.05)
    return RunningServer(url, server, thread)


@dataclass
class ServerProcess:
    """`wasi-lab serve` in a subprocess; `stop()` sends SIGTERM (a graceful drain)."""

    url: str
    proc: subprocess.Popen
    log_path: Path | None = None

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_lines(self) -> list[str]:
        """The server's stderr so far (access log lines are JSON)."""
        if self.log_path is None or not self.log_path.exists():
            return []
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server_process(*args: str, port: int | None = None, timeout: float = 180,
                         log_path: Path | str | None = None) -> ServerProcess:
    """Run `python -m wasi_lab serve --port PORT ARGS...` and wait until it is healthy."""
    port = port or free_port()
    log = Path(log_path) if log_path else None
    stderr = open(log, "w", encoding="utf-8") if log else subprocess.DEVNULL  # noqa: SIM115
    cmd = [sys.executable, "-m", "wasi_lab", "serve", "--host", LOOPBACK, "--port",
           str(port), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
                            env=env)
    if log:
        stderr.close()  # type: ignore[union-attr]
    server = ServerProcess(f"http://{LOOPBACK}:{port}", proc, log)
    try:
        wait_healthy(server.url, timeout, proc)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


# --------------------------------------------------------------------------- image server


@dataclass
class ImageServer:
    """A loopback HTTP server for the URL endpoint, with routes that misbehave on purpose.

    `/<name>` serves `files[name]`; `/slow/<name>` drips the file one chunk per `drip_s`;
    `/redirect/<n>/<name>` redirects n times before serving; `/status/<code>` answers code.
    The hostile routes (URL-mode red-team tests and the load test):
    `/drip-status/<name>`, `/drip-headers/<name>`, `/drip-body/<name>` send that part one
    byte per `drip_s` (for at most `drip_limit_s`); `/chunked/<name>` and `/unsized/<name>`
    send the file chunked or without a length (until close); `/chain/<n>?to=<url>`
    redirects n times, then to `url`. `hosts` records each request's Host header.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    drip_s: float = 0.5
    drip_limit_s: float = 30.0
    url: str = ""
    hosts: list[str] = field(default_factory=list)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def from_directory(cls, directory: Path | str) -> ImageServer:
        files = {p.name: p.read_bytes() for p in Path(directory).iterdir()
                 if p.suffix.lower() in (".jpg", ".jpeg", ".png")}
        return cls(files)

    def start(self) -> ImageServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def drip(self, data: bytes) -> None:
                end = time.monotonic() + owner.drip_limit_s
                for i in range(len(data)):
                    if time.monotonic() > end:
                        return
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(owner.drip_s)

            def hostile(self, kind: str, data: bytes) -> None:
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
                if kind == "drip-status":
                    self.drip(head + data)
                elif kind == "drip-headers":
                    self.wfile.write(head[:17])
                    self.drip(head[17:] + data)
                elif kind == "drip-body":
                    self.wfile.write(head)
                    self.drip(data)
                elif kind == "chunked":
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                     b"Connection: close\r\n\r\n")
                    for i in range(0, len(data), 65536):
                        piece = data[i:i + 65536]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:  # unsized: no length, the end is the close
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                    self.wfile.write(data)
                self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                owner.hosts.append(self.headers.get("Host", ""))
                path, _, query = self.path.partition("?")
                parts = [p for p in path.split("/") if p]
                if parts[:1] == ["chain"] and len(parts) == 2 and parts[1].isdigit():
                    n = int(parts[1])
                    to = parse_qs(query).get("to", [""])[0]
                    target = f"/chain/{n - 1}?{urlencode({'to': to})}" if n > 0 else to
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                hostile = ("drip-status", "drip-headers", "drip-body", "chunked", "unsized")
                if len(parts) == 2 and parts[0] in hostile and parts[1] in owner.files:
                    try:
                        self.hostile(parts[0], owner.files[parts[1]])
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                if parts[:1] == ["status"] and len(parts) == 2 and parts[1].isdigit():
                    self.send_response(int(parts[1]))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if parts[:1] == ["redirect"] and len(parts) == 3 and parts[1].isdigit():
                    n = int(parts[1])
                    target = f"/redirect/{n - 1}/{parts[2]}" if n > 1 else f"/{parts[2]}"
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                slow = parts[:1] == ["slow"]
                name = parts[-1] if parts else ""
                data = owner.files.get(name)
                if data is None or len(parts) != (2 if slow else 1):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg" if name.endswith("jpg")
                                 else "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    if not slow:
                        self.wfile.write(data)
                        return
                    step = max(1, len(data) // 20)
                    for i in range(0, len(data), step):  # bounded: 20 chunks at most
                        self.wfile.write(data[i:i + step])
                        self.wfile.flush()
                        time.sleep(owner.drip_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True,
                                        name="image-server")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> ImageServer:
        return self.start() if self._httpd is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
