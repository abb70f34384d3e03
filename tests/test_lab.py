"""Notebook 06's helpers: a lab server of at most 2 guests, a burst read from the access log,
and sentences about scaling that come from the measured numbers."""

from __future__ import annotations

import os

import pytest

from wasi_lab.paths import IMAGES_DIR
from wasi_lab.server import lab


def test_lab_workers_default_to_at_most_two(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert lab.lab_workers() == 2  # not one per CPU: each guest holds its own model copy
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert lab.lab_workers() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert lab.lab_workers() == 1
    assert lab.lab_workers(5) == 5  # asked for: given
    with pytest.raises(ValueError, match="at least 1"):
        lab.lab_workers(0)


def _rows(*rps: float) -> list[dict]:
    return [
        {
            "clients": n,
            "requests": 3 * n,
            "median_ms": 100.0 * n,
            "max_ms": 120.0 * n,
            "throughput_rps": r,
        }
        for n, r in zip((1, 2, 4), rps, strict=False)
    ]


def test_scaling_sentence_follows_the_measured_ratio():
    flat = lab.describe_scaling(_rows(7.8, 7.4, 7.5), n_guests=2, cpus=2)
    assert "0.95x" in flat and "did not double" in flat and "2 cores" in flat
    assert "in parallel" not in flat.split("\n")[-2]
    doubled = lab.describe_scaling(_rows(5.0, 9.5, 9.8), n_guests=2, cpus=8)
    assert "1.90x" in doubled and "ran in parallel" in doubled and "did not" not in doubled
    partly = lab.describe_scaling(_rows(5.0, 6.5, 6.6), n_guests=2, cpus=2)
    assert "partly in parallel" in partly
    single = lab.describe_scaling(_rows(5.0, 5.0, 5.0), n_guests=1, cpus=1)
    assert "one guest" in single
    # More clients than guests: the queue sentence, with the numbers of the rows.
    assert "4 clients > 2 guests" in flat and "from 100 to 400 ms" in flat


@pytest.fixture(scope="module")
def server():
    srv = lab.start_lab_server()
    yield srv
    assert srv.stop() == 0


def test_lab_server_runs_at_most_two_guests(server):
    assert lab.guests(server) == min(2, os.cpu_count() or 1)
    assert lab.health(server)["limits"]["workers"] == lab.guests(server)


def test_a_refusal_is_a_status_and_a_code(server):
    data = (IMAGES_DIR / "grace_hopper.jpg").read_bytes()
    r = lab.post(server, "/predict", data, params={"model": "resnet-50"})
    assert lab.status_and_code(r) == (404, "unknown_model")
    assert lab.status_and_code(lab.post(server, "/predict", data)) == (200, None)


def test_burst_records_come_from_the_access_log(server):
    import statistics

    records = lab.burst(server)
    g = lab.guests(server)
    assert [r["burst"] for r in records] == list(range(2 * g + 1))
    assert all(r["path"] == "/predict" and r["status"] == 200 for r in records)
    # First come, first served with g guests: g start at once, the other g + 1 queue, and
    # the one that queued longest waited for two requests ahead of it (about 2 service times).
    assert lab.found_free(records) == g
    service = statistics.median(r["total_ms"] - r["queue"] for r in records)
    assert max(r["queue"] for r in records) > service
    # A second burst is told apart from the first (its own run tag).
    again = lab.burst(server, n=2)
    assert [r["burst"] for r in again] == [0, 1]
    assert not {r["query"] for r in again} & {r["query"] for r in records}


def test_found_free_counts_the_requests_that_did_not_queue():
    recs = [{"queue": q, "total_ms": q + 100.0} for q in (0.5, 3.0, 90.0, 110.0, 210.0)]
    assert lab.found_free(recs) == 2  # 90 ms is most of a 100 ms service: it waited


def test_start_lab_server_asks_for_the_lab_workers(monkeypatch):
    seen: list[tuple] = []
    monkeypatch.setattr(lab, "start_server_process", lambda *a, **kw: seen.append(a))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    lab.start_lab_server()
    lab.start_lab_server(3)
    for args, want in zip(seen, ("2", "3"), strict=True):
        assert args[args.index("--workers") + 1] == want
