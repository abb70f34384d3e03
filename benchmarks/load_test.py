"""Load test for `wasi-lab serve` on loopback: every answer checked, faults mixed in.

    .venv/bin/python benchmarks/load_test.py                      # 32 clients x 2000 requests
    .venv/bin/python benchmarks/load_test.py --clients 8 --requests 200
    WASI_LAB_LOAD_REQUESTS=200 .venv/bin/python benchmarks/load_test.py

Starts `wasi-lab serve` as a subprocess on a free 127.0.0.1 port (with --allow-private-urls,
--loopback-only-urls and --test-hooks, for the URL and trap faults) and a loopback image
server, measures the single-request latency, then runs the load and prints a table. The
mix: the sample images, rare tall-thin / wide / 16-bit PNGs and a tall-thin progressive
JPEG (good requests, some of which grow a guest), and the faults (broken images, a
progressive JPEG cut inside its last scan, a bomb, a tall-thin PNG past --max-pixels, a
16-bit PNG past the memory cap, forbidden and malformed URLs, origins on 127.0.0.1 that
drip their status line, headers or body, a forced trap).

The server takes no model uploads, so hostile graphs (a constant bomb, constants over the
model budget, 2^32 dimensions, a Reshape to 2^32, huge empty tensors, a cut graph) go to
the same kind of guests another way: a second phase runs the server's own GuestPool in
this process, with the server's memory flags, and its clients interleave classify requests
with `load_model` calls of those graphs on the very guests that serve the requests (the
kit's Python host). Each graph must be refused as BadModel or OutOfMemory, never trap, and
every answer after it must equal the image's answer over HTTP.

Exit code 1 if any answer was wrong or dropped, a fault or a graph got an undocumented
answer, a guest trapped unasked, or a guest's memory is not back under --recycle-memory-mb
at the end. Every loop is bounded: a fixed number of requests, each with a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.loadgen import (  # noqa: E402
    LOAD_MEMORY_FLAGS,
    Fault,
    faults_for,
    rare_images,
    reference_answers,
    run_load,
    sample_images,
    settle_memory,
    zero_png,
)
from tests.servers import HostileOrigin  # noqa: E402
from wasi_lab.models.graphdef import (  # noqa: E402
    DataType,
    GraphBuilder,
    Node,
    TensorShape,
    encode_node,
    encode_varint,
)
from wasi_lab.runtime import (  # noqa: E402
    BadModelError,
    GuestOutOfMemoryError,
    shared_module,
)
from wasi_lab.server.errors import ApiError  # noqa: E402
from wasi_lab.server.launch import start_server_process  # noqa: E402
from wasi_lab.server.limits import Limits, MiB  # noqa: E402
from wasi_lab.server.pool import EpochTicker, GuestPool  # noqa: E402

MAX_BODY = 4 * 1024 * 1024
MODEL = "efficientnet-lite0"


# ------------------------------------------------------------------ images
def progressive_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A real progressive JPEG (Pillow's libjpeg) of smooth noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    picture = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=85, progressive=True)
    return buf.getvalue()


def extra_rare_images() -> dict[str, bytes]:
    """Good tall-thin JPEG: 12000 rows, progressive (every scan walked by the guest)."""
    return {"tall-thin 16x12000 progressive.jpg": progressive_jpeg(16, 12000, seed=1)}


def extra_faults(image: bytes) -> list[Fault]:
    """Faults the shared mix (`loadgen.faults_for`) does not have."""
    cut = progressive_jpeg(640, 480, seed=2)
    last_scan = cut.rindex(b"\xff\xda")
    truncated = cut[: (last_scan + len(cut)) // 2] + b"\xff\xd9"
    return [
        Fault("progressive JPEG cut inside its last scan", 422, "bad_image", truncated),
        Fault("tall-thin PNG past --max-pixels", 413, "image_too_large", zero_png(1, 20_000_000)),
    ]


# ------------------------------------------------------------------ hostile graphs
def _varint_field(n: int, v: int) -> bytes:
    return encode_varint(n << 3) + encode_varint(v)


def _len_field(n: int, payload: bytes) -> bytes:
    return encode_varint(n << 3 | 2) + encode_varint(len(payload)) + payload


def raw_const(name: str, dims: list[int], payload: bytes = b"") -> bytes:
    """A float Const NodeDef written by hand: shapes the GraphBuilder would refuse."""
    shape = b"".join(_len_field(2, _varint_field(1, d) if d else b"") for d in dims)
    tensor = _varint_field(1, 1) + _len_field(2, shape) + payload
    attr = _len_field(1, b"value") + _len_field(2, _len_field(8, tensor))
    dtype = _len_field(1, b"dtype") + _len_field(2, _varint_field(6, 1))
    return _len_field(
        1,
        _len_field(1, name.encode())
        + _len_field(2, b"Const")
        + _len_field(5, dtype)
        + _len_field(5, attr),
    )


def node(op: str, name: str, inputs: list[str], **attrs: object) -> bytes:
    body = encode_node(Node(name, op, inputs, attrs))
    return b"\x0a" + encode_varint(len(body)) + body


def _softmax_of(nodes: bytes, name: str) -> bytes:
    placeholder = node(
        "Placeholder", "input", [], dtype=DataType.DT_FLOAT, shape=TensorShape([1, 4])
    )
    return placeholder + nodes + node("Softmax", "prob", [name])


def hostile_graphs() -> dict[str, bytes]:
    """Small GraphDefs that announce far more than they hold (tests/test_redteam_guest.py
    has each one's story): every one must be refused, cleanly."""
    one = b"\x2d" + struct.pack("<f", 0.5)  # a single float_val
    big_dims = GraphBuilder()
    x = big_dims.placeholder("input", [1, (1 << 32) + 224, 224, 3])
    big_dims.op(
        "Softmax",
        "prob",
        [big_dims.op("Mean", "mean", [x, big_dims.const("axes", np.array([1, 2], np.int32))])],
    )
    reshape = GraphBuilder()
    x = reshape.placeholder("input", [1, 4, 4, 3])
    reshape.op(
        "Softmax",
        "prob",
        [
            reshape.op(
                "Reshape", "r", [x, reshape.const("shape", np.array([1 << 32, -1], np.int64))]
            )
        ],
    )
    good = big_dims.to_bytes()
    return {
        "constant bomb (2^26 floats in 60 bytes)": _softmax_of(raw_const("c", [1 << 26]), "c"),
        "constants over the model budget": _softmax_of(
            b"".join(raw_const(f"c{i}", [1 << 24], one) for i in range(5)), "c0"
        ),
        "huge empty tensor dimension": _softmax_of(
            raw_const("a", [1, 0])
            + raw_const("b", [0, 1 << 30])
            + node("MatMul", "mm", ["a", "b"]),
            "mm",
        ),
        "dimension 2^32 + 224": good,
        "Reshape to 2^32": reshape.to_bytes(),
        "graph cut in half": good[: len(good) // 2],
    }


@dataclass
class GraphRound:
    """What the hostile-graph phase saw."""

    requests: int = 0
    ok: int = 0
    wrong: int = 0
    graphs_ok: int = 0
    graphs_bad: list[str] = field(default_factory=list)
    traps: int = 0
    recycled: int = 0
    replaced: int = 0
    guest_mib: float = 0.0
    ceiling_mib: float = 0.0
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        total = self.graphs_ok + len(self.graphs_bad)
        rows = [
            ("hostile-graph phase: requests", f"{self.requests}"),
            ("good answers", f"{self.ok}"),
            ("wrong answers", f"{self.wrong}"),
            ("graphs refused as documented", f"{self.graphs_ok}/{total}"),
            ("guest traps", f"{self.traps}"),
            ("guests recycled (grew past the ceiling)", f"{self.recycled}"),
            (
                "largest guest at the end",
                f"{self.guest_mib:.1f} MiB (ceiling {self.ceiling_mib:.0f} MiB)",
            ),
            ("wall time", f"{self.wall_s:.1f} s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    @property
    def bad(self) -> bool:
        return bool(
            self.wrong or self.graphs_bad or self.traps or self.guest_mib > self.ceiling_mib
        )


def _load_graph(pb: bytes):
    """A pool job: load `pb` into the checked-out guest; the refusal's class name."""

    def job(worker) -> str:
        guest = worker.guest
        ptr = guest.write_bytes(pb, "model")
        try:
            handle = guest.call("load_model", ptr, len(pb))
        except (BadModelError, GuestOutOfMemoryError) as exc:
            return type(exc).__name__
        finally:
            guest.dealloc(ptr, len(pb))
        guest.call("free_model", handle)
        return "loaded"

    return job


def _classify(data: bytes, top: int):
    def job(worker) -> list:
        pred = worker.classifier.classify(data, top=top)
        return [(t.index, t.prob) for t in pred.top]

    return job


def run_hostile_graphs(
    images: dict[str, bytes],
    expected: dict[str, list],
    *,
    workers: int,
    clients: int = 4,
    requests: int = 60,
    graph_repeat: int = 2,
    memory_limit: int = 192 * MiB,
    recycle_memory: int = 128 * MiB,
) -> GraphRound:
    """`requests` classify jobs and each hostile graph `graph_repeat` times, interleaved,
    from `clients` coroutines on one GuestPool (the server's class and limits)."""
    limits = Limits(
        workers=workers,
        memory_limit=memory_limit,
        recycle_memory=recycle_memory,
        deadline_ms=60_000,
    )
    compiled = shared_module(epochs=True)
    ticker = EpochTicker(compiled.engine, limits.tick_ms).start()
    pool = GuestPool(compiled, MODEL, limits)
    graphs = hostile_graphs()
    names = list(images)
    plan: list[tuple[str, str]] = [("image", names[i % len(names)]) for i in range(requests)]
    extras = [("graph", g) for g in graphs for _ in range(graph_repeat)]
    for k, extra in enumerate(extras):
        plan.insert((k + 1) * len(plan) // (len(extras) + 1), extra)
    result = GraphRound(requests=len(plan), ceiling_mib=recycle_memory / MiB)
    cursor = iter(plan)

    async def client() -> None:
        for kind, name in cursor:
            job = (
                _load_graph(graphs[name])
                if kind == "graph"
                else _classify(images[name], len(expected[name]))
            )
            try:
                got = await asyncio.wait_for(pool.run(job, time.perf_counter(), {}), 120)
            except ApiError as exc:
                result.traps += exc.code == "guest_trap"
                (result.graphs_bad if kind == "graph" else result.problems).append(
                    f"{name}: {exc.code}: {exc.message[:160]}"
                )
                result.wrong += kind == "image"
                continue
            if kind == "graph":
                if got in ("BadModelError", "GuestOutOfMemoryError"):
                    result.graphs_ok += 1
                else:
                    result.graphs_bad.append(f"{name}: {got}")
                continue
            want = [(t["index"], t["prob"]) for t in expected[name]]
            if [i for i, _ in got] == [i for i, _ in want] and all(
                abs(a - b) <= 1e-6 for (_, a), (_, b) in zip(got, want, strict=True)
            ):
                result.ok += 1
            else:
                result.wrong += 1
                result.problems.append(f"{name}: got {got[:2]}, over HTTP {want[:2]}")

    async def drive() -> None:
        await asyncio.gather(*(client() for _ in range(clients)))

    start = time.perf_counter()
    try:
        asyncio.run(drive())
        deadline = time.monotonic() + 120
        snap = pool.snapshot()
        while (snap["replacing"] or snap["idle"] < snap["size"]) and time.monotonic() < deadline:
            time.sleep(0.1)
            snap = pool.snapshot()
        result.wall_s = time.perf_counter() - start
        result.recycled = pool.stats.recycled
        result.replaced = pool.stats.replaced
        result.guest_mib = max(pool.memory_bytes.values(), default=0) / MiB
    finally:
        pool.close()
        ticker.stop()
    return result


# ------------------------------------------------------------------ the run
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=int(os.environ.get("WASI_LAB_LOAD_CLIENTS", 32)))
    p.add_argument(
        "--requests", type=int, default=int(os.environ.get("WASI_LAB_LOAD_REQUESTS", 2000))
    )
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument(
        "--graph-requests",
        type=int,
        default=200,
        help="classify requests of the hostile-graph phase (0: skip it)",
    )
    p.add_argument("--no-faults", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = p.parse_args(argv)

    images = sample_images()
    rare = {} if args.no_faults else {**rare_images(), **extra_rare_images()}
    grace = images["grace_hopper.jpg"]
    with (
        HostileOrigin({"grace_hopper.jpg": grace}, drip_s=0.5, drip_limit_s=10) as img_srv,
        start_server_process(
            "--workers",
            str(args.workers),
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
            "--access-log",
            "off",
        ) as server,
    ):
        expected, single_ms = reference_answers(server.url, images)
        expected.update(reference_answers(server.url, rare, repeat=1)[0])
        faults = (
            []
            if args.no_faults
            else faults_for(
                MAX_BODY, grace, slow_url=f"{img_srv.url}/slow/grace_hopper.jpg", origin=img_srv.url
            )
            + extra_faults(grace)
        )
        with tqdm(
            total=args.requests + len(faults) + 5 + 2 * len(rare),
            desc="requests",
            unit="req",
            file=sys.stderr,
        ) as bar:
            result = run_load(
                server.url,
                images,
                expected,
                clients=args.clients,
                requests=args.requests,
                faults=faults,
                single_ms=single_ms,
                url_requests=[
                    (f"{img_srv.url}/grace_hopper.jpg", expected["grace_hopper.jpg"][0]["label"])
                ]
                * 5,
                cores=os.cpu_count() or 1,
                rare=rare,
                progress=bar.update,
            )
        settle_memory(server.url, result)
    print(f"server: {server.url} ({args.workers} guests), images: {', '.join(images)}")
    print(result.table())
    for problem in result.problems[:10] + result.faults_bad:
        print("problem:", problem)
    graphs = None
    if args.graph_requests and not args.no_faults:
        graphs = run_hostile_graphs(
            images,
            expected,
            workers=args.workers,
            clients=min(args.clients, 8),
            requests=args.graph_requests,
        )
        print(graphs.table())
        for problem in graphs.problems[:10] + graphs.graphs_bad:
            print("problem:", problem)
    if args.json:
        out = result.to_dict()
        if graphs is not None:
            out["hostile_graphs"] = {
                k: v for k, v in graphs.__dict__.items() if k != "problems"
            } | {"problems": graphs.problems[:20]}
        print(json.dumps(out, indent=2))
    bad = (
        result.wrong
        or result.dropped
        or result.faults_bad
        or result.traps
        or result.guest_mib > result.ceiling_mib
        or (graphs is not None and graphs.bad)
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
