"""`wasi-lab bench`: the guest against native peers, same input, same run.

Every engine gets the same preprocessed tensor, and their outputs are compared in the same
run (max abs difference), so a fast wrong answer cannot pass. Peers are optional extras
(`pip install -e .[bench]`): a missing one is listed under "skipped", never faked.
Medians and p90 in milliseconds, and each engine's CPU seconds per wall second.
`--wasm-peers` adds engines that also run in WebAssembly (ONNX Runtime Web, TF.js's wasm
backend, and the guest under Node and Chromium: `wasi_lab.bench_wasm_peers`), in the same turns.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from wasi_lab.bench_wasm_peers import start_wasm_peers, wasm_peer_rows
from wasi_lab.hosts import grace_hopper
from wasi_lab.models.registry import ensure_model, get_model
from wasi_lab.paths import default_module
from wasi_lab.peers.onnx_export import onnx_for
from wasi_lab.predict import MODE_IDS, Classifier, resolve_mode
from wasi_lab.runtime import Guest, compile_module, shared_module


def _timed(
    fn: Callable[[], object], repeat: int, warmup: int = 1, desc: str = "", progress: bool = False
) -> tuple[list[float], object]:
    """Run `fn` warmup + repeat times; return the repeat timings in ms and the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in tqdm(range(repeat), desc=desc, leave=False, disable=not progress):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def p90(xs: list[float]) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


@dataclass
class BenchResult:
    model: str
    module: str
    repeat: int
    guest_ms: float
    guest_p90_ms: float
    tract_ms: float | None
    ort_1t_ms: float | None
    ort_ms: float | None
    compile_cold_ms: float
    compile_cached_ms: float
    instantiate_ms: float
    model_load_ms: float
    decode_ms: float
    peak_pages: dict[str, int]
    max_abs_diff: float | None
    # The share of the network's multiply-adds the guest skipped on this input because an
    # input was zero (after a ReLU6): its time depends on the image, the peers' do not.
    guest_skipped_macs_share: float = 0.0
    diffs: dict[str, float] = field(default_factory=dict)
    peers_p90_ms: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    # Each engine's CPU seconds per wall second over its timed calls (all its threads): about
    # 1 for one thread, up to the thread count when a threaded engine got its cores.
    cpu_per_wall: dict[str, float] = field(default_factory=dict)
    guest_min_ms: float | None = None
    # `--wasm-peers`: one entry per engine in Node that ran (see `wasm_peers.WasmPeerResult`).
    wasm_peers: list[dict] = field(default_factory=list)
    # The graph file the guest ran, and the ONNX file the native peers ran (None: none did).
    model_file: str = ""
    onnx_file: str | None = None
    # Each native peer's fastest call (ms), and the guest's plan: steps and multiply-adds.
    peers_min_ms: dict[str, float] = field(default_factory=dict)
    guest_steps: int = 0
    guest_macs: int = 0

    @property
    def ratios(self) -> dict[str, float | None]:
        def r(peer: float | None) -> float | None:
            return round(self.guest_ms / peer, 3) if peer else None

        return {
            "guest_vs_tract": r(self.tract_ms),
            "guest_vs_ort_1t": r(self.ort_1t_ms),
            "guest_vs_ort": r(self.ort_ms),
        }

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["ratios"] = self.ratios
        # Round timings only: the output differences are ~1e-6 and must survive the JSON.
        return {
            k: (round(v, 3) if isinstance(v, float) and k.endswith("_ms") else v)
            for k, v in d.items()
        }


def _ort_runner(onnx_path: Path, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    # No spin-waiting pool threads between runs: they would steal the core the next
    # engine in the round runs on.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def _tract_runner(
    onnx_path: Path, shape: tuple[int, ...] = (1, 224, 224, 3)
) -> Callable[[np.ndarray], np.ndarray]:
    import tract

    model = tract.onnx().load(str(onnx_path))
    model.set_input_fact(0, ",".join(map(str, shape)) + ",f32")
    runnable = model.into_model().into_runnable()
    return lambda x: runnable.run([x])[0].to_numpy()


class _InProcess:
    """An engine in this process, timed the way `NodeEngine.turn` times one in Node."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> None:
        self.run, self.x = run, x
        self.output = np.asarray(run(x)).reshape(-1)

    def turn(self, block: int, warm: int = 1) -> tuple[list[float], float, float]:
        for _ in range(warm):
            self.run(self.x)
        times = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(block):
            t = time.perf_counter()
            self.run(self.x)
            times.append((time.perf_counter() - t) * 1000)
        wall = (time.perf_counter() - wall0) * 1000
        return times, (time.process_time() - cpu0) * 1000, wall


class TurnTaker(Protocol):
    output: np.ndarray

    def turn(self, block: int, warm: int = 1) -> tuple[list[float], float, float]: ...


@dataclass
class Turns:
    """What the engines' turns gave: timings (ms), outputs, CPU per wall second."""

    times: dict[str, list[float]]
    outputs: dict[str, np.ndarray]
    cpu_per_wall: dict[str, float]


def _take_turns(
    engines: dict[str, TurnTaker], repeat: int, progress: bool, block: int = 2
) -> Turns:
    """Time the engines in turns: `block` timed calls each per turn, after one untimed call.

    On a shared machine noise comes in bursts; timing the engines one after the other
    would let a burst land on one engine only. Taking turns spreads it over all of them,
    and the untimed call at the start of each turn lets an engine bring its weights back
    into the caches the others just used, so no engine pays for its neighbours. Turns are
    short (a quarter of a second here) because this machine's slow phases last seconds:
    with 5 calls per turn, one run in ten caught the guest in a slow phase that the
    peers, timed a second later, escaped (guest/tract 1.11 where it is otherwise 0.70-0.97).
    """
    times: dict[str, list[float]] = {name: [] for name in engines}
    cpu = dict.fromkeys(engines, 0.0)
    wall = dict.fromkeys(engines, 0.0)
    turns = max(1, -(-repeat // block))
    for _ in tqdm(range(turns), desc="inference turns", leave=False, disable=not progress):
        for name, engine in engines.items():
            t, c, w = engine.turn(block)
            times[name] += t
            cpu[name] += c
            wall[name] += w
    return Turns(
        {name: t[: max(repeat, 1)] for name, t in times.items()},
        {name: e.output for name, e in engines.items()},
        {
            name: round(cpu[name] / wall[name], 2)
            for name in engines
            if wall[name] and not math.isnan(cpu[name])
        },
    )


def _interleaved(
    runners: dict[str, Callable[[np.ndarray], np.ndarray]],
    x: np.ndarray,
    repeat: int,
    progress: bool,
    block: int = 2,
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """`_take_turns` for in-process engines only: (timings, outputs)."""
    turns = _take_turns({n: _InProcess(r, x) for n, r in runners.items()}, repeat, progress, block)
    return turns.times, turns.outputs


def run_bench(
    model: str = "efficientnet-lite0",
    repeat: int = 20,
    module: Path | None = None,
    image: bytes | None = None,
    progress: bool = True,
    peers: tuple[str, ...] = ("tract", "ort_1t", "ort"),
    wasm_peers: bool = False,
) -> BenchResult:
    """Measure everything once; `repeat` is the number of timed inferences per engine.

    `wasm_peers` adds the engines in Node (`wasi_lab.peers`): the guest under node:wasi,
    ONNX Runtime Web and TF.js's wasm backend, taking their turns with the others."""
    spec = get_model(model)
    ref = spec.ref  # a user's graph by its path: its name is only the file's stem
    ensure_model(ref, progress=False)
    path = Path(module) if module else default_module()
    few = max(3, repeat // 5)

    cold, _ = _timed(
        lambda: compile_module(path, use_cache=False),
        few,
        warmup=0,
        desc="compile (cold)",
        progress=progress,
    )
    compile_module(path)  # make sure the cache file exists
    cached, _ = _timed(lambda: compile_module(path), few, desc="compile (cache)", progress=progress)
    compiled = shared_module(path)
    inst, _ = _timed(
        lambda: Guest(compiled), max(repeat, 10), desc="instantiate", progress=progress
    )

    clf = Classifier(ref, module=compiled)
    loads, _ = _timed(
        lambda: Classifier(ref, module=compiled),
        few,
        warmup=0,
        desc="load model",
        progress=progress,
    )
    # A photo, not noise: after each ReLU a photo leaves many inputs of the next 1x1
    # convolution at zero, and the guest skips those multiply-adds.
    image = grace_hopper().read_bytes() if image is None else image
    mode = MODE_IDS[resolve_mode("model", spec)]  # the model's own preprocessing
    decode, tensor = _timed(
        lambda: clf.guest.decode_image(image, mode)[2], few, desc="decode", progress=progress
    )
    x = np.ascontiguousarray(tensor, dtype=np.float32)

    engines: dict[str, TurnTaker] = {"guest": _InProcess(clf.infer_tensor, x)}
    skipped: list[str] = []
    # The peers' graph: the bundled model's own ONNX, else the kit's export of the .pb (the
    # same graph, NHWC in, so every engine gets the very same tensor); None says why not.
    onnx_path, no_onnx = onnx_for(spec, x.shape) if peers else (None, "")
    for peer in peers:
        try:
            if onnx_path is None:
                raise FileNotFoundError(no_onnx)
            engines[peer] = _InProcess(
                _tract_runner(onnx_path, x.shape)
                if peer == "tract"
                else _ort_runner(onnx_path, 1 if peer == "ort_1t" else None),
                x,
            )
        except (ImportError, FileNotFoundError, OSError) as exc:
            skipped.append(f"{peer}: {exc}")
        except Exception as exc:  # tract's TractError, ORT's Fail/InvalidGraph: its own words
            skipped.append(f"{peer}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    with ExitStack() as stack:
        node_keys: list[str] = []
        if wasm_peers:
            started, why = start_wasm_peers(spec, x, stack, progress=progress, module=path)
            engines.update(started)
            node_keys = list(started)
            skipped += why
        turns = _take_turns(engines, repeat, progress)
    times, outputs = turns.times, turns.outputs
    guest_t, guest_out = times.pop("guest"), outputs.pop("guest")
    node_results = {k: (times.pop(k), outputs.pop(k)) for k in node_keys}
    results = {p: (times[p], outputs[p]) for p in times}

    diffs = {p: float(np.abs(out - guest_out).max()) for p, (_, out) in results.items()}
    steps = clf.profile(x)
    return BenchResult(
        model=spec.name,
        model_file=str(spec.path),
        onnx_file=str(onnx_path) if onnx_path is not None and len(engines) > 1 else None,
        module=str(path),
        repeat=repeat,
        guest_ms=median(guest_t),
        guest_p90_ms=p90(guest_t),
        tract_ms=median(results["tract"][0]) if "tract" in results else None,
        ort_1t_ms=median(results["ort_1t"][0]) if "ort_1t" in results else None,
        ort_ms=median(results["ort"][0]) if "ort" in results else None,
        compile_cold_ms=median(cold),
        compile_cached_ms=median(cached),
        instantiate_ms=median(inst),
        model_load_ms=median(loads),
        decode_ms=median(decode),
        peak_pages={"after_load": clf.pages_after_load, "after_infer": clf.guest.pages},
        max_abs_diff=max(diffs.values()) if diffs else None,
        diffs=diffs,
        guest_skipped_macs_share=sum(s["skipped"] for s in steps) / sum(s["macs"] for s in steps),
        peers_p90_ms={p: p90(t) for p, (t, _) in results.items()},
        peers_min_ms={p: min(t) for p, (t, _) in results.items()},
        guest_steps=len(steps),
        guest_macs=sum(s["macs"] for s in steps),
        skipped=skipped,
        cpu_per_wall=turns.cpu_per_wall,
        guest_min_ms=min(guest_t),
        wasm_peers=wasm_peer_rows(node_results, guest_t, guest_out, turns.cpu_per_wall, engines)
        if wasm_peers
        else [],
    )


#: The native peers and the module each needs (the `bench` extra installs both).
PEER_MODULES = {"tract": "tract", "ort_1t": "onnxruntime", "ort": "onnxruntime"}


def missing_peers() -> list[str]:
    """The Python modules of the native peers that are not installed (none with the extra)."""
    import importlib.util

    return sorted({m for m in PEER_MODULES.values() if importlib.util.find_spec(m) is None})


def peers_missing_line(res: BenchResult | None = None) -> str | None:
    """One line for a notebook cell that needs a native peer, or None when there is one.

    With `res`, the question is whether that run measured any peer (a peer can also be
    skipped for a missing ONNX export); without it, whether the peers are installed.
    """
    if res is not None and any(v is not None for v in (res.tract_ms, res.ort_1t_ms, res.ort_ms)):
        return None
    missing = missing_peers()
    if res is None and not missing:
        return None
    if missing:
        return (
            f"{' and '.join(missing)} not installed: no native engine to compare with; "
            f"`pip install -e '.[bench]'` to see them"
        )
    return "no native engine was measured: " + "; ".join(res.skipped if res else [])


def compare_sentences(res: BenchResult) -> list[str]:
    """What one bench run says about the guest and each peer, from its own numbers."""
    out = [f"the guest: {res.guest_ms:.1f} ms per inference (median of {res.repeat})"]
    names = {
        "tract": "tract native",
        "ort_1t": "ONNX Runtime, 1 thread",
        "ort": "ONNX Runtime, default threads",
    }
    for key, ms in (("tract", res.tract_ms), ("ort_1t", res.ort_1t_ms), ("ort", res.ort_ms)):
        if ms is None:
            continue
        ratio = res.guest_ms / ms
        how = (
            f"{ratio:.2f}x its time: the guest is faster"
            if ratio < 1
            else f"{ratio:.2f}x its time: the guest is slower"
        )
        diff = res.diffs.get(key)
        same = f", outputs within {diff:.1e}" if diff is not None else ""
        out.append(f"{names[key]}: {ms:.1f} ms; the guest takes {how}{same}")
    return out


def _cpu(v: float | None) -> str:
    return f"{v:10.2f}" if v is not None else f"{'n/a':>10}"


def format_table(res: BenchResult) -> str:
    """The table `wasi-lab bench` prints."""

    def ms(v: float | None) -> str:
        return f"{v:9.2f}" if v is not None else "  skipped"

    rows = [
        ("guest (wasm, wasmtime)", res.guest_ms, res.guest_p90_ms),
        ("tract native (ONNX)", res.tract_ms, res.peers_p90_ms.get("tract")),
        ("ONNX Runtime, 1 thread", res.ort_1t_ms, res.peers_p90_ms.get("ort_1t")),
        ("ONNX Runtime, default threads", res.ort_ms, res.peers_p90_ms.get("ort")),
    ]
    lines = [
        f"model {res.model}, {res.repeat} timed runs each, module {res.module}",
        *([f"model file {res.model_file}"] if res.model_file else []),
        *([f"peers' ONNX {res.onnx_file}"] if res.onnx_file else []),
        "",
        f"{'inference':<32}{'median ms':>10}{'p90 ms':>10}",
    ]
    lines += [f"{name:<32}{ms(med)}{ms(p)}" for name, med, p in rows]
    if res.wasm_peers:
        lines += [
            "",
            f"{'wasm peers (Node, Chromium)':<32}{'median ms':>10}{'min ms':>10}"
            f"{'guest/peer':>12}{'CPU/wall':>10}{'max diff':>10}",
        ]
        lines += [
            f"{w['label']:<32}{w['median_ms']:10.2f}{w['min_ms']:10.2f}"
            f"{w['guest_ratio']:12.2f}{_cpu(w['cpu_per_wall'])}"
            f"{w['max_abs_diff']:10.1e}"
            for w in res.wasm_peers
        ]
    if res.cpu_per_wall:
        lines += [
            "",
            "CPU seconds per wall second (all threads; below the thread count: the "
            "engine did not get its cores): "
            + ", ".join(f"{k} {v:.2f}" for k, v in res.cpu_per_wall.items()),
        ]
    r = res.ratios
    lines += [
        "",
        "ratios (median): " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if v),
        "max abs diff vs guest: "
        + (f"{res.max_abs_diff:.2e}" if res.max_abs_diff is not None else "n/a")
        + "".join(f"  [{k} {v:.2e}]" for k, v in res.diffs.items()),
        f"the guest skipped {res.guest_skipped_macs_share:.1%} of the multiply-adds on "
        "this input (zeros after a ReLU6), so its time depends on the image",
        "",
        f"{'guest setup':<32}{'median ms':>10}",
        f"{'compile (cold, Cranelift)':<32}{res.compile_cold_ms:10.2f}",
        f"{'compile (from cache)':<32}{res.compile_cached_ms:10.2f}",
        f"{'instantiate (InstancePre)':<32}{res.instantiate_ms:10.3f}",
        f"{'model load (write + parse)':<32}{res.model_load_ms:10.2f}",
        f"{'image decode + preprocess':<32}{res.decode_ms:10.2f}",
        f"peak guest memory: {res.peak_pages['after_load']} pages after load, "
        f"{res.peak_pages['after_infer']} after inference (64 KiB each)",
    ]
    if res.skipped:
        lines.append("skipped: " + "; ".join(res.skipped))
    return "\n".join(lines)


def bench_json(res: BenchResult) -> str:
    return json.dumps(res.to_dict(), indent=2)


def bench_figure(res: BenchResult):
    """Median (bar) and p90 (whisker) per engine, with the guest's ratio to each peer."""
    import matplotlib.pyplot as plt

    rows = [
        ("guest (wasm)", res.guest_ms, res.guest_p90_ms),
        ("tract native", res.tract_ms, res.peers_p90_ms.get("tract")),
        ("ONNX Runtime 1 thread", res.ort_1t_ms, res.peers_p90_ms.get("ort_1t")),
        ("ONNX Runtime default", res.ort_ms, res.peers_p90_ms.get("ort")),
    ]
    rows = [r for r in rows if r[1] is not None]
    names = [r[0] for r in rows][::-1]
    med = [r[1] for r in rows][::-1]
    err = [max(0.0, (r[2] or r[1]) - r[1]) for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
    colours = ["#4c72b0" if n.startswith("guest") else "#999999" for n in names]
    bars = ax.barh(names, med, xerr=[[0] * len(err), err], color=colours, capsize=4)
    for b, name, e in zip(bars, names, err, strict=True):
        note = f"{b.get_width():.1f} ms"
        if not name.startswith("guest") and b.get_width() > 0:
            note += f"  (guest is {res.guest_ms / b.get_width():.2f}x)"
        # Past the whisker, so a long p90 does not run through the text.
        ax.annotate(
            note,
            (b.get_width() + e, b.get_y() + b.get_height() / 2),
            va="center",
            xytext=(6, 0),
            textcoords="offset points",
            fontsize=10,
        )
    ax.margins(x=0.45)
    ax.set_xlabel("milliseconds per inference (median; whisker: p90)")
    ax.set_title(
        f"{res.model}: same tensor, same run (max abs diff {res.max_abs_diff:.1e})"
        if res.max_abs_diff is not None
        else res.model,
        fontsize=12,
        loc="left",
    )
    return fig
