"""`wasi-lab bench --wasm-peers`: start the engines in Node and report them.

The bench (`wasi_lab.bench`) lets these engines take turns with the guest and the native
peers; this module starts them (`wasi_lab.peers.node_peers`), with the tfjs graph model
written first when it is missing (`wasi_lab.peers.tfjs_convert`), and turns their timings
into the `wasm_peers` rows of the JSON. A peer that cannot run is a line in `skipped`.
"""

from __future__ import annotations

import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from wasi_lab.build import default_module
from wasi_lab.hosts import HostError
from wasi_lab.models.graphdef import GraphDefError
from wasi_lab.models.registry import ModelSpec
from wasi_lab.peers.node_peers import (
    WASM_PEERS,
    NodeEngine,
    NodePeerError,
    WasmPeer,
    missing_reason,
)
from wasi_lab.peers.tfjs_convert import ensure_tfjs_model

#: The guest in headless Chromium (`wasi_lab.peers.browser_peer`), beside the Node engines.
BROWSER_PEER = WasmPeer("guest_browser", "browser", "guest-browser", 1,
                        "guest (wasm, Chromium)", ())
ALL_PEERS = (WASM_PEERS[0], BROWSER_PEER, *WASM_PEERS[1:])


def _start_browser(spec: ModelSpec, x: np.ndarray, module: Path | None):
    try:
        from wasi_lab.peers.browser_peer import BrowserEngine
    except ImportError as exc:  # Playwright absent
        raise HostError(f"no browser host: {exc}") from exc
    eng = BrowserEngine(Path(module) if module else default_module(), spec.path, x,
                        spec.output)
    eng.peer = BROWSER_PEER  # type: ignore[attr-defined]
    return eng


def _model_for(peer: WasmPeer, spec: ModelSpec) -> Path:
    if peer.runner == "guest":
        return spec.path
    if peer.runner == "ort":
        if spec.onnx_path is None or not spec.onnx_path.exists():
            raise FileNotFoundError(f"no ONNX export for {spec.name}")
        return spec.onnx_path
    return ensure_tfjs_model(spec.path)


def start_wasm_peers(spec: ModelSpec, x: np.ndarray, stack: ExitStack, progress: bool = False,
                     peers: tuple[WasmPeer, ...] = ALL_PEERS, module: Path | None = None
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
                    eng = NodeEngine(peer, _model_for(peer, spec), tensor, tuple(x.shape),
                                     output_name=spec.output if peer.runner == "guest" else "",
                                     wasm=module)
                stack.callback(eng.close)
                engines[peer.key] = eng
                continue
            except (NodePeerError, HostError, FileNotFoundError, OSError,
                    GraphDefError) as exc:
                why = str(exc)
        skipped.append(f"{peer.key}: {why}")
    return engines, skipped


def wasm_peer_rows(results: dict[str, tuple[list[float], np.ndarray]], guest_times: list[float],
                   guest_out: np.ndarray, cpu_per_wall: dict[str, float],
                   engines: dict[str, object]) -> list[dict]:
    """One row per Node engine that ran: median, minimum, output difference from the guest
    (wasmtime), the guest's time over the peer's, and CPU seconds per wall second."""
    guest_ms = statistics.median(guest_times)
    rows = []
    for key, (times, out) in results.items():
        eng = engines[key]
        peer: WasmPeer = eng.peer  # type: ignore[attr-defined]
        med = statistics.median(times)
        rows.append({
            "key": key, "engine": peer.engine, "threads": peer.threads, "label": peer.label,
            "median_ms": round(med, 3), "min_ms": round(min(times), 3),
            "max_abs_diff": float(np.abs(out.reshape(-1) - guest_out.reshape(-1)).max()),
            "guest_ratio": round(guest_ms / med, 3),
            "cpu_per_wall": cpu_per_wall.get(key),
            "detail": getattr(eng, "detail", ""),
        })
    return rows
