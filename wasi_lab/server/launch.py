"""Start `wasi-lab serve` as a subprocess on a free 127.0.0.1 port and stop it cleanly.

Notebook 06 (through `server.lab`), the subprocess tests and the load test start the server
exactly as a user types it; `start_server_process` returns once /healthz answers, and
`ServerProcess.stop` sends SIGTERM for a graceful drain.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from wasi_lab.paths import REPO_ROOT

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None) -> dict:
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


def start_server_process(
    *args: str, port: int | None = None, timeout: float = 180, log_path: Path | str | None = None
) -> ServerProcess:
    """Run `python -m wasi_lab serve --port PORT ARGS...` and wait until it is healthy."""
    port = port or free_port()
    log = Path(log_path) if log_path else None
    stderr = open(log, "w", encoding="utf-8") if log else subprocess.DEVNULL  # noqa: SIM115
    cmd = [
        sys.executable,
        "-m",
        "wasi_lab",
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    REPO_ROOT.mkdir(parents=True, exist_ok=True)  # outside a checkout: the data dir
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    if log:
        stderr.close()  # type: ignore[union-attr]
    server = ServerProcess(f"http://{LOOPBACK}:{port}", proc, log)
    try:
        wait_healthy(server.url, timeout, proc)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server
