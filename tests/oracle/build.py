"""Child process: build graphs with TensorFlow, run them with TensorFlow, write the cache.

    python -m tests.oracle.build --mode v2 --seed 20201 --out test-artifacts/oracle op-mul ...

Run by `cache.ensure`, never imported by the tests: TensorFlow's import (several seconds),
its thread pools and TF1 mode (`disable_v2_behavior`, irreversible) stay out of pytest.
Each graph is written to a temporary folder and renamed into place, so an interrupted build
leaves no half graph behind; older versions of the same graph are removed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from tests.oracle.cache import cache_key, versions
from tests.oracle.graphs import BUILDERS, V1, run_graphdef


def build_one(tf: object, name: str, seed: int, out: Path) -> None:
    builder = BUILDERS[name]
    start = time.perf_counter()
    pb, inp, output = builder.make(tf, seed)
    built = time.perf_counter() - start
    x = builder.input_tensor(seed)
    y = run_graphdef(tf, pb, inp, output, x)
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(pb)
    ops = Counter(n.op for n in graph_def.node)
    meta = {
        "name": name,
        "seed": seed,
        "mode": builder.mode,
        "input": inp,
        "output": output,
        "versions": versions(),
        "build_s": round(built, 2),
        "bytes": len(pb),
        "ops": dict(sorted(ops.items())),
        "doc": builder.doc,
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
    try:
        (tmp / "graph.pb").write_bytes(pb)
        np.savez(tmp / "io.npz", x=x, y=y)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        final = out / cache_key(name, seed)
        stale = re.compile(re.escape(f"{name}-s{seed}-") + "[0-9a-f]{16}")
        for old in out.iterdir():  # this graph from an older TensorFlow or builder
            if stale.fullmatch(old.name) and old.is_dir():
                shutil.rmtree(old)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    print(f"{name}: {len(pb)} bytes, {sum(ops.values())} nodes, built in {built:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True, choices=["v1", "v2"])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("names", nargs="+", choices=sorted(BUILDERS))
    args = ap.parse_args()
    import tensorflow as tf

    if args.mode == V1:
        tf.compat.v1.disable_v2_behavior()
    for name in args.names:
        if BUILDERS[name].mode != args.mode:
            ap.error(f"{name} is built in {BUILDERS[name].mode} mode, not {args.mode}")
        build_one(tf, name, args.seed, args.out)


if __name__ == "__main__":
    main()
