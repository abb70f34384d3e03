"""A loopback HTTP server that serves images: the stand-in for the article's image URL.

Notebook 06 points the URL endpoint (`GET /` with a URL body) at it, and at `/slow/<name>`
to show a download cut off by the fetch timeout. The tests' hostile origin extends it
through `extra_route` (tests/servers.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from wasi_lab.server.launch import LOOPBACK


@dataclass
class ImageServer:
    """`/<name>` serves `files[name]`; `/slow/<name>` sends it in 20 chunks, one per `drip_s`.

    `hosts` records each request's Host header. Any other path answers 404, unless a
    subclass's `extra_route` answers it.
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
        files = {
            p.name: p.read_bytes()
            for p in Path(directory).iterdir()
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")
        }
        return cls(files)

    def extra_route(self, handler: BaseHTTPRequestHandler, parts: list[str], query: str) -> bool:
        """Answer a path the plain routes do not know; True when answered. None here."""
        return False

    def start(self) -> ImageServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                owner.hosts.append(self.headers.get("Host", ""))
                path, _, query = self.path.partition("?")
                parts = [p for p in path.split("/") if p]
                try:
                    if owner.extra_route(self, parts, query):
                        return
                except (BrokenPipeError, ConnectionResetError):
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
                self.send_header(
                    "Content-Type", "image/jpeg" if name.endswith("jpg") else "image/png"
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    if not slow:
                        self.wfile.write(data)
                        return
                    step = max(1, len(data) // 20)
                    for i in range(0, len(data), step):  # bounded: 20 chunks at most
                        self.wfile.write(data[i : i + step])
                        self.wfile.flush()
                        time.sleep(owner.drip_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, daemon=True, name="image-server"
        )
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
