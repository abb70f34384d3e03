"""The guest against tract and ONNX Runtime on Keras 3 graphs, each peer on the same graph.

    .venv/bin/python benchmarks/keras_graphs.py [--repeat 20] [--module X.wasm] [--json FILE]

Issue 15 asks that the speed of the ops the guest gained for Keras 3 graphs is measured, not
assumed. The graphs are the oracle's (`tests/oracle`: Keras 3 MobileNetV2 at alpha 1.0 and
the article's 1.4, EfficientNetB0, random weights, frozen by TensorFlow); a missing one is
built once with TensorFlow (the only use of it here). Each goes through `wasi-lab bench`'s own
`run_bench` as a `.pb` file, so the native peers run the kit's ONNX export of that very graph
(`wasi_lab.peers.onnx_export`) and every engine takes its turns in the same run on the same
tensor (the photo the bench uses, the model's own preprocessing). The bundled
EfficientNet-Lite0 (with its own ONNX) is the reference row.

Prints one table: per graph, each engine's median and minimum ms, the guest's ratio to each
peer (of medians), the largest output difference between the guest and any peer, the guest's
plan steps and multiply-adds, then the load average before and after (the machine is shared:
quote medians and ratios with it). `--module` measures another guest build.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wasi_lab.bench import BenchResult, run_bench  # noqa: E402

#: The Keras 3 graphs of issue 15, by their oracle names.
GRAPHS = ["keras3-mobilenetv2-1.0", "keras3-mobilenetv2-1.4", "keras3-efficientnetb0"]
REFERENCE = "efficientnet-lite0"
PEERS = (("tract", "tract"), ("ort_1t", "ORT 1 thread"), ("ort", "ORT default"))


def graph_files(names: list[str], folder: Path) -> dict[str, Path]:
    """Each oracle graph as `<name>.pb` in `folder` (the bench names a model by its file)."""
    from tests.oracle.cache import ensure  # builds the missing ones with TensorFlow

    out = {}
    for name, frozen in ensure(names).items():
        path = folder / f"{name}.pb"
        path.write_bytes(frozen.graph)
        out[name] = path
    return out


def _ms(v: float | None) -> str:
    return f"{v:.2f}" if v is not None else "skipped"


def row(name: str, res: BenchResult) -> str:
    """One markdown table row: timings, ratios, agreement, the guest's plan."""
    cells = [name, f"{_ms(res.guest_ms)} / {_ms(res.guest_min_ms)}"]
    medians = {"tract": res.tract_ms, "ort_1t": res.ort_1t_ms, "ort": res.ort_ms}
    for key, _ in PEERS:
        cells.append(f"{_ms(medians[key])} / {_ms(res.peers_min_ms.get(key))}")
    for key, _ in PEERS:
        ms = medians[key]
        cells.append(f"**{res.guest_ms / ms:.2f}**" if ms else "—")
    cells.append(f"{res.max_abs_diff:.1e}" if res.max_abs_diff is not None else "—")
    cells.append(f"{res.guest_steps}")
    cells.append(f"{res.guest_macs / 1e6:.0f}")
    return "| " + " | ".join(cells) + " |"


def table(results: dict[str, BenchResult]) -> str:
    head = ["graph", "guest ms (median / min)"]
    head += [f"{label} ms" for _, label in PEERS]
    head += [f"guest / {label}" for _, label in PEERS]
    head += ["max abs diff", "guest steps", "M multiply-adds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [row(name, res) for name, res in results.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per engine (default 20)")
    ap.add_argument("--module", type=Path, help="guest module (default: the prebuilt one)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write every result here")
    ap.add_argument("--graphs", nargs="+", default=GRAPHS, choices=GRAPHS, metavar="NAME")
    ap.add_argument(
        "--no-reference", action="store_true", help=f"leave out the bundled {REFERENCE} row"
    )
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, BenchResult] = {}
    with tempfile.TemporaryDirectory(prefix="keras-graphs-") as tmp:
        files = graph_files(list(args.graphs), Path(tmp))
        models: dict[str, str] = {} if args.no_reference else {REFERENCE: REFERENCE}
        models.update({name: str(path) for name, path in files.items()})
        for name, model in models.items():
            print(f"[keras_graphs] {name}", file=sys.stderr)
            results[name] = run_bench(
                model=model, repeat=args.repeat, module=args.module, progress=False
            )
    load_after = os.getloadavg()
    module = next(iter(results.values())).module
    print(f"{started}, {args.repeat} timed runs per engine, guest module {module}")
    print(table(results))
    print(
        "load average (1/5/15 min) before "
        + "/".join(f"{v:.2f}" for v in load_before)
        + ", after "
        + "/".join(f"{v:.2f}" for v in load_after)
    )
    for name, res in results.items():
        if res.skipped:
            print(f"{name} skipped: " + "; ".join(res.skipped))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "started": started,
                    "repeat": args.repeat,
                    "load_before": load_before,
                    "load_after": load_after,
                    "results": {k: v.to_dict() for k, v in results.items()},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
