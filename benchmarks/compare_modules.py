"""Compare guest modules step by step, in one process, taking turns.

    .venv/bin/python benchmarks/compare_modules.py OLD.wasm NEW.wasm [--turns 40]
    git show 9e3d618:guest/prebuilt/wasi_lab_guest.wasm > /tmp/old.wasm   # an older build

Each turn runs every module once through `profile_tensor` (the guest times each step of its
plan) and once through `infer_tensor` (wall time, as `wasi-lab bench` measures it), so a
burst of noise on a shared machine lands on all of them. Prints, per op, the sum of each
step's minimum over the turns, then the wall median and minimum, and the largest output
difference from the first module (a faster module must still give the same answer).
The input is the photo `wasi-lab bench` uses; `--steps` also prints every step.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from wasi_lab.hosts import grace_hopper  # noqa: E402
from wasi_lab.predict import Classifier  # noqa: E402
from wasi_lab.runtime import compile_module  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("modules", nargs="+", type=Path)
    ap.add_argument("--turns", type=int, default=40)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--steps", action="store_true", help="also print each step's minimum")
    args = ap.parse_args(argv)
    clfs = [Classifier(args.model, module=compile_module(m)) for m in args.modules]
    x = np.ascontiguousarray(clfs[0].preprocess(grace_hopper()), dtype=np.float32)
    outs = [c.infer_tensor(x) for c in clfs]
    profiles: list[list[list[dict]]] = [[] for _ in clfs]
    walls: list[list[float]] = [[] for _ in clfs]
    for _ in tqdm(range(args.turns), desc="turns", leave=False):
        for i, c in enumerate(clfs):
            profiles[i].append(c.profile(x))
            t = time.perf_counter()
            c.infer_tensor(x)
            walls[i].append((time.perf_counter() - t) * 1e3)
    by_op = []
    for runs in profiles:
        ops: dict[str, float] = collections.defaultdict(float)
        for j, step in enumerate(runs[0]):
            ops[step["op"]] += min(r[j]["ns"] for r in runs) / 1e6
        by_op.append(ops)
    names = [m.stem[-16:] for m in args.modules]
    if args.steps:
        print(f"{'step':40s}" + "".join(f"{n:>18s}" for n in names))
        for j, step in enumerate(profiles[0][0]):
            mins = [min(r[j]["ns"] for r in runs) / 1e6 for runs in profiles]
            print(f"{step['node'][-40:]:40s}" + "".join(f"{v:18.3f}" for v in mins))
    print(f"{args.turns} turns; ms, sum of per-step minima by op")
    print(f"{'op':22s}" + "".join(f"{n:>18s}" for n in names))
    for op in sorted(by_op[0], key=lambda o: -by_op[0][o]):
        print(f"{op:22s}" + "".join(f"{ops.get(op, 0.0):18.2f}" for ops in by_op))
    rows = [
        ("sum of step minima", [sum(o.values()) for o in by_op]),
        ("wall median", [float(np.median(w)) for w in walls]),
        ("wall minimum", [min(w) for w in walls]),
    ]
    for label, vals in rows:
        print(f"{label:22s}" + "".join(f"{v:18.2f}" for v in vals))
    diffs = [float(np.abs(o - outs[0]).max()) for o in outs]
    print(f"{'max abs diff vs first':22s}" + "".join(f"{d:18.1e}" for d in diffs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
