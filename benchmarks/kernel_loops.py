"""Inner loops of 1x1-convolution kernels, alone, as Cranelift compiles them.

    .venv/bin/python benchmarks/kernel_loops.py [--k 64] [--rounds 7] [--show NAME]

Why: the guest's 1x1 convolutions spend their time in one loop, and what limits it
(shuffles, loads, loop overhead, register spills) is easier to see without the rest of the
engine. Each variant is a hand-written wasm function: a loop over `k` steps, each doing one
step of a register-tiled kernel (32 or 36 multiply-adds) on data that stays in L1, repeated
many times. The variants take turns in one process (best of `--rounds`), and the table
gives cycles per step at the clock measured with a dependent chain of adds (3-cycle
latency), and the time relative to the guest's own loop (4x8, broadcast by shuffles).
`--show NAME` prints the x86 code Cranelift made for one variant (needs `objdump`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wasi_lab.runtime import get_engine  # noqa: E402

# Locals: 0 = repeat count, 1 = A pointer, 2 = W pointer, 3.. = 16 v128 registers' worth.
V = 3


def _splat_lane(src: int, lane: int) -> str:
    """`i8x16.shuffle` broadcasting 32-bit lane `lane` of local `src`."""
    idx = " ".join(str(4 * lane + i % 4) for i in range(16))
    return f"local.get {src} local.get {src} i8x16.shuffle {idx}"


def _loads(ptr: int, first: int, count: int) -> list[str]:
    """`count` consecutive vectors from local `ptr` into locals `first`, `first + 1`, ..."""
    return [
        f"local.get {ptr} v128.load offset={16 * i} local.set {first + i}" for i in range(count)
    ]


def _madd(acc: int, a: str, b: str, fma: bool = False) -> str:
    if fma:
        return f"{a} {b} local.get {acc} f32x4.relaxed_madd local.set {acc}"
    return f"local.get {acc} {a} {b} f32x4.mul f32x4.add local.set {acc}"


def shuffles(rows: int, vecs: int, fma: bool = False) -> list[str]:
    """`rows` x `4 vecs` outputs, A's `rows` values in one load and its lanes broadcast by
    shuffles. `shuffles(4, 2)` is the guest's kernel; `fma` uses `f32x4.relaxed_madd`."""
    w0 = V + rows * vecs  # after the accumulators: the weight vectors, A, the broadcast
    xs, x = w0 + vecs, w0 + vecs + 1
    body = _loads(2, w0, vecs) + _loads(1, xs, 1)
    for r in range(rows):
        body.append(f"{_splat_lane(xs, r)} local.set {x}")
        for h in range(vecs):
            body.append(_madd(V + vecs * r + h, f"local.get {x}", f"local.get {w0 + h}", fma))
    return body


def broadcast_in_memory(vectors: int, broadcasts: int) -> list[str]:
    """4 x 8 outputs from 2 vectors (local `vectors` points at them) and 4 values stored
    already broadcast (local `broadcasts`): four 16-byte loads instead of shuffles. With
    A broadcast when packing, the vectors are W's; with W broadcast at load time (4 output
    channels x 8 pixels), they are A's."""
    v0, x = V + 8, V + 10  # the second vector is v0 + 1
    body = _loads(vectors, v0, 2)
    for r in range(4):
        body.append(f"local.get {broadcasts} v128.load offset={16 * r} local.set {x}")
        for h in range(2):
            body.append(_madd(V + 2 * r + h, f"local.get {x}", f"local.get {v0 + h}"))
    return body


def presplat_w_8x4() -> list[str]:
    """8 channels x 4 pixels: each broadcast weight used once (a memory operand, in theory)."""
    a = V + 8
    body = _loads(1, a, 1)
    for c in range(8):
        body.append(_madd(V + c, f"local.get {a}", f"local.get 2 v128.load offset={16 * c}"))
    return body


def registers_only() -> list[str]:
    """The floor: 2 weight loads and 16 arithmetic operations, A already in registers."""
    w0 = V + 8  # w1 = w0 + 1
    body = _loads(2, w0, 2)
    for r in range(4):
        for h in range(2):
            body.append(_madd(V + 2 * r + h, f"local.get {V + 12 + r}", f"local.get {w0 + h}"))
    return body


#: name -> (loop body, A bytes per step, W bytes per step, multiply-adds per step)
VARIANTS: dict[str, tuple[Callable[[], list[str]], int, int, int]] = {
    "4x8 shuffles (guest)": (lambda: shuffles(4, 2), 16, 32, 32),
    "4x8 A broadcast at pack": (lambda: broadcast_in_memory(vectors=2, broadcasts=1), 64, 32, 32),
    "4ch x 8px W broadcast": (lambda: broadcast_in_memory(vectors=1, broadcasts=2), 32, 64, 32),
    "8ch x 4px W operand": (presplat_w_8x4, 16, 128, 32),
    "3x12 shuffles": (lambda: shuffles(3, 3), 16, 48, 36),
    "4x8 FMA (relaxed_madd)": (lambda: shuffles(4, 2, fma=True), 16, 32, 32),
    "floor: A in registers": (registers_only, 16, 32, 32),
}


def module_text(body: list[str], a_step: int, w_step: int, k: int) -> str:
    """A function `run(n)`: n times, k steps of `body` over A at 0 and W at 64 KiB."""
    regs = " ".join("v128" for _ in range(16))
    # Locals 15..18 start as four different loaded values, so the floor variant's "A in
    # registers" cannot be folded into one constant.
    seed = " ".join(f"i32.const {1000 * i} v128.load local.set {V + 11 + i}" for i in range(1, 5))
    inner = "\n".join(body)
    return f"""(module (memory 4)
 (func (export "run") (param i32) (local i32 i32 {regs}) (local $k i32)
 {seed}
 (loop $o
   i32.const 0 local.set 1 i32.const 65536 local.set 2 i32.const {k} local.set $k
   (loop $i {inner}
     local.get 1 i32.const {a_step} i32.add local.set 1
     local.get 2 i32.const {w_step} i32.add local.set 2
     local.get $k i32.const 1 i32.sub local.tee $k br_if $i)
   local.get 0 i32.const 1 i32.sub local.tee 0 br_if $o)))"""


def clock_ghz(store: wasmtime.Store) -> float:
    """Cycles per ns from 24 dependent `f32x4.add`s per iteration (3-cycle latency each)."""
    chain = "\n".join(["local.get 1 local.get 1 f32x4.add local.set 1"] * 24)
    wat = f"""(module (func (export "run") (param i32) (local v128)
 (loop $l {chain} local.get 0 i32.const 1 i32.sub local.tee 0 br_if $l)))"""
    run = wasmtime.Instance(store, wasmtime.Module(store.engine, wat), []).exports(store)["run"]
    best = min(_timed(store, run, 500_000) for _ in range(5))
    return 24 * 3 / (best / 500_000 * 1e9)


def _timed(store: wasmtime.Store, run: wasmtime.Func, n: int) -> float:
    t = time.perf_counter()
    run(store, n)
    return time.perf_counter() - t


def relaxed_engine() -> wasmtime.Engine:
    """The kit's engine settings plus relaxed SIMD, for the FMA variant."""
    cfg = wasmtime.Config()
    cfg.wasm_simd = True
    cfg.wasm_relaxed_simd = True
    cfg.cranelift_opt_level = "speed"
    return wasmtime.Engine(cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=64, help="steps of k per kernel call")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--show", metavar="NAME", help="print the x86 code of one variant")
    args = ap.parse_args(argv)
    engine = relaxed_engine()
    if args.show:
        body, a, w, _ = next(v for n, v in VARIANTS.items() if n.startswith(args.show))
        module = wasmtime.Module(engine, module_text(body(), a, w, args.k))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kernel.cwasm"
            path.write_bytes(module.serialize())
            print(
                subprocess.run(
                    ["objdump", "-d", "--no-show-raw-insn", "-M", "intel", str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
        return 0
    store = wasmtime.Store(engine)
    ghz = clock_ghz(wasmtime.Store(get_engine()))
    runs = {}
    for name, (body, a, w, _) in VARIANTS.items():
        module = wasmtime.Module(engine, module_text(body(), a, w, args.k))
        runs[name] = wasmtime.Instance(store, module, []).exports(store)["run"]
    repeat = max(1, 12_800_000 // args.k)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.rounds):
        for name, run in runs.items():
            best[name] = min(best[name], _timed(store, run, repeat))
    guest = best["4x8 shuffles (guest)"]
    print(f"k = {args.k}, {repeat} calls, best of {args.rounds} rounds; clock {ghz:.2f} GHz")
    print(f"{'variant':26s} {'cycles/step':>12s} {'MAC/cycle':>10s} {'time vs guest':>14s}")
    for name, seconds in best.items():
        cycles = seconds / (repeat * args.k) * 1e9 * ghz
        macs = VARIANTS[name][3]
        print(f"{name:26s} {cycles:12.2f} {macs / cycles:10.2f} {seconds / guest:14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
