"""A bounded loopback load test with faults mixed in: 0 wrong, 0 dropped, faults documented.

The size is a parameter: WASI_LAB_LOAD_CLIENTS (8) and WASI_LAB_LOAD_REQUESTS (200) here;
benchmarks/load_test.py runs the full 32 x 2000 form and prints the latency table. Its
extra faults, its tall-thin JPEG and its hostile-graph phase are run here in small form.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

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


def load_test() -> ModuleType:
    """benchmarks/load_test.py as a module (registered, so its dataclasses resolve)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "load_test.py"
    spec = importlib.util.spec_from_file_location("load_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["load_test"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def answers() -> dict:
    """Filled by the HTTP test: each image's answer over HTTP, for the graph phase."""
    return {}


@pytest.mark.slow
def test_load_with_faults_every_answer_right(tmp_path, answers: dict) -> None:
    bench = load_test()
    clients = int(os.environ.get("WASI_LAB_LOAD_CLIENTS", 8))
    requests = int(os.environ.get("WASI_LAB_LOAD_REQUESTS", 200))
    images = sample_images()
    assert len(images) >= 3, "run `make setup` for the sample images"
    grace = images["grace_hopper.jpg"]
    rare = {**rare_images(), **bench.extra_rare_images()}
    with (
        HostileOrigin({"grace_hopper.jpg": grace}, drip_s=0.5, drip_limit_s=10) as img_srv,
        start_server_process(
            "--allow-private-urls",
            "--loopback-only-urls",
            *LOAD_MEMORY_FLAGS,
            "--test-hooks",
            "--max-body",
            str(MAX_BODY),
            "--fetch-timeout",
            "1",
            "--deadline-ms",
            "60000",
            log_path=tmp_path / "serve.log",
        ) as server,
    ):
        expected, single_ms = reference_answers(server.url, images, repeat=1)
        answers.update(expected)
        expected.update(reference_answers(server.url, rare, repeat=1)[0])
        faults = faults_for(
            MAX_BODY, grace, slow_url=f"{img_srv.url}/slow/grace_hopper.jpg", origin=img_srv.url
        ) + bench.extra_faults(grace)
        # article-style URL requests are good requests that must be right too
        urls = [(f"{img_srv.url}/grace_hopper.jpg", "military uniform")] * 3
        result = run_load(
            server.url,
            images,
            expected,
            clients=clients,
            requests=requests,
            faults=faults,
            url_requests=urls,
            single_ms=single_ms,
            cores=os.cpu_count() or 1,
            rare=rare,
        )
        settle_memory(server.url, result)
    print("\n" + result.table())
    assert result.wrong == 0, result.problems[:5]
    assert result.dropped == 0, result.problems[:5]
    assert result.ok == result.good == requests + len(urls) + 2 * len(rare)
    assert result.traps == 0
    assert result.recycled >= 1  # the 16-bit PNG grew a guest past the ceiling ...
    assert result.guest_mib <= result.ceiling_mib  # ... and memory came back
    assert result.faults_bad == [] and result.faults_ok == len(faults)
    assert {"progressive JPEG cut inside its last scan", "tall-thin PNG past --max-pixels"} <= {
        f.name for f in faults
    }
    assert expected["grace_hopper.jpg"][0]["label"] == "military uniform"


@pytest.mark.slow
def test_hostile_graphs_between_requests_change_no_answer(answers: dict) -> None:
    """The server takes no model uploads: the graphs go into the pool's guests directly,
    between classify requests on those same guests; each is refused, no guest traps, the
    answers equal the HTTP ones, and the guest the budget graph grew is recycled."""
    if not answers:
        pytest.skip("needs the HTTP test's answers (run the whole file)")
    bench = load_test()
    images = sample_images()
    graphs = bench.run_hostile_graphs(
        images, answers, workers=2, clients=3, requests=24, graph_repeat=1
    )
    print("\n" + graphs.table())
    assert graphs.graphs_bad == [] and graphs.graphs_ok == len(bench.hostile_graphs())
    assert graphs.wrong == 0 and graphs.ok == 24, graphs.problems[:5]
    assert graphs.traps == 0
    assert graphs.recycled >= 1  # "constants over the model budget" grows a guest ~130 MiB
    assert graphs.guest_mib <= graphs.ceiling_mib
