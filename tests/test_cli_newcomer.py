"""Every mistake a newcomer makes with `wasi-lab`, through the real command in a subprocess.

Each wrong input gets one line on stderr naming the input and what to do, a non-zero exit
status, and no traceback. Argument-syntax errors are argparse's (usage, then one error line,
status 2). Downloads go to a server on 127.0.0.1 only.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.loopback import serve
from wasi_lab.paths import IMAGES_DIR, REPO_ROOT
from wasi_lab.pngs import make_png
from wasi_lab.toolchain import APT_PACKAGES, RUSTUP_HINT, debian_like, missing_toolchain_advice
from wasi_lab.user_errors import network_reason


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "wasi_lab", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )


def error_line(out: subprocess.CompletedProcess, status: int = 1) -> str:
    """The one line a mistake gets (after argparse's usage, if any), checked for shape."""
    assert out.returncode == status, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("wasi-lab")]
    assert len(errors) == 1, out.stderr
    usage = [line for line in lines if line not in errors]
    assert all(line.startswith(("usage:", " ")) for line in usage), out.stderr
    assert "[Errno" not in errors[0], errors[0]
    return errors[0]


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    """A learner's folder: two images, a text file, an empty folder."""
    (tmp_path / "photos").mkdir()
    shutil.copyfile(IMAGES_DIR / "grace_hopper.jpg", tmp_path / "photos" / "b_hopper.jpg")
    (tmp_path / "photos" / "a_gradient.PNG").write_bytes(make_png(64, 48))
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / ".hidden.png").write_bytes(b"editor backup, not a PNG")
    (tmp_path / "photos" / "old.gif").write_bytes(b"GIF89a")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    return tmp_path


# --------------------------------------------------------------------------- predict


def test_predict_a_directory_classifies_each_image_in_it(files: Path) -> None:
    out = run("predict", "photos", "--top", "1", "--json", cwd=files)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [Path(r["image"]).name for r in rows] == ["a_gradient.PNG", "b_hopper.jpg"]
    assert rows[1]["top"][0]["label"] == "military uniform"
    # the GIF is named as skipped (the guest decodes JPEG and PNG); other files are ignored
    assert "Traceback" not in out.stderr
    assert (
        out.stderr.strip() == "wasi-lab predict: photos: skipped old.gif: the guest "
        "decodes JPEG and PNG"
    )


@pytest.mark.parametrize(
    ("args", "status", "needles"),
    [
        (["predict", "missing.jpg"], 1, ["missing.jpg: not found", "directory of images"]),
        (["predict", "notes.txt"], 1, ["notes.txt: not a JPEG or PNG image"]),
        (["predict", "empty"], 1, ["empty: no .jpg, .jpeg, .png files in this directory"]),
        (
            ["predict", "photos/b_hopper.jpg", "--model", "bogus"],
            1,
            ["cannot load --model bogus", "efficientnet-lite0", "mobilenet-v2-1.4"],
        ),
        (
            ["predict", "photos/b_hopper.jpg", "--model", "notes.txt"],
            1,
            ["cannot load --model notes.txt", "not a TensorFlow frozen graph"],
        ),
        (["predict", "photos/b_hopper.jpg", "--model", "empty"], 1, ["cannot load --model empty"]),
        (
            ["predict", "photos/b_hopper.jpg", "--mode", "bogus"],
            2,
            ["argument --mode: invalid choice: 'bogus'", "'article'"],
        ),
        (["predict", "photos/b_hopper.jpg", "--top", "0"], 2, ["--top: must be at least 1, not 0"]),
        (["predict", "photos/b_hopper.jpg", "--top", "-1"], 2, ["--top: must be at least 1"]),
        (
            ["predict", "photos/b_hopper.jpg", "--top", "abc"],
            2,
            ["--top: must be a whole number, not 'abc'"],
        ),
        (
            ["predict", "photos/b_hopper.jpg", "--top", "5000"],
            2,
            ["--top 5000 is more than the 1000 classes of efficientnet-lite0"],
        ),
        (["predict"], 2, ["the following arguments are required: IMAGE"]),
    ],
)
def test_predict_mistakes(files: Path, args: list[str], status: int, needles: list[str]) -> None:
    line = error_line(run(*args, cwd=files), status)
    assert line.startswith("wasi-lab predict")
    for needle in needles:
        assert needle in line, line


def test_predict_a_refused_url_and_a_good_image_together(files: Path) -> None:
    port = free_port()
    out = run(
        "predict",
        f"http://127.0.0.1:{port}/cat.jpg",
        "photos/b_hopper.jpg",
        "--top",
        "1",
        cwd=files,
    )
    line = error_line(out, 1)
    assert f"cannot fetch http://127.0.0.1:{port}/cat.jpg" in line
    assert "military uniform" in out.stdout, "one bad input does not lose the others"


# --------------------------------------------------------------------------- other commands


@pytest.mark.parametrize(
    ("args", "status", "needles"),
    [
        (["inspect", "missing.wasm"], 1, ["missing.wasm: not found", "no argument"]),
        (["inspect", "empty"], 1, ["empty: is a directory"]),
        (["inspect", "notes.txt"], 1, ["notes.txt: not a WebAssembly module"]),
        (["bench", "--model", "bogus", "--json"], 1, ["wasi-lab bench: unknown model 'bogus'"]),
        (["bench", "--repeat", "0"], 2, ["--repeat: must be at least 1, not 0"]),
        (["bench", "--repeat", "many"], 2, ["--repeat: must be a whole number"]),
        (["bench", "--module", "missing.wasm", "--json"], 1, ["missing.wasm not found"]),
        (["bench", "--module", "notes.txt", "--json"], 1, ["not a valid WebAssembly module"]),
        (["article", "--repeat", "0"], 2, ["wasi-lab article", "--repeat: must be at least 1"]),
        (["figures", "--repeat", "-1"], 2, ["wasi-lab figures", "--repeat: must be at least 1"]),
        (
            ["images", "list", "--dest", "missing"],
            1,
            ["--dest missing does not exist", "wasi-lab images prepare"],
        ),
        (["images", "list", "--dest", "notes.txt"], 1, ["notes.txt is a file, not a directory"]),
        (["images", "prepare", "--dest", "notes.txt"], 1, ["notes.txt is a file"]),
        (
            ["images", "prepare", "--dest", "notes.txt/sub"],
            1,
            ["notes.txt/sub: part of the path is a file", "writable --dest"],
        ),
        (["models", "fetch", "bogus"], 2, ["invalid choice: 'bogus'"]),
        (
            ["models", "fetch", "mobilenet-v2-1.4", "--url", "ftp://mirror/x.tgz"],
            2,
            ["'ftp://mirror/x.tgz' is not an http(s):// URL"],
        ),
        (
            ["models", "fetch", "efficientnet-lite0", "--url", "http://127.0.0.1:9/x.tgz"],
            2,
            ["apply to mobilenet-v2-1.4 only"],
        ),
        (
            ["models", "fetch", "mobilenet-v2-1.4", "-q", "--dest", "notes.txt/models"],
            1,
            ["cannot create the models directory notes.txt/models"],
        ),
        ([], 2, ["the following arguments are required: command"]),
        (["nonsense"], 2, ["invalid choice: 'nonsense'"]),
    ],
)
def test_other_mistakes(files: Path, args: list[str], status: int, needles: list[str]) -> None:
    line = error_line(run(*args, cwd=files), status)
    for needle in needles:
        assert needle in line, line


def test_images_list_of_a_good_directory_still_works(files: Path) -> None:
    out = run("images", "list", "--dest", "photos", cwd=files)
    assert out.returncode == 0, out.stderr
    assert [Path(p).name for p in out.stdout.split()] == [
        "a_gradient.PNG",
        "b_hopper.jpg",
        "old.gif",
    ]


# --------------------------------------------------------------------------- models fetch


def free_port() -> int:
    """A loopback port nobody listens on (connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BLOB = bytes(range(256)) * 400  # 102,400 bytes; not the real archive, so its hash is wrong


@dataclass
class Origin:
    """A loopback server for the archive: truncates it, or honours Range requests."""

    truncate_at: int | None = None
    resume_from_zero: bool = False  # answer a Range request with the whole file as 206
    requests: list[str | None] = field(default_factory=list)
    url: str = ""


@pytest.fixture()
def origin() -> Iterator[Origin]:
    state = Origin()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            rng = self.headers.get("Range")
            state.requests.append(rng)
            if state.truncate_at is not None:  # announce all, send a part, hang up
                self.send_response(200)
                self.send_header("Content-Length", str(len(BLOB)))
                self.end_headers()
                self.wfile.write(BLOB[: state.truncate_at])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
            if state.resume_from_zero:
                start = 0
            self.send_response(206 if rng else 200)
            if rng:
                self.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
            self.send_header("Content-Length", str(len(BLOB) - start))
            self.end_headers()
            self.wfile.write(BLOB[start:])

    with serve(Handler) as base:
        state.url = f"{base}/mobilenet_v2_1.4_224.tgz"
        yield state


def fetch(url: str, dest: Path, cwd: Path) -> subprocess.CompletedProcess:
    return run(
        "models", "fetch", "mobilenet-v2-1.4", "-q", "--url", url, "--dest", str(dest), cwd=cwd
    )


def test_fetch_offline_says_nothing_was_kept(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/mobilenet_v2_1.4_224.tgz"
    line = error_line(fetch(url, tmp_path / "models", tmp_path))
    assert "cannot connect" in line and "nothing was downloaded" in line, line
    assert ".part" not in line
    assert list((tmp_path / "models").iterdir()) == []


@pytest.mark.parametrize("path", ["/mobilenet_v2_1.4_224.tgz", "/"])
def test_fetch_cut_off_keeps_the_part_it_names_and_resumes_from_it(
    origin: Origin, tmp_path: Path, path: str
) -> None:
    url = origin.url.rsplit("/", 1)[0] + path  # a mirror URL may have no file name
    dest = tmp_path / "models"
    part = dest / "mobilenet_v2_1.4_224.tgz.part"
    origin.truncate_at = 40_000
    line = error_line(fetch(url, dest, tmp_path))
    assert f"40,000 bytes kept in {part}" in line and "run the same command again" in line
    assert part.read_bytes() == BLOB[:40_000], "the message names a file that exists"
    # the origin recovers: the next run asks only for the rest, then checks the hash
    origin.truncate_at = None
    origin.requests.clear()
    line = error_line(fetch(url, dest, tmp_path))
    assert origin.requests == ["bytes=40000-"]
    assert "hash mismatch" in line and "deleted" in line
    assert not part.exists(), "the message says the corrupt download was deleted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_fetch_drops_a_resume_from_the_wrong_offset(origin: Origin, tmp_path: Path) -> None:
    """A 206 that starts anywhere but where the .part ends would splice the archive."""
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "mobilenet_v2_1.4_224.tgz.part").write_bytes(BLOB[:40_000])
    origin.resume_from_zero = True
    line = error_line(fetch(origin.url, dest, tmp_path))
    assert origin.requests == ["bytes=40000-", None], "the second attempt starts over"
    assert "hash mismatch" in line


# --------------------------------------------------------------------------- advice, packaging


@pytest.mark.parametrize("rustup", [True, False])
@pytest.mark.parametrize("debian", [True, False])
@pytest.mark.parametrize("root", [True, False])
def test_toolchain_advice_fits_the_machine(rustup: bool, debian: bool, root: bool) -> None:
    text = missing_toolchain_advice([], rustup=rustup, debian=debian, root=root)
    assert "prebuilt guest" in text and "without Rust" in text
    hint_lines = [line.strip() for line in text.splitlines()]
    # without rustup, no line tells the learner to run rustup first: they get Rust first
    assert (RUSTUP_HINT in hint_lines) == rustup
    assert ("https://rustup.rs" in text) == (not rustup)
    apt = f"apt-get install {' '.join(APT_PACKAGES)}"
    assert (apt in text) == debian
    assert ("sudo apt-get" in text) == (debian and not root)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n', True),
        ("ID=ubuntu\nID_LIKE=debian\n", True),
        ('ID=linuxmint\nID_LIKE="ubuntu debian"\n', True),
        ('ID="fedora"\n', False),
        ("ID=arch\n", False),
        (None, False),  # macOS: no os-release
    ],
)
def test_debian_like_reads_os_release(tmp_path: Path, content: str | None, expected: bool) -> None:
    path = tmp_path / "os-release"
    if content is not None:
        path.write_text(content)
    assert debian_like(path) is expected


def test_pyproject_licence_is_an_spdx_string_with_its_file() -> None:
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["license"] == "MIT"  # a table is deprecated by setuptools
    requires = meta["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first setuptools that reads SPDX strings
    for name in project["license-files"]:
        text = (REPO_ROOT / name).read_text()
        assert text.startswith("MIT License") and "Copyright (c) the wasi-lab authors" in text


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
            "cannot resolve the host name (Temporary failure in name resolution): are you offline?",
        ),
        (
            httpx.ConnectError("[Errno -2] Name or service not known"),
            "cannot resolve the host name (Name or service not known): are you offline?",
        ),
        (
            httpx.ConnectError("[Errno 111] Connection refused"),
            "cannot connect (connection refused)",
        ),
        (httpx.ConnectTimeout("timed out"), "the connection timed out"),
        (httpx.RemoteProtocolError("peer closed connection"), "peer closed connection"),
    ],
)
def test_network_reasons_are_words_not_errno_numbers(exc: Exception, expected: str) -> None:
    assert network_reason(exc) == expected
