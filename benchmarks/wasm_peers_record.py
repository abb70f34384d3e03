"""Run `wasi-lab bench --wasm-peers --json` several times and keep the runs in one file.

    .venv/bin/python benchmarks/wasm_peers_record.py [--runs 5] [--repeat 20]
                     [--out benchmarks/wasm_peers.json]

Each run is a separate process (the bench's own command), with the load average before
and after it, so a reader can tell a quiet run from a shared one. The file records the date,
the command and the machine; notebook 07 draws its wasm-peers chart from it, and
benchmarks/README.md quotes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def node_version() -> str | None:
    try:
        return (
            subprocess.run(
                ["node", "--version"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def _relative(path: str) -> str:
    """A path inside the checkout as the checkout sees it: the record names no machine's
    folders."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return Path(path).name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "wasm_peers.json")
    args = ap.parse_args(argv)
    bench = [
        sys.executable,
        "-m",
        "wasi_lab",
        "bench",
        "--wasm-peers",
        "--json",
        "--repeat",
        str(args.repeat),
    ]
    runs = []
    for _ in tqdm(range(args.runs), desc="bench --wasm-peers runs"):
        start, before = dt.datetime.now(dt.UTC), load_average()
        out = subprocess.run(bench, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        result = json.loads(out.stdout)
        result["module"] = _relative(result["module"])
        runs.append(
            {
                "started": start.strftime("%Y-%m-%d %H:%M UTC"),
                "load_average_before": before,
                "load_average_after": load_average(),
                "result": result,
            }
        )
    record = {
        "date": runs[0]["started"].split()[0],
        "command": f"wasi-lab bench --wasm-peers --json --repeat {args.repeat}"
        f" (x{args.runs}, benchmarks/wasm_peers_record.py)",
        "machine": {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            "python": platform.python_version(),
            "node": node_version(),
        },
        "runs": runs,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"{len(runs)} runs written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
