"""`wasi-lab bench --wasm-peers`: start the engines in Node and report them.

The bench (`wasi_lab.bench`) lets these engines take turns with the guest and the native
peers; this module starts them (`wasi_lab.peers.node_peers`), with the tfjs graph model
written first when it is missing (`wasi_lab.peers.tfjs_convert`), and turns their timings
into the `wasm_peers` rows of the JSON. A peer that cannot run is a line in `skipped`.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wasi_lab.hosts import HostError
from wasi_lab.models.graphdef import GraphDefError
from wasi_lab.models.registry import ModelSpec
from wasi_lab.paths import REPO_ROOT, default_module
from wasi_lab.peers.node_peers import (
    WASM_PEERS,
    NodeEngine,
    NodePeerError,
    WasmPeer,
    missing_reason,
)
from wasi_lab.peers.onnx_export import onnx_for
from wasi_lab.peers.tfjs_convert import ensure_tfjs_model

#: The guest in headless Chromium (`wasi_lab.peers.browser_peer`), beside the Node engines.
BROWSER_PEER = WasmPeer(
    "guest_browser", "browser", "guest-browser", 1, "guest (wasm, Chromium)", ()
)
ALL_PEERS = (WASM_PEERS[0], BROWSER_PEER, *WASM_PEERS[1:])


def _start_browser(spec: ModelSpec, x: np.ndarray, module: Path | None):
    try:
        from wasi_lab.peers.browser_peer import BrowserEngine
    except ImportError as exc:  # Playwright absent
        raise HostError(f"no browser host: {exc}") from exc
    eng = BrowserEngine(Path(module) if module else default_module(), spec.path, x, spec.output)
    eng.peer = BROWSER_PEER  # type: ignore[attr-defined]
    return eng


def _model_for(peer: WasmPeer, spec: ModelSpec, input_shape: tuple[int, ...]) -> Path:
    """The file each peer loads: the GraphDef, the ONNX graph (the bundled one, or the kit's
    own export of a user's `.pb`, as the native peers get), or the tfjs graph model."""
    if peer.runner == "guest":
        return spec.path
    if peer.runner == "ort":
        onnx_path, why = onnx_for(spec, input_shape)
        if onnx_path is None:
            raise FileNotFoundError(why)
        return onnx_path
    return ensure_tfjs_model(spec.path)


def start_wasm_peers(
    spec: ModelSpec,
    x: np.ndarray,
    stack: ExitStack,
    progress: bool = False,
    peers: tuple[WasmPeer, ...] = ALL_PEERS,
    module: Path | None = None,
) -> tuple[dict[str, object], list[str]]:
    """Start each peer on `x` (closed when `stack` closes): (engines by key, skip reasons).
    The guest's own hosts (Node, Chromium) run `module`, the module the bench measures."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wasi-lab-peers-")))
    tensor = tmp / "tensor.f32"
    np.ascontiguousarray(x, dtype="<f4").tofile(tensor)
    engines: dict[str, object] = {}
    skipped: list[str] = []
    for peer in tqdm(peers, desc="starting the wasm peers", leave=False, disable=not progress):
        why = None if peer.runner == "browser" else missing_reason(peer)
        if why is None:
            try:
                if peer.runner == "browser":
                    eng = _start_browser(spec, x, module)
                else:
                    eng = NodeEngine(
                        peer,
                        _model_for(peer, spec, tuple(x.shape)),
                        tensor,
                        tuple(x.shape),
                        output_name=spec.output if peer.runner == "guest" else "",
                        wasm=module,
                    )
                stack.callback(eng.close)
                engines[peer.key] = eng
                continue
            except (NodePeerError, HostError, FileNotFoundError, OSError, GraphDefError) as exc:
                why = str(exc)
        skipped.append(f"{peer.key}: {why}")
    return engines, skipped


def wasm_peer_rows(
    results: dict[str, tuple[list[float], np.ndarray]],
    guest_times: list[float],
    guest_out: np.ndarray,
    cpu_per_wall: dict[str, float],
    engines: dict[str, object],
) -> list[dict]:
    """One row per Node engine that ran: median, minimum, output difference from the guest
    (wasmtime), the guest's time over the peer's, and CPU seconds per wall second."""
    guest_ms = statistics.median(guest_times)
    rows = []
    for key, (times, out) in results.items():
        eng = engines[key]
        peer: WasmPeer = eng.peer  # type: ignore[attr-defined]
        med = statistics.median(times)
        rows.append(
            {
                "key": key,
                "engine": peer.engine,
                "threads": peer.threads,
                "label": peer.label,
                "median_ms": round(med, 3),
                "min_ms": round(min(times), 3),
                "max_abs_diff": float(np.abs(out.reshape(-1) - guest_out.reshape(-1)).max()),
                "guest_ratio": round(guest_ms / med, 3),
                "cpu_per_wall": cpu_per_wall.get(key),
                "detail": getattr(eng, "detail", ""),
            }
        )
    return rows


# ------------------------------------------------------------------ the recorded runs
#: The committed runs notebook 07 draws from (`benchmarks/wasm_peers_record.py` writes it).
RECORDED = REPO_ROOT / "benchmarks" / "wasm_peers.json"

#: The chart's rows: (label, where the median is in one bench JSON, kind).
FAQ_ROWS = (
    ("guest, wasmtime", "guest", "guest"),
    ("guest, Node", "guest_node", "guest"),
    ("guest, Chromium", "guest_browser", "guest"),
    ("ORT-Web wasm, 1 thread", "ort_web_1t", "wasm"),
    ("ORT-Web wasm, 2 threads", "ort_web_2t", "wasm"),
    ("TF.js wasm, 1 thread", "tfjs_wasm_1t", "wasm"),
    ("TF.js wasm, 2 threads", "tfjs_wasm_2t", "wasm"),
    ("ONNX Runtime native, 1 thread", "ort_1t", "native"),
    ("tract native", "tract", "native"),
)


def load_record(path: Path = RECORDED) -> dict:
    """The recorded runs: {"date", "command", "machine", "runs": [{"started", ..., "result"}]}."""
    record = json.loads(Path(path).read_text())
    if not record.get("runs"):
        raise ValueError(f"{path}: no runs recorded")
    return record


def medians(res: dict) -> dict[str, float]:
    """Each engine's median (ms) in one bench JSON, by the keys of `FAQ_ROWS`."""
    out = {"guest": res["guest_ms"]}
    for key in ("tract", "ort_1t", "ort"):
        if res.get(f"{key}_ms") is not None:
            out[key] = res[f"{key}_ms"]
    out.update({w["key"]: w["median_ms"] for w in res.get("wasm_peers", [])})
    return out


def ratio_ranges(record: dict) -> dict[str, tuple[float, float]]:
    """Per engine, the guest's (wasmtime) time over the engine's, lowest and highest over the
    recorded runs, rounded as the notebook prints them."""
    per: dict[str, list[float]] = {}
    for run in record["runs"]:
        m = medians(run["result"])
        for key, ms in m.items():
            if key != "guest":
                per.setdefault(key, []).append(m["guest"] / ms)
    return {k: (round(min(v), 2), round(max(v), 2)) for k, v in per.items()}


def typical_run(record: dict, key: str = "ort_web_1t") -> dict:
    """The run whose guest/`key` ratio is the median of the runs' (the one the chart shows)."""
    runs = [r for r in record["runs"] if key in medians(r["result"])] or record["runs"]
    runs = sorted(
        runs, key=lambda r: (lambda m: m["guest"] / m.get(key, m["guest"]))(medians(r["result"]))
    )
    return runs[len(runs) // 2]


def faq_figure(run: dict):
    """The article's FAQ as a chart: the guest in three hosts, the wasm peers, and native
    engines for reference; medians (bars) and minima (ticks), with the guest's ratio."""
    import matplotlib.pyplot as plt

    res = run["result"]
    m = medians(res)
    mins = {"guest": res.get("guest_min_ms")}
    mins.update({w["key"]: w["min_ms"] for w in res.get("wasm_peers", [])})
    cpu = res.get("cpu_per_wall", {})
    rows = [(label, key, kind) for label, key, kind in FAQ_ROWS if key in m][::-1]
    colours = {"guest": "#4c72b0", "wasm": "#dd8452", "native": "#bbbbbb"}
    fig, ax = plt.subplots(figsize=(9, 4.2), layout="constrained")
    bars = ax.barh(
        [r[0] for r in rows], [m[r[1]] for r in rows], color=[colours[r[2]] for r in rows]
    )
    for bar, (_, key, _) in zip(bars, rows, strict=True):
        y = bar.get_y() + bar.get_height() / 2
        if mins.get(key):
            ax.plot([mins[key]] * 2, [bar.get_y(), bar.get_y() + bar.get_height()], "k-", lw=1)
        note = f"{m[key]:.0f} ms"
        if key != "guest":
            note += f"  (guest {m['guest'] / m[key]:.2f}x)"
        if key in cpu:
            note += f"  CPU/wall {cpu[key]:.2f}"
        ax.annotate(
            note,
            (bar.get_width(), y),
            va="center",
            xytext=(6, 0),
            textcoords="offset points",
            fontsize=9,
        )
    ax.margins(x=0.6)
    ax.set_xlabel("milliseconds per inference (median; tick: minimum)")
    ax.set_title(
        f"EfficientNet-Lite0, same tensor, engines in turns ({run['started']})",
        fontsize=11,
        loc="left",
    )
    return fig


def faq_sentences(record: dict) -> list[str]:
    """What the recorded runs say, computed from them: the guest's ratio to each engine (its
    range over the runs) and whether each threaded engine got its cores (CPU per wall)."""
    labels = {key: label for label, key, _ in FAQ_ROWS}
    n = len(record["runs"])
    out = [
        f"{n} run{'s' if n != 1 else ''} on {record['date']} "
        f"({record['runs'][0]['started']} to {record['runs'][-1]['started']}), "
        f"{record['machine']['cpu']}, {record['machine']['logical_cpus']} logical CPUs, "
        f"node {record['machine']['node']}; load average "
        + ", ".join(
            f"{r['load_average_before'][0]:.1f}"
            for r in record["runs"]
            if r.get("load_average_before")
        )
        + " at the start of each run (a shared machine)"
    ]
    for key, (lo, hi) in ratio_ranges(record).items():
        if key in labels:
            out.append(f"guest (wasmtime) / {labels[key]}: {lo:.2f}-{hi:.2f}x its time")
    diffs = [w["max_abs_diff"] for r in record["runs"] for w in r["result"]["wasm_peers"]]
    same = [
        w["max_abs_diff"]
        for r in record["runs"]
        for w in r["result"]["wasm_peers"]
        if w["key"] in ("guest_node", "guest_browser")
    ]
    if diffs:
        out.append(
            f"outputs: every engine within {max(diffs):.1e} of the guest's (max abs "
            "diff)"
            + (f"; the guest under Node and Chromium within {max(same):.1e}" if same else "")
        )
    for key in ("ort_web_2t", "tfjs_wasm_2t", "ort"):
        cpu = [r["result"].get("cpu_per_wall", {}).get(key) for r in record["runs"]]
        cpu = [c for c in cpu if c is not None]
        if cpu:
            got = (
                "got both cores"
                if min(cpu) > 1.5
                else ("never got both cores" if max(cpu) < 1.5 else "got both cores in some runs")
            )
            out.append(
                f"{labels.get(key, 'ONNX Runtime native, default threads')}: "
                f"CPU/wall {min(cpu):.2f}-{max(cpu):.2f}: {got}"
            )
    return out
