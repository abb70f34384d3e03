"""A bounded loopback load test with faults mixed in: 0 wrong, 0 dropped, faults documented.

The size is a parameter: WASI_LAB_LOAD_CLIENTS (8) and WASI_LAB_LOAD_REQUESTS (200) here;
benchmarks/load_test.py runs the full 32 x 2000 form and prints the latency table.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.loadgen import (
    LOAD_MEMORY_FLAGS,
    faults_for,
    rare_images,
    reference_answers,
    run_load,
    sample_images,
    settle_memory,
)
from tests.servers import HostileOrigin
from wasi_lab.server.launch import start_server_process

MAX_BODY = 1024 * 1024


@pytest.mark.slow
def test_load_with_faults_every_answer_right(tmp_path) -> None:
    clients = int(os.environ.get("WASI_LAB_LOAD_CLIENTS", 8))
    requests = int(os.environ.get("WASI_LAB_LOAD_REQUESTS", 200))
    images = sample_images()
    assert len(images) >= 3, "run `make setup` for the sample images"
    grace = images["grace_hopper.jpg"]
    rare = rare_images()
    with HostileOrigin({"grace_hopper.jpg": grace}, drip_s=0.5, drip_limit_s=10) as img_srv, \
            start_server_process("--allow-private-urls", "--loopback-only-urls",
                                 *LOAD_MEMORY_FLAGS, "--test-hooks",
                                 "--max-body", str(MAX_BODY),
                                 "--fetch-timeout", "1", "--deadline-ms", "60000",
                                 log_path=tmp_path / "serve.log") as server:
        expected, single_ms = reference_answers(server.url, images, repeat=1)
        expected.update(reference_answers(server.url, rare, repeat=1)[0])
        faults = faults_for(MAX_BODY, grace, slow_url=f"{img_srv.url}/slow/grace_hopper.jpg",
                            origin=img_srv.url)
        # article-style URL requests are good requests that must be right too
        urls = [(f"{img_srv.url}/grace_hopper.jpg", "military uniform")] * 3
        result = run_load(server.url, images, expected, clients=clients, requests=requests,
                          faults=faults, url_requests=urls, single_ms=single_ms,
                          cores=os.cpu_count() or 1, rare=rare)
        settle_memory(server.url, result)
    print("\n" + result.table())
    assert result.wrong == 0, result.problems[:5]
    assert result.dropped == 0, result.problems[:5]
    assert result.ok == result.good == requests + len(urls) + 2 * len(rare)
    assert result.traps == 0
    assert result.recycled >= 1  # the 16-bit PNG grew a guest past the ceiling ...
    assert result.guest_mib <= result.ceiling_mib  # ... and memory came back
    assert result.faults_bad == [] and result.faults_ok == len(faults)
    assert expected["grace_hopper.jpg"][0]["label"] == "military uniform"
