"""Where one inference spends its time: the guest times every step of its plan.

`wasi-lab bench` says how fast the guest is; this says why. The guest's `profile_tensor`
export runs one inference and reads the WASI clock around each step (a convolution with
its fused batch norm, activation and skip connection is one step), so the host gets, per
step, the graph node, the op, its multiply-adds and nanoseconds. Medians over a few runs
go into a table (`wasi-lab bench --layers`) and a chart (notebook 05): milliseconds per
kind of op and the rate each kind reaches, in G multiply-adds per second.

Each step also reports the multiply-adds by zero its kernel skipped: after a ReLU6 many
inputs of the next 1x1 convolution are zero, and the guest does not multiply by them. The
rate counts the network's multiply-adds, so where some were skipped it can beat what the
arithmetic alone allows; the share skipped says by how much.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from wasi_lab.hosts import grace_hopper
from wasi_lab.models.registry import ensure_model, get_model
from wasi_lab.paths import default_module
from wasi_lab.predict import Classifier


@dataclass
class StepTime:
    node: str
    op: str
    macs: int
    ms: float  # median over the runs
    skipped: int = 0  # multiply-adds by zero not done (of `macs`)


@dataclass
class OpTotal:
    op: str
    steps: int
    macs: int
    ms: float
    share: float  # of the whole inference
    skipped: int = 0

    @property
    def gmacs(self) -> float | None:
        """G multiply-adds per second (None for ops that only move values)."""
        return self.macs / self.ms / 1e6 if self.macs and self.ms > 0 else None

    @property
    def skipped_share(self) -> float:
        """The share of the multiply-adds that were by zero and skipped."""
        return self.skipped / self.macs if self.macs else 0.0


@dataclass
class LayerProfile:
    model: str
    module: str
    repeat: int
    steps: list[StepTime]

    @property
    def total_ms(self) -> float:
        return sum(s.ms for s in self.steps)

    def by_op(self) -> list[OpTotal]:
        """Steps grouped by op (e.g. `Conv 1x1`, `Depthwise 5x5/2`), slowest first."""
        groups: dict[str, list[StepTime]] = {}
        for s in self.steps:
            groups.setdefault(s.op, []).append(s)
        total = self.total_ms or 1.0
        rows = [
            OpTotal(
                op,
                len(ss),
                sum(s.macs for s in ss),
                sum(s.ms for s in ss),
                sum(s.ms for s in ss) / total,
                sum(s.skipped for s in ss),
            )
            for op, ss in groups.items()
        ]
        return sorted(rows, key=lambda r: -r.ms)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "module": self.module,
            "repeat": self.repeat,
            "total_ms": round(self.total_ms, 3),
            "by_op": [
                dict(asdict(r), gmacs=r.gmacs, skipped_share=r.skipped_share) for r in self.by_op()
            ],
            "steps": [asdict(s) for s in self.steps],
        }


def profile_layers(
    model: str = "efficientnet-lite0",
    repeat: int = 10,
    module: Path | None = None,
    image: bytes | None = None,
    progress: bool = True,
) -> LayerProfile:
    """Per-step medians of `repeat` timed inferences (after one untimed warm-up run)."""
    spec = get_model(model)
    ensure_model(spec.ref, progress=False)
    path = Path(module) if module else default_module()
    clf = Classifier(spec.ref, module=path)
    x = clf.preprocess(grace_hopper() if image is None else image)
    clf.profile(x)
    runs = [
        clf.profile(x)
        for _ in tqdm(
            range(max(1, repeat)), desc="timed inferences", leave=False, disable=not progress
        )
    ]
    steps = [
        StepTime(
            node=s["node"],
            op=s["op"],
            macs=int(s["macs"]),
            ms=statistics.median(r[i]["ns"] for r in runs) / 1e6,
            skipped=int(s["skipped"]),
        )
        for i, s in enumerate(runs[0])
    ]
    return LayerProfile(model=spec.name, module=str(path), repeat=repeat, steps=steps)


def format_layers(prof: LayerProfile, slowest: int = 8) -> str:
    """The table `wasi-lab bench --layers` prints: per op, then the slowest steps."""
    lines = [
        f"model {prof.model}, {len(prof.steps)} steps, median of {prof.repeat} runs: "
        f"{prof.total_ms:.2f} ms in the guest's steps",
        "",
        f"{'op':<18}{'steps':>6}{'ms':>9}{'share':>8}{'M MACs':>10}{'G MAC/s':>9}{'skipped':>9}",
    ]
    for r in prof.by_op():
        rate = f"{r.gmacs:9.2f}" if r.gmacs else f"{'':>9}"
        skipped = f"{r.skipped_share:9.1%}" if r.macs else ""
        lines.append(
            f"{r.op:<18}{r.steps:>6}{r.ms:9.2f}{r.share:8.1%}{r.macs / 1e6:10.1f}{rate}{skipped}"
        )
    skipped = sum(s.skipped for s in prof.steps)
    if skipped:
        lines += [
            "",
            f"skipped: {skipped / 1e6:.1f} M multiply-adds by zero (inputs a ReLU6 "
            "zeroed in all 4 pixels of a tile); G MAC/s counts them as done",
        ]
    lines += ["", f"slowest {slowest} steps:"]
    for s in sorted(prof.steps, key=lambda s: -s.ms)[:slowest]:
        rate = f"{s.macs / s.ms / 1e6:6.2f} G MAC/s" if s.macs and s.ms > 0 else ""
        skip = f"{s.skipped / s.macs:4.0%} skipped" if s.skipped else ""
        lines.append(f"  {s.ms:6.2f} ms  {s.op:<16} {rate:>15} {skip:>12}  {s.node}")
    return "\n".join(lines)


def cpu_mhz() -> float | None:
    """The clock the first CPU reports (`cpu MHz` in /proc/cpuinfo), or None without one.

    A virtual machine reports its nominal clock; turbo and throttling move the real one.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def layers_json(prof: LayerProfile) -> str:
    return json.dumps(prof.to_dict(), indent=2)
