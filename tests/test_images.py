"""Sample images, loading user images with a size cap, and the models/images CLI."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import serve
from wasi_lab import images
from wasi_lab.images import (
    SAMPLES,
    SKIMAGE_VERSION,
    ImageError,
    SampleFetchError,
    list_images,
    load_image_bytes,
    prepare_images,
    sample_cache_dir,
    sample_source,
    skimage_data_dir,
)
from wasi_lab.models.cli import add_images_parser, add_models_parser
from wasi_lab.paths import IMAGES_DIR


def test_prepare_is_idempotent(tmp_path: Path) -> None:
    paths = prepare_images(tmp_path)
    assert [p.name for p in paths] == [s.file for s in SAMPLES]
    for sample, path in zip(SAMPLES, paths, strict=True):
        assert path.read_bytes() == sample_source(sample).read_bytes()
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert prepare_images(tmp_path) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes  # nothing rewritten
    (tmp_path / "notes.txt").write_text("not an image")
    assert list_images(tmp_path) == sorted(paths)


def test_manifest_matches_samples() -> None:
    manifest = json.loads((IMAGES_DIR / "manifest.json").read_text())
    assert [m["file"] for m in manifest["images"]] == [s.file for s in SAMPLES]
    assert all(m["licence"] and m["source_package"] for m in manifest["images"])
    for entry, sample in zip(manifest["images"], SAMPLES, strict=True):
        assert entry.get("sha256") == sample.sha256
        assert entry.get("version") == (SKIMAGE_VERSION if sample.sha256 else None)


# Without scikit-image (the workshop venv): the four photographs come from its wheel.

SKIMAGE_SAMPLES = [s for s in SAMPLES if s.package == "scikit-image"]
FAILING_PIP = [
    sys.executable,
    "-c",
    "import sys; print('Looking in indexes: https://pypi.org/simple');"
    "sys.stderr.write('ERROR: no route to the index\\nWARNING: retrying in vain\\n');"
    "sys.exit(1)",
]


def test_recorded_hashes_are_those_of_the_installed_scikit_image() -> None:
    data = skimage_data_dir()
    assert data is not None  # the dev venv has it (the `dev` extra)
    for sample in SKIMAGE_SAMPLES:
        assert hashlib.sha256((data / sample.file).read_bytes()).hexdigest() == sample.sha256


@pytest.fixture()
def no_skimage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """skimage hidden from import (as in a `make lab` venv) and the user cache in tmp_path;
    returns the real scikit-image data folder, to compare with."""
    real = skimage_data_dir()
    assert real is not None
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    assert skimage_data_dir() is None
    return real


def _cached(tmp_path: Path, name: str) -> Path:
    return tmp_path / "xdg-cache" / "wasi-lab" / f"scikit-image-{SKIMAGE_VERSION}" / name


def test_without_skimage_the_wheel_gives_its_files(
    no_skimage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "images"
    paths = prepare_images(dest)  # the real `pip download` of the pinned wheel
    assert [p.name for p in paths] == [s.file for s in SAMPLES]
    for sample in SKIMAGE_SAMPLES:
        original = (no_skimage / sample.file).read_bytes()
        assert (dest / sample.file).read_bytes() == original
        assert _cached(tmp_path, sample.file).read_bytes() == original
    assert not list(_cached(tmp_path, "").glob(".*"))  # no temporary left behind

    # A filled cache needs no pip: a second folder is served with pip broken.
    monkeypatch.setattr(images, "pip_download_command", lambda dest: FAILING_PIP)
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert prepare_images(dest) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert prepare_images(tmp_path / "second")[1].read_bytes() == paths[1].read_bytes()

    # A corrupted cached member is not copied: it is fetched again from the wheel.
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    _cached(tmp_path, "coffee.png").write_bytes(b"not espresso")
    third = prepare_images(tmp_path / "third")
    assert third[2].read_bytes() == (no_skimage / "coffee.png").read_bytes()
    assert _cached(tmp_path, "coffee.png").read_bytes() == third[2].read_bytes()


WRONG_WHEEL = """
import sys, zipfile
dest = sys.argv[sys.argv.index("-d") + 1]
with zipfile.ZipFile(dest + "/scikit_image-0.26.0-py3-none-any.whl", "w") as zf:
    for name in ("chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"):
        zf.writestr("skimage/data/" + name, b"a different picture")
"""


def test_a_wheel_whose_members_have_the_wrong_sha256_is_refused(
    no_skimage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        images, "pip_download_command", lambda d: [sys.executable, "-c", WRONG_WHEEL, "-d", d]
    )
    dest = tmp_path / "images"
    dest.mkdir()
    (dest / "chelsea.png").write_bytes(b"the learner's own file")
    with pytest.raises(SampleFetchError, match=r"chelsea\.png in scikit_image.*refused"):
        prepare_images(dest)
    assert (dest / "chelsea.png").read_bytes() == b"the learner's own file"  # nothing lost
    assert not _cached(tmp_path, "chelsea.png").exists()


def test_pip_failing_gives_one_clear_line(
    no_skimage: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(images, "pip_download_command", lambda dest: FAILING_PIP)
    dest = tmp_path / "images"
    with pytest.raises(SampleFetchError) as err:
        prepare_images(dest)
    message = str(err.value)
    assert "\n" not in message and "no route to the index" in message
    assert "`pip install scikit-image`" in message and str(dest) in message
    assert not _cached(tmp_path, "chelsea.png").exists()

    # `wasi-lab images prepare`: exit 1 and that line, no traceback.
    args = _cli().parse_args(["images", "prepare", "--dest", str(dest)])
    assert args.func(args) == 1
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and "pip install scikit-image" in out.err
    assert "Traceback" not in out.err and out.out == ""

    # `wasi-lab setup`: a failed step, one line.
    from wasi_lab.setup import _step

    lines: list[str] = []
    assert not _step("images", lambda: str(prepare_images(dest)), lines.append)
    assert len(lines) == 1 and lines[0].startswith("[setup] images: FAILED: cannot get")

    # The way out the line offers: the four files in the images folder, pip still failing.
    for sample in SKIMAGE_SAMPLES:
        (dest / sample.file).write_bytes((no_skimage / sample.file).read_bytes())
    assert [p.name for p in prepare_images(dest)] == [s.file for s in SAMPLES]


def test_sample_cache_dir_per_platform(tmp_path: Path) -> None:
    home = tmp_path
    assert sample_cache_dir({}, "linux", home) == home / ".cache" / "wasi-lab"
    xdg = {"XDG_CACHE_HOME": str(tmp_path / "c")}
    assert sample_cache_dir(xdg, "linux", home) == tmp_path / "c" / "wasi-lab"
    assert (
        sample_cache_dir({"XDG_CACHE_HOME": "rel"}, "linux", home) == home / ".cache" / "wasi-lab"
    )
    assert sample_cache_dir({}, "darwin", home) == home / "Library" / "Caches" / "wasi-lab"
    win = sample_cache_dir({"LOCALAPPDATA": str(tmp_path / "L")}, "win32", home)
    assert win == tmp_path / "L" / "wasi-lab" / "Cache"


def test_load_local_file_with_cap(tmp_path: Path) -> None:
    f = tmp_path / "x.png"
    f.write_bytes(b"\x89PNG" + b"\0" * 100)
    assert load_image_bytes(f) == f.read_bytes()
    with pytest.raises(ImageError, match="limit"):
        load_image_bytes(f, max_bytes=50)
    with pytest.raises(ImageError, match="no such"):
        load_image_bytes(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="scheme"):
        load_image_bytes("file:///etc/passwd")


@pytest.fixture()
def image_server() -> Iterator[str]:
    body = b"J" * 5000

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/missing.jpg":
                self.send_error(404)
                return
            self.send_response(200)
            if self.path != "/chunked.jpg":  # no Content-Length: the cap must still hold
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as base:
        yield base


def test_load_url(image_server: str) -> None:
    assert load_image_bytes(f"{image_server}/a.jpg") == b"J" * 5000
    with pytest.raises(ImageError, match="limit"):
        load_image_bytes(f"{image_server}/a.jpg", max_bytes=1000)
    with pytest.raises(ImageError, match="limit"):
        load_image_bytes(f"{image_server}/chunked.jpg", max_bytes=1000)
    with pytest.raises(ImageError, match="HTTP 404"):
        load_image_bytes(f"{image_server}/missing.jpg")


def _cli() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasi-lab")
    sub = parser.add_subparsers(dest="command", required=True)
    add_models_parser(sub)
    add_images_parser(sub)
    return parser


def test_cli_images_and_models_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli().parse_args(["images", "prepare", "--dest", str(tmp_path)])
    assert args.func(args) == 0
    assert "grace_hopper.jpg" in capsys.readouterr().out
    args = _cli().parse_args(["images", "list", "--dest", str(tmp_path)])
    assert args.func(args) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(SAMPLES)
    args = _cli().parse_args(["models", "list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "efficientnet-lite0" in out and "mobilenet-v2-1.4" in out
    with pytest.raises(SystemExit):
        _cli().parse_args(["models", "fetch", "nonexistent"])


def test_cli_models_prepare(capsys: pytest.CaptureFixture[str]) -> None:
    args = _cli().parse_args(["models", "prepare", "-q"])
    assert args.func(args) == 0
    assert "efficientnet-lite0.pb" in capsys.readouterr().out
