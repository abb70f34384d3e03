"""Load test for `wasi-lab serve` on loopback: every answer checked, faults mixed in.

    .venv/bin/python benchmarks/load_test.py                      # 32 clients x 2000 requests
    .venv/bin/python benchmarks/load_test.py --clients 8 --requests 200
    WASI_LAB_LOAD_REQUESTS=200 .venv/bin/python benchmarks/load_test.py

Starts `wasi-lab serve` as a subprocess on a free 127.0.0.1 port (with --allow-private-urls
and --test-hooks, for the URL and trap faults) and a loopback image server, measures the
single-request latency, then runs the load and prints a table. The mix: the sample
images, rare tall-thin / wide / 16-bit PNGs (good requests that grow a guest), and the
faults (broken images, a bomb, a 16-bit PNG past the memory cap, forbidden and malformed
URLs, origins that drip their status line, headers or body, a forced trap). Exit code 1
if any answer was wrong or dropped, a fault got an undocumented answer, a guest trapped
unasked, or a guest's memory is not back under --recycle-memory-mb at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from benchmarks.loadgen import (  # noqa: E402
    LOAD_MEMORY_FLAGS,
    faults_for,
    rare_images,
    reference_answers,
    run_load,
    sample_images,
    settle_memory,
)
from tests.servers import HostileOrigin  # noqa: E402
from wasi_lab.server.launch import start_server_process  # noqa: E402

MAX_BODY = 4 * 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int,
                   default=int(os.environ.get("WASI_LAB_LOAD_CLIENTS", 32)))
    p.add_argument("--requests", type=int,
                   default=int(os.environ.get("WASI_LAB_LOAD_REQUESTS", 2000)))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = p.parse_args(argv)

    images = sample_images()
    rare = {} if args.no_faults else rare_images()
    grace = images["grace_hopper.jpg"]
    with HostileOrigin({"grace_hopper.jpg": grace}, drip_s=0.5, drip_limit_s=10) as img_srv, \
            start_server_process("--workers", str(args.workers), "--allow-private-urls",
                                 "--loopback-only-urls", *LOAD_MEMORY_FLAGS,
                                 "--test-hooks", "--max-body",
                                 str(MAX_BODY), "--fetch-timeout", "1",
                                 "--deadline-ms", "60000", "--access-log", "off") as server:
        expected, single_ms = reference_answers(server.url, images)
        expected.update(reference_answers(server.url, rare, repeat=1)[0])
        faults = [] if args.no_faults else faults_for(
            MAX_BODY, grace, slow_url=f"{img_srv.url}/slow/grace_hopper.jpg",
            origin=img_srv.url)
        with tqdm(total=args.requests + len(faults) + 5 + 2 * len(rare), desc="requests",
                  unit="req", file=sys.stderr) as bar:
            result = run_load(server.url, images, expected, clients=args.clients,
                              requests=args.requests, faults=faults, single_ms=single_ms,
                              url_requests=[(f"{img_srv.url}/grace_hopper.jpg",
                                             expected["grace_hopper.jpg"][0]["label"])] * 5,
                              cores=os.cpu_count() or 1, rare=rare, progress=bar.update)
        settle_memory(server.url, result)
    print(f"server: {server.url} ({args.workers} guests), images: {', '.join(images)}")
    print(result.table())
    for problem in result.problems[:10] + result.faults_bad:
        print("problem:", problem)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    bad = result.wrong or result.dropped or result.faults_bad or result.traps or \
        result.guest_mib > result.ceiling_mib
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
