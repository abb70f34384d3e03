"""Downloading and extracting the MobileNet archive, against a real local HTTP server."""

from __future__ import annotations

import hashlib
import http.server
import io
import random
import socket
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.loopback import serve
from wasi_lab.models.fetch import ModelError, extract_member, fetch_mobilenet

MEMBER = "mobilenet_v2_1.4_224_frozen.pb"
PAYLOAD = random.Random(0).randbytes(1_000_000)  # incompressible: the .tgz stays ~1 MB


def make_tgz(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    """Build a .tgz in memory. ``kind`` is "file", "dir" or "symlink" (data = link target)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = (data or b"").decode()
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


GOOD = make_tgz(
    [
        (".", None, "dir"),
        ("./mobilenet_v2_1.4_224.ckpt.index", b"idx", "file"),
        (f"./{MEMBER}", PAYLOAD, "file"),
        ("./info.txt", b"hello", "file"),
    ]
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Server:
    """A tiny HTTP server serving ``blob`` at any path, with a few misbehaviours."""

    blob: bytes = GOOD
    truncate_at: int | None = None  # announce the full length, close after this many bytes
    honour_range: bool = True
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


@pytest.fixture()
def server() -> Iterator[Server]:
    state = Server()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            state.requests.append(dict(self.headers))
            blob, start = state.blob, 0
            rng = self.headers.get("Range")
            if rng and state.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(blob):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(blob) - 1}/{len(blob)}")
            else:
                self.send_response(200)
            body = blob[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.truncate_at is not None:
                self.wfile.write(body[: max(0, state.truncate_at - start)])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    with serve(Handler) as base:
        state.url = f"{base}/mobilenet_v2_1.4_224.tgz"
        yield state


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir())


def test_good_download_extracts_only_the_model(server: Server, tmp_path: Path) -> None:
    out = fetch_mobilenet(server.url, tmp_path, progress=False, sha256=sha(GOOD))
    assert out == tmp_path / MEMBER and out.read_bytes() == PAYLOAD
    assert set(leftovers(tmp_path)) == {MEMBER, "mobilenet_v2_1.4_224.tgz"}
    # Second call: archive verified locally, no network.
    n = len(server.requests)
    fetch_mobilenet(server.url, tmp_path, progress=False, sha256=sha(GOOD))
    assert len(server.requests) == n


def test_hash_mismatch(server: Server, tmp_path: Path) -> None:
    corrupted = bytearray(GOOD)
    corrupted[len(corrupted) // 2] ^= 0xFF
    server.blob = bytes(corrupted)
    with pytest.raises(ModelError, match="hash mismatch"):
        fetch_mobilenet(server.url, tmp_path, progress=False, sha256=sha(GOOD))
    assert leftovers(tmp_path) == []  # neither the bad archive nor a model


def test_truncated_download_is_a_network_failure(server: Server, tmp_path: Path) -> None:
    server.truncate_at = len(GOOD) // 3
    with pytest.raises(ModelError, match="network failure"):
        fetch_mobilenet(server.url, tmp_path, progress=False, sha256=sha(GOOD), retries=2)
    assert MEMBER not in leftovers(tmp_path)
    part = tmp_path / "mobilenet_v2_1.4_224.tgz.part"
    assert part.exists() and 0 < part.stat().st_size < len(GOOD)
    # The server recovers: the next call resumes from the .part instead of starting over.
    server.truncate_at = None
    out = fetch_mobilenet(server.url, tmp_path, progress=False, sha256=sha(GOOD))
    assert out.read_bytes() == PAYLOAD
    assert server.requests[-1]["Range"] == f"bytes={len(GOOD) // 3}-"


def test_resume_partial_download(server: Server, tmp_path: Path) -> None:
    half = len(GOOD) // 2
    (tmp_path / "mobilenet_v2_1.4_224.tgz.part").write_bytes(GOOD[:half])
    out = fetch_mobilenet(server.url, tmp_path, progress=False, sha256=sha(GOOD))
    assert out.read_bytes() == PAYLOAD
    assert [r.get("Range") for r in server.requests] == [f"bytes={half}-"]


def test_server_ignoring_range_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.honour_range = False
    (tmp_path / "mobilenet_v2_1.4_224.tgz.part").write_bytes(b"stale junk" * 10)
    out = fetch_mobilenet(server.url, tmp_path, progress=False, sha256=sha(GOOD))
    assert out.read_bytes() == PAYLOAD


def test_http_error_and_unreachable(server: Server, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ModelError, match="network failure"):
        fetch_mobilenet(
            f"http://127.0.0.1:{port}/x.tgz", tmp_path, progress=False, sha256=sha(GOOD), retries=1
        )


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([(f"../{MEMBER}", PAYLOAD, "file")], "path traversal"),
        ([("./a/../../evil", b"x", "file"), (MEMBER, PAYLOAD, "file")], "path traversal"),
        ([("/etc/passwd", b"x", "file"), (MEMBER, PAYLOAD, "file")], "absolute"),
        ([(MEMBER, b"/etc/passwd", "symlink")], "link"),
        ([("./other.pb", b"x", "file")], "no member"),
        ([(f"./sub/{MEMBER}", PAYLOAD, "file")], "no member"),
    ],
)
def test_bad_archives_are_refused(
    server: Server, tmp_path: Path, entries: list[tuple[str, bytes | None, str]], message: str
) -> None:
    server.blob = make_tgz(entries)
    with pytest.raises(ModelError, match=message):
        fetch_mobilenet(server.url, tmp_path, progress=False, sha256=sha(server.blob))
    assert MEMBER not in leftovers(tmp_path)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert not (tmp_path.parent / MEMBER).exists()


def test_not_an_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "x.tgz"
    bogus.write_bytes(b"definitely not gzip")
    with pytest.raises(ModelError, match="cannot read archive"):
        extract_member(bogus, MEMBER, tmp_path / "out" / MEMBER)
    assert not (tmp_path / "out" / MEMBER).exists()
