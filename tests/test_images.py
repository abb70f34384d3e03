"""Sample images, loading user images with a size cap, and the models/images CLI."""

from __future__ import annotations

import argparse
import http.server
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback import serve
from wasi_lab.images import (
    SAMPLES,
    ImageError,
    list_images,
    load_image_bytes,
    prepare_images,
    sample_source,
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
