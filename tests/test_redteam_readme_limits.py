"""README's prediction-API tables against the server: every limit's flag, default and answer.

The README states each limit of `wasi-lab serve`, its default and what a client gets past
it, and lists every error code with its status. This reads both tables and fails when
they and the code disagree: a flag renamed or added without a row, a default changed on
one side only, a status or code that is not the one `ERROR_CODES` has, a code missing
from the table. Then it crosses the limits that are cheap to cross on a real server on
127.0.0.1 and checks that the answer is the first one the README's row names.
"""

from __future__ import annotations

import argparse
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from benchmarks.loadgen import zero_png
from tests.servers import HostileOrigin, run_in_thread
from tests.test_redteam_url import no_escape, socket_guard  # noqa: F401 - fixtures
from wasi_lab.paths import REPO_ROOT
from wasi_lab.server.cli import add_serve_parser
from wasi_lab.server.errors import ERROR_CODES
from wasi_lab.server.limits import Limits, MiB

#: `serve` options that are not limits; each must still be named in the API section.
NOT_LIMITS = {
    "--host",
    "--port",
    "--model",
    "--workers",
    "--tick-ms",
    "--allow-private-urls",
    "--loopback-only-urls",
    "--test-hooks",
    "--access-log",
    "--module",
    "--help",
}
UNITS = {"MiB": MiB, "s": 1, "": 1}


def api_section() -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## The prediction API")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def table(section: str, header: str) -> list[list[str]]:
    """The rows (cells stripped) of the Markdown table whose header row starts `header`."""
    lines = section[section.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    assert rows, header
    return rows


def serve_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser()
    add_serve_parser(top.add_subparsers())
    return top._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]


def serve_options() -> dict[str, argparse.Action]:
    return {
        opt: action
        for action in serve_parser()._actions
        for opt in action.option_strings
        if opt.startswith("--")
    }


def limit_rows() -> dict[str, tuple[str, str]]:
    """flag -> (default as the README writes it, what a client gets past it)."""
    rows = {}
    for cells in table(api_section(), "| flag (default) |"):
        m = re.fullmatch(r"`(--[a-z-]+)` \(([^)]*)\)", cells[0])
        assert m, f"a limit row's first cell is not `--flag` (default): {cells[0]!r}"
        rows[m[1]] = (m[2], cells[2])
    return rows


def readme_value(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(MiB|s|)", text)
    assert m, f"default {text!r} is not a number with an optional MiB or s"
    return float(m[1]) * UNITS[m[2]]


def test_every_limit_flag_has_a_row_and_its_default_is_the_code_default() -> None:
    options = serve_options()
    rows = limit_rows()
    limits = set(options) - NOT_LIMITS
    assert set(rows) == limits, (
        f"flags without a README row: {limits - set(rows)}; rows "
        f"without a flag: {set(rows) - limits}"
    )
    for flag, (default, _) in rows.items():
        assert readme_value(default) == float(options[flag].default), (
            flag,
            default,
            options[flag].default,
        )
    section = api_section()
    for flag in NOT_LIMITS - {"--help"}:
        assert f"`{flag}" in section or f"{flag} " in section, f"{flag} is not documented"


def test_every_answer_past_a_limit_is_a_real_status_and_code() -> None:
    for flag, (_, past) in limit_rows().items():
        for status, code in re.findall(r"(\d{3}) `([a-z_]+)`", past):
            assert code in ERROR_CODES, (flag, code)
            assert ERROR_CODES[code][0] == int(status), (flag, status, code, ERROR_CODES[code][0])


def test_the_error_table_is_the_servers_error_table() -> None:
    seen: dict[str, int] = {}
    for cells in table(api_section(), "| status | code | when |"):
        statuses = [int(s) for s in re.findall(r"\d{3}", cells[0])]
        groups = cells[1].split(" / ")
        assert len(groups) in (1, len(statuses)), cells
        for i, group in enumerate(groups):
            for code in re.findall(r"`([a-z_]+)`", group):
                status = statuses[i] if len(groups) > 1 else statuses[0]
                seen[code] = status
    assert seen == {code: status for code, (status, _) in ERROR_CODES.items()}


def test_flags_named_by_error_descriptions_exist() -> None:
    options = serve_options()
    for code, (_, when) in ERROR_CODES.items():
        for flag in re.findall(r"--[a-z][a-z-]*[a-z]", when):
            assert flag in options, (code, flag)


# ------------------------------------------------------------------ crossing them for real
@pytest.fixture(scope="module")
def origin() -> Iterator[HostileOrigin]:
    with HostileOrigin(
        {"big.png": zero_png(64, 64) + bytes(40_000), "small.png": zero_png(8, 8)},
        drip_s=0.3,
        drip_limit_s=10,
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def small() -> Iterator:
    limits = Limits(
        workers=1,
        max_body=256 * 1024,
        max_pixels=8_000_000,
        memory_limit=128 * MiB,
        max_download=32 * 1024,
        max_redirects=1,
        fetch_timeout=1.0,
        loopback_only_urls=True,
        deadline_ms=1500,
        header_timeout=1.0,
        body_timeout=1.0,
        test_hooks=True,
    )
    with run_in_thread(limits, access_log=None) as server:
        yield server


def _post(server, path: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=30)


def _raw(server, data: bytes, trickle: bool = False) -> bytes:
    """Send `data` (a byte every 0.2 s if `trickle`), read the answer until close."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        if trickle:
            sock.sendall(data)
            sock.settimeout(0.2)
            answer = b""
            for _ in range(50):
                try:
                    sock.sendall(b"x")
                except OSError:
                    break
                try:
                    answer += sock.recv(65536)
                except TimeoutError:
                    continue
                if b"\r\n\r\n" in answer:
                    break
            sock.settimeout(5)
            try:  # the rest of the answer, until the server closes
                while chunk := sock.recv(65536):
                    answer += chunk
            except (TimeoutError, ConnectionResetError):
                pass
            return answer
        if data:
            sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
        return b"".join(chunks)


def _answer(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, httpx.Response(status, content=body).json()["error"]["code"]


CROSSINGS = {
    "--max-body": lambda s, o: _post(s, "/predict", bytes(256 * 1024 + 1)),
    "--max-pixels": lambda s, o: _post(s, "/predict", zero_png(4000, 2500)),
    "--memory-limit-mb": lambda s, o: _post(s, "/predict", zero_png(2800, 2800, 16, 6)),
    "--deadline-ms": lambda s, o: _post(
        s, "/predict", zero_png(8, 8), **{"X-Test-Spin-Ms": "4000"}
    ),
    "--max-download": lambda s, o: _post(s, "/", f"{o.url}/big.png".encode()),
    "--fetch-timeout": lambda s, o: _post(s, "/", f"{o.url}/drip-body/small.png".encode()),
    "--max-redirects": lambda s, o: _post(s, "/", f"{o.url}/redirect/3/big.png".encode()),
    "--header-timeout": lambda s, o: _raw(s, b"POST /predict HTTP/1.1\r\nHost: x\r\n"),
    "--body-timeout": lambda s, o: _raw(
        s, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", trickle=True
    ),
}


@pytest.mark.parametrize("flag", sorted(CROSSINGS))
def test_crossing_a_limit_gets_the_answer_its_row_names(small, origin, flag: str) -> None:
    past = limit_rows()[flag][1]
    want = re.search(r"(\d{3}) `([a-z_]+)`", past)
    assert want, f"{flag}: the README names no status and code: {past!r}"
    start = time.monotonic()
    got = CROSSINGS[flag](small, origin)
    if isinstance(got, bytes):
        status, code = _answer(got)
    else:
        status, code = got.status_code, got.json()["error"]["code"]
    assert (status, code) == (int(want[1]), want[2]), (flag, status, code)
    assert time.monotonic() - start < 15, flag
