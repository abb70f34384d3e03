"""Short calls for notebook 06: start the server, ask it things, chart its latency.

The notebook stays a lecture: every cell is one or two calls into here. Servers bind to
127.0.0.1 on free ports, URL mode is loopback-only, and everything stops at the end.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs

import httpx

from wasi_lab.paths import IMAGES_DIR
from wasi_lab.server.imageorigin import ImageServer
from wasi_lab.server.launch import ServerProcess, start_server_process

#: Guests the lab server starts with unless asked for more. Each guest holds its own copy of
#: the parsed model in its linear memory, so `wasi-lab serve`'s default (one per CPU) on a
#: many-core shared hub would cost each learner gigabytes.
LAB_MAX_WORKERS = 2


def lab_workers(workers: int | None = None) -> int:
    """The guests to start: `workers` when given, else min(2, CPU count)."""
    if workers is not None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        return workers
    return min(LAB_MAX_WORKERS, os.cpu_count() or 1)


def start_lab_server(workers: int | None = None, *extra: str) -> ServerProcess:
    """`wasi-lab serve` in a subprocess, as a learner would start it, on a free port.

    It runs `lab_workers(workers)` guests: at most 2 unless you pass more. Private URLs are
    allowed (the image server is on 127.0.0.1) but only loopback ones, and the test hooks
    are on so the notebook can show a guest trap being survived.
    """
    log = Path(tempfile.mkdtemp(prefix="wasi-lab-serve-")) / "serve.log"
    args = [
        "--allow-private-urls",
        "--loopback-only-urls",
        "--test-hooks",
        "--fetch-timeout",
        "2",
        "--workers",
        str(lab_workers(workers)),
        *extra,
    ]
    return start_server_process(*args, log_path=log)


def health(server: ServerProcess) -> dict:
    """GET /healthz: the module, the pools (their size, what they served) and the limits."""
    return httpx.get(f"{server.url}/healthz", timeout=30).json()


def guests(server: ServerProcess) -> int:
    """How many guests the default model's pool holds (from /healthz)."""
    h = health(server)
    return h["pools"][h["default_model"]]["size"]


def post(
    server: ServerProcess,
    path: str = "/predict",
    body: bytes = b"",
    params: dict | None = None,
    headers: dict | None = None,
) -> httpx.Response:
    """One POST to the server, whatever it answers (no raise on 4xx/5xx)."""
    return httpx.post(
        f"{server.url}{path}", content=body, params=params, headers=headers, timeout=120
    )


def status_and_code(response: httpx.Response) -> tuple[int, str | None]:
    """(HTTP status, the error code of `{"error": {"code"}}` or None for a success)."""
    try:
        answer = response.json()
    except ValueError:
        return response.status_code, None
    error = answer.get("error") if isinstance(answer, dict) else None
    return response.status_code, error.get("code") if isinstance(error, dict) else None


def start_image_server() -> ImageServer:
    """Serve images/ on 127.0.0.1 (the stand-in for the article's puppy URL)."""
    return ImageServer.from_directory(IMAGES_DIR).start()


def predict(server: ServerProcess, image: str = "grace_hopper.jpg", **query: object) -> dict:
    """POST /predict with an image from images/ (what `curl --data-binary @img` does)."""
    data = (IMAGES_DIR / image).read_bytes()
    r = httpx.post(f"{server.url}/predict", content=data, params=query, timeout=120)
    return r.json()


def show_prediction(answer: dict) -> None:
    """Top classes and the per-request timings, printed compactly."""
    if "error" in answer:
        print("error:", answer["error"])
        return
    for t in answer["top"]:
        print(f"{t['prob']:7.2%}  {t['label']}  (class {t['index']})")
    per_request = ("queue", "image_size", "write", "decode", "infer", "total")
    print("per request (ms):", {k: answer["timings_ms"][k] for k in per_request})


def article_request(server: ServerProcess, image_url: str) -> str:
    """The article's request: GET / with the image URL as a text/plain body."""
    r = httpx.request(
        "GET", server.url, content=image_url, headers={"Content-Type": "text/plain"}, timeout=120
    )
    return r.text if r.status_code == 200 else f"HTTP {r.status_code}: {r.text}"


def curl_commands(server: ServerProcess, image_url: str) -> str:
    """The same two requests as shell commands."""
    return (
        f"curl --data-binary @images/grace_hopper.jpg {server.url}/predict\n"
        f"curl --request GET '{server.url}' --header 'Content-Type: text/plain' "
        f"--data-raw '{image_url}'"
    )


def error_examples(server: ServerProcess, images: ImageServer) -> list[dict]:
    """A few requests that must fail, and what the server answered."""
    from wasi_lab.pngs import decompression_bomb

    grace = (IMAGES_DIR / "grace_hopper.jpg").read_bytes()
    bomb = decompression_bomb()
    cases = [
        ("not an image", "/predict", b"hello", {}),
        ("truncated JPEG", "/predict", grace[:5000], {}),
        (f"20000x20000 PNG bomb ({len(bomb)} bytes)", "/predict", bomb, {}),
        ("metadata address URL", "/", b"http://169.254.169.254/latest/meta-data/", {}),
        ("slow image server", "/", f"{images.url}/slow/grace_hopper.jpg".encode(), {}),
        ("guest forced to trap", "/predict", grace, {"X-Test-Trap": "1"}),
        ("right after the trap", "/predict", grace, {}),
    ]
    rows = []
    for name, path, body, headers in cases:
        r = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=120)
        answer = r.json()
        rows.append(
            {
                "request": name,
                "status": r.status_code,
                "answer": answer["error"]["code"]
                if "error" in answer
                else answer["top"][0]["label"],
            }
        )
    return rows


def _measure(url: str, images: list[bytes], n: int, per_client: int) -> dict:
    """`n` client threads, `per_client` requests each; latencies seen by the clients."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        with httpx.Client(timeout=120) as c:
            for i in range(per_client):
                t0 = time.perf_counter()
                r = c.post(f"{url}/predict", content=images[(k + i) % len(images)])
                r.raise_for_status()
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "clients": n,
        "requests": len(latencies),
        "median_ms": round(statistics.median(latencies), 1),
        "max_ms": round(latencies[-1], 1),
        "throughput_rps": round(len(latencies) / wall, 2),
    }


def latency_under_load(
    server: ServerProcess, clients: tuple[int, ...] = (1, 2, 4), requests_per_client: int = 3
) -> list[dict]:
    """Client-side latency and throughput with 1, 2, 4 ... concurrent clients (bounded)."""
    images = [p.read_bytes() for p in sorted(IMAGES_DIR.glob("*.jpg"))][:2]
    return [_measure(server.url, images, n, requests_per_client) for n in clients]


def describe_scaling(rows: list[dict], n_guests: int, cpus: int | None = None) -> str:
    """What `latency_under_load` shows, in sentences built from its numbers.

    Nothing here is assumed: whether a second client doubled the throughput depends on the
    machine (its cores, who else uses them, the client running on the same cores), so the
    sentence is chosen from the measured ratio.
    """
    cpus = cpus or os.cpu_count() or 1
    lines = [f"{n_guests} guests, {cpus} CPU cores (the client threads run on the same cores)"]
    lines += [
        f"{r['clients']} client(s): {r['throughput_rps']:.2f} req/s, median "
        f"{r['median_ms']:.0f} ms, max {r['max_ms']:.0f} ms"
        for r in rows
    ]
    by = {r["clients"]: r for r in rows}
    if 1 in by and 2 in by and by[1]["throughput_rps"] > 0:
        gain = by[2]["throughput_rps"] / by[1]["throughput_rps"]
        if n_guests < 2:
            verdict = f"with one guest, 2 clients take turns: {gain:.2f}x the throughput of one"
        elif gain >= 1.6:
            verdict = (
                f"2 clients got {gain:.2f}x the throughput of 1: the two guests ran in parallel"
            )
        elif gain >= 1.15:
            verdict = (
                f"2 clients got {gain:.2f}x the throughput of 1: the two guests ran "
                f"partly in parallel; the rest of the cores' time went to the "
                f"server's event loop, the client and whatever else this machine runs"
            )
        else:
            verdict = (
                f"2 clients got {gain:.2f}x the throughput of 1: it did not double. "
                f"Two guests can run at once, but {cpus} cores shared by them, the "
                f"server's event loop, the Python client and whatever else this "
                f"machine runs had no idle core for the second one"
            )
        lines.append(verdict)
    more = [r for r in rows if r["clients"] > n_guests]
    if more and 1 in by:
        r = more[-1]
        lines.append(
            f"{r['clients']} clients > {n_guests} guests: requests queue for a guest, "
            f"so the median latency went from {by[1]['median_ms']:.0f} to "
            f"{r['median_ms']:.0f} ms while the throughput was "
            f"{r['throughput_rps']:.2f} req/s"
        )
    return "\n".join(lines)


def log_records(server: ServerProcess) -> list[dict]:
    """Every access log record so far (JSON lines on the server's stderr), oldest first."""
    records = []
    for line in server.log_lines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def access_log_tail(server: ServerProcess, n: int = 5) -> list[dict]:
    """The last `n` access log records, with the fields worth a look."""
    keep = ("method", "path", "status", "queue", "decode", "infer", "total_ms", "error", "label")
    return [{k: r[k] for k in keep if k in r} for r in log_records(server)[-n:]]


def burst(
    server: ServerProcess,
    n: int | None = None,
    stagger_ms: float = 0.0,
    image: str = "grace_hopper.jpg",
) -> list[dict]:
    """`n` POST /predict sent at once (or `stagger_ms` apart), each tagged `?burst=k`.

    The default `n` is twice the guests plus one: `guests` requests find a guest free, the
    others queue. Which ones is up to the server: requests that arrive within milliseconds
    of each other reach the pool in whatever order the event loop reads their bodies (on a
    busy machine, not the order they were sent), so `k` is a label, not an arrival rank.
    Returns the access log records of the burst, in k order, each with `burst` = k added.
    """
    n = n if n is not None else 2 * guests(server) + 1
    data = (IMAGES_DIR / image).read_bytes()
    run = uuid.uuid4().hex[:8]
    clients = [httpx.Client(timeout=120) for _ in range(n)]
    statuses: dict[int, int] = {}
    start = time.perf_counter() + 0.05

    def send(k: int) -> None:
        time.sleep(max(0.0, start + k * stagger_ms / 1000 - time.perf_counter()))
        r = clients[k].post(f"{server.url}/predict", content=data, params={"burst": k, "run": run})
        statuses[k] = r.status_code

    threads = [threading.Thread(target=send, args=(k,)) for k in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for c in clients:
            c.close()
    failed = {k: s for k, s in statuses.items() if s != 200}
    if failed or len(statuses) != n:
        raise RuntimeError(f"the burst's requests did not all succeed: {failed or statuses}")
    found: dict[int, dict] = {}
    for _ in range(50):  # the log line is written as the response goes out: wait for it
        for r in log_records(server):
            q = parse_qs(r.get("query", ""))
            if q.get("run") == [run]:
                found[int(q["burst"][0])] = {"burst": int(q["burst"][0]), **r}
        if len(found) == n:
            break
        time.sleep(0.1)
    return [found[k] for k in sorted(found)]


def table(rows: list[dict]) -> str:
    """A plain text table for a list of dicts (keys of the first row as columns)."""
    if not rows:
        return "(nothing)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols), "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def found_free(records: list[dict]) -> int:
    """How many requests of a burst got a guest at once: queued less than a quarter of the
    median service time (`total_ms - queue`), the rest waited for a request ahead of them."""
    service = statistics.median(r["total_ms"] - r["queue"] for r in records)
    return sum(r["queue"] < service / 4 for r in records)
