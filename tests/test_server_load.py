"""A bounded loopback load test with faults mixed in: 0 wrong, 0 dropped, faults documented.

The size is a parameter: WASI_LAB_LOAD_CLIENTS (8) and WASI_LAB_LOAD_REQUESTS (200) here;
benchmarks/load_test.py runs the full 32 x 2000 form and prints the latency table.
"""

from __future__ import annotations

import os

import pytest

from wasi_lab.server.harness import ImageServer, start_server_process
from wasi_lab.server.loadgen import faults_for, reference_answers, run_load, sample_images

MAX_BODY = 1024 * 1024


@pytest.mark.slow
def test_load_with_faults_every_answer_right(tmp_path) -> None:
    clients = int(os.environ.get("WASI_LAB_LOAD_CLIENTS", 8))
    requests = int(os.environ.get("WASI_LAB_LOAD_REQUESTS", 200))
    images = sample_images()
    assert len(images) >= 3, "run `make setup` for the sample images"
    grace = images["grace_hopper.jpg"]
    with ImageServer({"grace_hopper.jpg": grace}, drip_s=0.5) as img_srv, \
            start_server_process("--allow-private-urls", "--loopback-only-urls",
                                 "--test-hooks", "--max-body", str(MAX_BODY),
                                 "--fetch-timeout", "1", "--deadline-ms", "60000",
                                 log_path=tmp_path / "serve.log") as server:
        expected, single_ms = reference_answers(server.url, images, repeat=1)
        faults = faults_for(MAX_BODY, grace, slow_url=f"{img_srv.url}/slow/grace_hopper.jpg")
        # article-style URL requests are good requests that must be right too
        urls = [(f"{img_srv.url}/grace_hopper.jpg", "military uniform")] * 3
        result = run_load(server.url, images, expected, clients=clients, requests=requests,
                          faults=faults, url_requests=urls, single_ms=single_ms,
                          cores=os.cpu_count() or 1)
    print("\n" + result.table())
    assert result.wrong == 0, result.problems[:5]
    assert result.dropped == 0, result.problems[:5]
    assert result.ok == result.good == requests + len(urls)
    assert result.faults_bad == [] and result.faults_ok == len(faults)
    assert expected["grace_hopper.jpg"][0]["label"] == "military uniform"
