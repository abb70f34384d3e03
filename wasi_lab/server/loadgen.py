"""A bounded loopback load test with faults mixed in, checking every answer.

Each good request's answer must equal the answer the same image got when it was sent
alone (top classes, indices and probabilities): a pool that mixed up guests, models or
buffers would show up here as a *wrong* answer, not only as latency. Each fault must get
its documented status and error code, and the requests around it must still be right.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from wasi_lab.paths import IMAGES_DIR
from wasi_lab.pngs import decompression_bomb


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
        rows = [("clients", f"{self.clients}"), ("requests", f"{self.requests}"),
                ("good answers", f"{self.ok}"), ("wrong answers", f"{self.wrong}"),
                ("dropped", f"{self.dropped}"),
                ("faults answered as documented",
                 f"{self.faults_ok}/{self.faults_ok + len(self.faults_bad)}"),
                ("p50 latency", f"{self.percentile(50):.1f} ms"),
                ("p90 latency", f"{self.percentile(90):.1f} ms"),
                ("p99 latency", f"{self.percentile(99):.1f} ms"),
                ("max latency", f"{max(self.latencies_ms, default=math.nan):.1f} ms"),
                ("wall time", f"{self.wall_s:.1f} s"),
                ("throughput", f"{self.throughput:.2f} req/s"),
                ("single-request latency", f"{self.single_ms:.1f} ms"),
                ("target (0.8 x cores / single)", f"{self.target:.2f} req/s"),
                ("target met", "yes" if self.throughput >= self.target else "no")]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)

    def to_dict(self) -> dict:
        return {"clients": self.clients, "requests": self.requests, "ok": self.ok,
                "wrong": self.wrong, "dropped": self.dropped, "faults_ok": self.faults_ok,
                "faults_bad": self.faults_bad, "p50_ms": self.percentile(50),
                "p90_ms": self.percentile(90), "p99_ms": self.percentile(99),
                "throughput": self.throughput, "single_ms": self.single_ms,
                "target": self.target, "wall_s": self.wall_s, "cores": self.cores,
                "problems": self.problems[:20]}


def sample_images(directory: Path = IMAGES_DIR) -> dict[str, bytes]:
    """The bundled sample images (`make setup` puts them in images/)."""
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir())
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")}


def reference_answers(url: str, images: dict[str, bytes], repeat: int = 3
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


def faults_for(max_body: int, image: bytes, slow_url: str | None = None,
               test_hooks: bool = True, loopback_only: bool = True) -> list[Fault]:
    """The faults of the brief: broken images, a bomb, a big body, bad URLs, a trap."""
    corrupt = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8
    faults = [
        Fault("corrupt image", 422, "bad_image", corrupt),
        Fault("truncated image", 422, "bad_image", image[: len(image) // 8]),
        Fault("zero bytes", 400, "empty_body", b""),
        Fault("decompression bomb", 413, "image_too_large", decompression_bomb()),
        Fault("oversized body", 413, "body_too_large", b"\0" * (max_body + 1)),
        Fault("metadata address URL", 403, "forbidden_address",
              b"http://169.254.169.254/latest/meta-data/", path="/"),
    ]
    if loopback_only:  # refused by the check itself: no packet leaves the machine
        faults.append(Fault("private address URL", 403, "forbidden_address",
                            b"http://10.0.0.1/cat.jpg", path="/"))
    if slow_url:
        faults.append(Fault("slow URL", 504, "fetch_timeout", slow_url.encode(), path="/"))
    if test_hooks:
        faults.append(Fault("guest trap", 500, "guest_trap", image,
                            headers={"X-Test-Trap": "1"}))
    return faults


def run_load(url: str, images: dict[str, bytes], expected: dict[str, list], *,
             clients: int = 8, requests: int = 200, faults: list[Fault] | None = None,
             url_requests: list[tuple[str, str]] | None = None, single_ms: float = 0.0,
             cores: int = 1, timeout: float = 120,
             progress: Callable[[int], None] | None = None) -> LoadResult:
    """`requests` requests from `clients` threads, images in turn, faults spread evenly.

    `url_requests` are (image URL, expected label) pairs sent the article's way (`POST /`
    with the URL as the body); they count as good requests.
    """
    faults = faults or []
    names = list(images)
    plan: list[tuple[str, object]] = [("image", names[i % len(names)]) for i in range(requests)]
    extras: list[tuple[str, object]] = [("fault", f) for f in faults] + \
        [("url", pair) for pair in url_requests or []]
    for k, extra in enumerate(extras):
        plan.insert((k + 1) * len(plan) // (len(extras) + 1), extra)
    goods = sum(1 for kind, _ in plan if kind != "fault")
    result = LoadResult(clients=clients, requests=len(plan), single_ms=single_ms, cores=cores,
                        good=goods)
    lock = threading.Lock()
    cursor = iter(range(len(plan)))

    def check_good(name: str, r: httpx.Response) -> bool:
        if r.status_code != 200:
            result.problems.append(f"{name}: HTTP {r.status_code} {r.text[:200]}")
            return False
        got = r.json()["top"]
        want = expected[name]
        same = [t["index"] for t in got] == [t["index"] for t in want] and all(
            abs(a["prob"] - b["prob"]) <= 1e-6 for a, b in zip(got, want, strict=True))
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
                            result.problems.append(f"URL {item[0]}: HTTP {r.status_code} "  # type: ignore[index]
                                                   f"{r.text[:200]!r}, expected {label!r}")
                    elif kind == "image":
                        if check_good(item, r):  # type: ignore[arg-type]
                            result.ok += 1
                            result.latencies_ms.append(ms)
                        else:
                            result.wrong += 1
                    else:
                        code = _error_code(r)
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
    return result


def _error_code(r: httpx.Response) -> str | None:
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
