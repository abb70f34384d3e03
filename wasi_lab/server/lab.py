"""Short calls for notebook 06: start the server, ask it things, chart its latency.

The notebook stays a lecture: every cell is one or two calls into here. Servers bind to
127.0.0.1 on free ports, URL mode is loopback-only, and everything stops at the end.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from wasi_lab.paths import IMAGES_DIR
from wasi_lab.server.harness import ImageServer, ServerProcess, start_server_process


def start_lab_server(workers: int | None = None, *extra: str) -> ServerProcess:
    """`wasi-lab serve` in a subprocess, as a learner would start it, on a free port.

    Private URLs are allowed (the image server is on 127.0.0.1) but only loopback ones,
    and the test hooks are on so the notebook can show a guest trap being survived.
    """
    log = Path(tempfile.mkdtemp(prefix="wasi-lab-serve-")) / "serve.log"
    args = ["--allow-private-urls", "--loopback-only-urls", "--test-hooks",
            "--fetch-timeout", "2", *extra]
    if workers:
        args += ["--workers", str(workers)]
    return start_server_process(*args, log_path=log)


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
    r = httpx.request("GET", server.url, content=image_url,
                      headers={"Content-Type": "text/plain"}, timeout=120)
    return r.text if r.status_code == 200 else f"HTTP {r.status_code}: {r.text}"


def curl_commands(server: ServerProcess, image_url: str) -> str:
    """The same two requests as shell commands."""
    return (f"curl --data-binary @images/grace_hopper.jpg {server.url}/predict\n"
            f"curl --request GET '{server.url}' --header 'Content-Type: text/plain' "
            f"--data-raw '{image_url}'")


def error_examples(server: ServerProcess, images: ImageServer) -> list[dict]:
    """A few requests that must fail, and what the server answered."""
    from wasi_lab.pngs import decompression_bomb

    grace = (IMAGES_DIR / "grace_hopper.jpg").read_bytes()
    cases = [("not an image", "/predict", b"hello", {}),
             ("truncated JPEG", "/predict", grace[:5000], {}),
             ("20000x20000 PNG bomb (a few KiB)", "/predict", decompression_bomb(), {}),
             ("metadata address URL", "/", b"http://169.254.169.254/latest/meta-data/", {}),
             ("slow image server", "/", f"{images.url}/slow/grace_hopper.jpg".encode(), {}),
             ("guest forced to trap", "/predict", grace, {"X-Test-Trap": "1"}),
             ("right after the trap", "/predict", grace, {})]
    rows = []
    for name, path, body, headers in cases:
        r = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=120)
        answer = r.json()
        rows.append({"request": name, "status": r.status_code,
                     "answer": answer["error"]["code"] if "error" in answer
                     else answer["top"][0]["label"]})
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
    return {"clients": n, "requests": len(latencies),
            "median_ms": round(statistics.median(latencies), 1),
            "max_ms": round(latencies[-1], 1),
            "throughput_rps": round(len(latencies) / wall, 2)}


def latency_under_load(server: ServerProcess, clients: tuple[int, ...] = (1, 2, 4),
                       requests_per_client: int = 3) -> list[dict]:
    """Client-side latency and throughput with 1, 2, 4 ... concurrent clients (bounded)."""
    images = [p.read_bytes() for p in sorted(IMAGES_DIR.glob("*.jpg"))][:2]
    return [_measure(server.url, images, n, requests_per_client) for n in clients]


def latency_figure(rows: list[dict]):
    """Median/max latency and throughput against the number of concurrent clients."""
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    xs = [r["clients"] for r in rows]
    ax1.plot(xs, [r["median_ms"] for r in rows], "o-", label="median")
    ax1.plot(xs, [r["max_ms"] for r in rows], "s--", label="max")
    ax1.set(xlabel="concurrent clients", ylabel="latency (ms)", xticks=xs,
            title="Latency per request")
    ax1.legend()
    ax2.bar([str(x) for x in xs], [r["throughput_rps"] for r in rows], color="tab:green")
    ax2.set(xlabel="concurrent clients", ylabel="requests / s", title="Throughput")
    fig.tight_layout()
    return fig


def access_log_tail(server: ServerProcess, n: int = 5) -> list[dict]:
    """The last `n` access log records (JSON lines on the server's stderr)."""
    records = []
    for line in server.log_lines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    keep = ("method", "path", "status", "queue", "decode", "infer", "total_ms", "error",
            "label")
    return [{k: r[k] for k in keep if k in r} for r in records[-n:]]


def table(rows: list[dict]) -> str:
    """A plain text table for a list of dicts (keys of the first row as columns)."""
    if not rows:
        return "(nothing)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols),
             "  ".join("-" * widths[c] for c in cols)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)
