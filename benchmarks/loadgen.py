"""A bounded loopback load test with faults mixed in, checking every answer.

benchmarks/load_test.py runs it at full size; tests/test_server_load.py at a small one.

Each good request's answer must equal the answer the same image got when it was sent
alone (top classes, indices and probabilities): a pool that mixed up guests, models or
buffers would show up here as a *wrong* answer, not only as latency. Each fault must get
its documented status and error code, and the requests around it must still be right.
Rare images (tall-thin and wide PNGs that grow a guest's memory) are good requests too;
at the end every guest's memory must be back under the recycling ceiling.
"""

from __future__ import annotations

import math
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from wasi_lab.paths import IMAGES_DIR
from wasi_lab.pngs import SIGNATURE, decompression_bomb, png_chunk


@dataclass
class Fault:
    """A request that must fail in a documented way."""

    name: str
    status: int
    code: str
    body: bytes = b""
    path: str = "/predict"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadResult:
    clients: int
    requests: int
    good: int = 0
    ok: int = 0
    wrong: int = 0
    dropped: int = 0
    faults_ok: int = 0
    faults_bad: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    single_ms: float = 0.0
    cores: int = 1
    traps: int = 0  # guest_trap answers other than the deliberate one
    guest_mib: float = 0.0  # the largest guest's memory once the pool is idle
    ceiling_mib: float = 0.0  # --recycle-memory-mb
    recycled: int = 0
    problems: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        if not xs:
            return math.nan
        return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]

    @property
    def throughput(self) -> float:
        """Good answers per second over the whole run."""
        return self.ok / self.wall_s if self.wall_s else 0.0

    @property
    def target(self) -> float:
        """0.8 x cores / single-inference latency: what a fair pool should reach."""
        return 0.8 * self.cores / (self.single_ms / 1000) if self.single_ms else 0.0

    def table(self) -> str:
        rows = [
            ("clients", f"{self.clients}"),
            ("requests", f"{self.requests}"),
            ("good answers", f"{self.ok}"),
            ("wrong answers", f"{self.wrong}"),
            ("dropped", f"{self.dropped}"),
            ("unexpected guest traps", f"{self.traps}"),
            (
                "faults answered as documented",
                f"{self.faults_ok}/{self.faults_ok + len(self.faults_bad)}",
            ),
            ("p50 latency", f"{self.percentile(50):.1f} ms"),
            ("p90 latency", f"{self.percentile(90):.1f} ms"),
            ("p99 latency", f"{self.percentile(99):.1f} ms"),
            ("max latency", f"{max(self.latencies_ms, default=math.nan):.1f} ms"),
            ("wall time", f"{self.wall_s:.1f} s"),
            ("throughput", f"{self.throughput:.2f} req/s"),
            ("single-request latency", f"{self.single_ms:.1f} ms"),
            ("target (0.8 x cores / single)", f"{self.target:.2f} req/s"),
            ("target met", "yes" if self.throughput >= self.target else "no"),
            ("guests recycled (grew past the ceiling)", f"{self.recycled}"),
            (
                "largest guest at the end",
                f"{self.guest_mib:.1f} MiB (ceiling {self.ceiling_mib:.0f} MiB)",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def to_dict(self) -> dict:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "ok": self.ok,
            "wrong": self.wrong,
            "dropped": self.dropped,
            "faults_ok": self.faults_ok,
            "faults_bad": self.faults_bad,
            "p50_ms": self.percentile(50),
            "p90_ms": self.percentile(90),
            "p99_ms": self.percentile(99),
            "throughput": self.throughput,
            "single_ms": self.single_ms,
            "target": self.target,
            "wall_s": self.wall_s,
            "cores": self.cores,
            "traps": self.traps,
            "guest_mib": self.guest_mib,
            "ceiling_mib": self.ceiling_mib,
            "recycled": self.recycled,
            "problems": self.problems[:20],
        }


def sample_images(directory: Path = IMAGES_DIR) -> dict[str, bytes]:
    """The bundled sample images (`make setup` puts them in images/)."""
    return {
        p.name: p.read_bytes()
        for p in sorted(Path(directory).iterdir())
        if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    }


def zero_png(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """An all-zero PNG of any size, bit depth and colour type, in a few hundred bytes."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = 1 + -(-width * channels * depth // 8)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(bytes(row * height), 9))
        + png_chunk(b"IEND", b"")
    )


#: The memory flags the load test runs with (`--memory-limit-mb`, `--recycle-memory-mb`), so
#: that images within `--max-pixels` cross both: a fresh guest holds about 68 MiB; the
#: 16-bit RGBA 3000x3000 PNG of `rare_images` grows it by about 100 MiB (past the ceiling,
#: under the cap) and the 4096x4096 one of `faults_for` would need about 180 (past the cap).
LOAD_MEMORY_FLAGS = ("--memory-limit-mb", "192", "--recycle-memory-mb", "128")


def rare_images() -> dict[str, bytes]:
    """Good but odd images: tall-thin and wide ones the guest resizes a row at a time
    (cheap), and a 16-bit RGBA one whose decode (8 bytes a pixel) grows a guest past the
    `LOAD_MEMORY_FLAGS` ceiling, so it is recycled."""
    return {
        "tall-thin 2x200000.png": zero_png(2, 200_000),
        "wide 100000x1.png": zero_png(100_000, 1),
        "16-bit RGBA 3000x3000.png": zero_png(3000, 3000, 16, 6),
    }


def reference_answers(
    url: str, images: dict[str, bytes], repeat: int = 3
) -> tuple[dict[str, list], float]:
    """Each image's answer when sent alone, and the median single-request latency (ms)."""
    answers: dict[str, list] = {}
    times: list[float] = []
    with httpx.Client(timeout=60) as client:
        for name, data in images.items():
            for _ in range(repeat):
                t0 = time.perf_counter()
                r = client.post(f"{url}/predict", content=data)
                times.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                answers[name] = r.json()["top"]
    times.sort()
    return answers, times[len(times) // 2]


def faults_for(
    max_body: int,
    image: bytes,
    slow_url: str | None = None,
    test_hooks: bool = True,
    loopback_only: bool = True,
    origin: str | None = None,
    image_name: str = "grace_hopper.jpg",
) -> list[Fault]:
    """The faults of the brief: broken images, a bomb, a big body, bad URLs, a trap; with
    `origin` (the URL of a tests.servers.HostileOrigin) the slow origins that drip status
    line and headers."""
    corrupt = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
    faults = [
        Fault("corrupt image", 422, "bad_image", corrupt),
        Fault("truncated image", 422, "bad_image", image[: len(image) // 8]),
        Fault("zero bytes", 400, "empty_body", b""),
        Fault("decompression bomb", 413, "image_too_large", decompression_bomb()),
        Fault("oversized body", 413, "body_too_large", b"\0" * (max_body + 1)),
        Fault(
            "metadata address URL",
            403,
            "forbidden_address",
            b"http://169.254.169.254/latest/meta-data/",
            path="/",
        ),
    ]
    if loopback_only:  # refused by the check itself: no packet leaves the machine
        faults.append(
            Fault(
                "private address URL",
                403,
                "forbidden_address",
                b"http://10.0.0.1/cat.jpg",
                path="/",
            )
        )
    faults += [
        Fault(
            "16-bit RGBA PNG past the memory cap",
            413,
            "guest_out_of_memory",
            zero_png(4096, 4096, 16, 6),
        ),
        Fault(
            "metadata in NAT64 dress",
            403,
            "forbidden_address",
            b"http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
            path="/",
        ),
        Fault("malformed URL", 400, "bad_url", b"http://[::1/", path="/"),
    ]
    if slow_url:
        faults.append(Fault("slow URL", 504, "fetch_timeout", slow_url.encode(), path="/"))
    if origin:
        for route in ("drip-status", "drip-headers", "drip-body"):
            faults.append(
                Fault(
                    f"origin drips ({route})",
                    504,
                    "fetch_timeout",
                    f"{origin}/{route}/{image_name}".encode(),
                    path="/",
                )
            )
    if test_hooks:
        faults.append(Fault("guest trap", 500, "guest_trap", image, headers={"X-Test-Trap": "1"}))
    return faults


def run_load(
    url: str,
    images: dict[str, bytes],
    expected: dict[str, list],
    *,
    clients: int = 8,
    requests: int = 200,
    faults: list[Fault] | None = None,
    url_requests: list[tuple[str, str]] | None = None,
    single_ms: float = 0.0,
    cores: int = 1,
    timeout: float = 120,
    rare: dict[str, bytes] | None = None,
    rare_repeat: int = 2,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """`requests` requests from `clients` threads, images in turn, faults spread evenly.

    `url_requests` are (image URL, expected label) pairs sent the article's way (`POST /`
    with the URL as the body); they count as good requests. `rare` images (answers in
    `expected` too) are sent `rare_repeat` times each, spread like the faults.
    """
    faults = faults or []
    rare = rare or {}
    images = {**images, **rare}
    names = [n for n in images if n not in rare]
    plan: list[tuple[str, object]] = [("image", names[i % len(names)]) for i in range(requests)]
    extras: list[tuple[str, object]] = (
        [("fault", f) for f in faults]
        + [("url", pair) for pair in url_requests or []]
        + [("image", name) for name in rare for _ in range(rare_repeat)]
    )
    for k, extra in enumerate(extras):
        plan.insert((k + 1) * len(plan) // (len(extras) + 1), extra)
    goods = sum(1 for kind, _ in plan if kind != "fault")
    result = LoadResult(
        clients=clients, requests=len(plan), single_ms=single_ms, cores=cores, good=goods
    )
    lock = threading.Lock()
    cursor = iter(range(len(plan)))

    def check_good(name: str, r: httpx.Response) -> bool:
        if r.status_code != 200:
            result.problems.append(f"{name}: HTTP {r.status_code} {r.text[:200]}")
            return False
        got = r.json()["top"]
        want = expected[name]
        same = [t["index"] for t in got] == [t["index"] for t in want] and all(
            abs(a["prob"] - b["prob"]) <= 1e-6 for a, b in zip(got, want, strict=True)
        )
        if not same:
            result.problems.append(f"{name}: got {got[:2]}, alone it was {want[:2]}")
        return same

    def client_loop() -> None:
        with httpx.Client(timeout=timeout) as client:
            while True:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                kind, item = plan[i]
                t0 = time.perf_counter()
                try:
                    if kind == "image":
                        r = client.post(f"{url}/predict", content=images[item])  # type: ignore[index]
                    elif kind == "url":
                        r = client.post(url, content=item[0])  # type: ignore[index]
                    else:
                        f: Fault = item  # type: ignore[assignment]
                        r = client.post(f"{url}{f.path}", content=f.body, headers=f.headers)
                except httpx.HTTPError as exc:
                    with lock:
                        result.dropped += 1
                        result.problems.append(f"request {i} ({kind}): {exc!r}")
                    continue
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    if kind == "url":
                        label = item[1]  # type: ignore[index]
                        if r.status_code == 200 and r.text.strip() == label:
                            result.ok += 1
                            result.latencies_ms.append(ms)
                        else:
                            result.wrong += 1
                            result.problems.append(
                                f"URL {item[0]}: HTTP {r.status_code} "  # type: ignore[index]
                                f"{r.text[:200]!r}, expected {label!r}"
                            )
                    elif kind == "image":
                        if check_good(item, r):  # type: ignore[arg-type]
                            result.ok += 1
                            result.latencies_ms.append(ms)
                        else:
                            result.wrong += 1
                    else:
                        code = _error_code(r)
                        if code == "guest_trap" and f.code != "guest_trap":
                            result.traps += 1
                        if r.status_code == f.status and code == f.code:
                            result.faults_ok += 1
                        else:
                            result.faults_bad.append(f"{f.name}: HTTP {r.status_code} {code}")
                    if progress:
                        progress(1)

    threads = [threading.Thread(target=client_loop, name=f"client-{c}") for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - start
    result.traps += sum(1 for p in result.problems if "guest_trap" in p)
    return result


def settle_memory(url: str, result: LoadResult, timeout: float = 120) -> LoadResult:
    """Wait until no guest is being replaced, then record the largest guest's memory."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=10) as client:
        while True:
            health = client.get(f"{url}/healthz").json()
            pools = list(health["pools"].values())
            if (
                all(p["replacing"] == 0 and p["idle"] == p["size"] for p in pools)
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.2)
    result.guest_mib = max((p["guest_mib"] for p in pools), default=0.0)
    result.recycled = sum(p["recycled"] for p in pools)
    result.ceiling_mib = health["limits"]["recycle_memory"] / 2**20
    return result


def _error_code(r: httpx.Response) -> str | None:
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
