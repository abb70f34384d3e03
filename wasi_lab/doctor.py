"""`wasi-lab doctor`: what the kit found on this machine, and what to do next."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field

from wasi_lab.build import PREBUILT_MODULE, built_module
from wasi_lab.paths import default_module
from wasi_lab.runtime import WASMTIME_VERSION
from wasi_lab.toolchain import ToolchainError, find_toolchain, missing_toolchain_advice


@dataclass
class DoctorReport:
    toolchain: dict | None
    toolchain_advice: str | None
    candidates: list[dict]
    wasmtime_version: str
    module: str
    module_present: bool
    prebuilt_present: bool
    built_present: bool
    node: str | None
    models: list[dict] = field(default_factory=list)
    images: int = 0
    next_steps: list[str] = field(default_factory=list)


def _node_version() -> str | None:
    node = shutil.which("node")
    if not node:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip() or None


def diagnose(check_network: bool = False) -> DoctorReport:
    steps: list[str] = []
    try:
        tc = find_toolchain(check_network=check_network)
        toolchain = {
            "rustc": str(tc.rustc),
            "cargo": str(tc.cargo),
            "version": tc.version,
            "target": tc.target,
            "origin": tc.origin,
            "reason": tc.reason,
            "debian_registry": tc.use_debian_registry,
        }
        cands = tc.candidates
        advice = None
    except ToolchainError:
        toolchain, advice = None, missing_toolchain_advice()
        from wasi_lab.toolchain import candidates

        cands = candidates()
        steps.append(
            "install a wasm-capable Rust toolchain (see above) to rebuild the guest; "
            "until then the prebuilt module is used"
        )
    module = default_module()
    models: list[dict] = []
    images = 0
    try:
        from wasi_lab.models.registry import list_models

        models = [dict(r) if isinstance(r, dict) else r.__dict__ for r in list_models()]
    except Exception:  # models side absent or broken: doctor still reports the rest
        models = []
    try:
        from wasi_lab.images import list_images

        images = len(list_images())
    except Exception:
        images = 0
    if not module.exists():
        steps.append("run `wasi-lab build --update-prebuilt` (or `make setup`)")
    if models and not any(m.get("present") for m in models):
        steps.append("run `make setup` to convert the bundled EfficientNet-Lite0 model")
    if images == 0:
        steps.append("run `make setup` to place the sample images in images/")
    if not steps:
        steps.append("all set: `make lab` opens the workshop")
    return DoctorReport(
        toolchain=toolchain,
        toolchain_advice=advice,
        candidates=[
            {
                "origin": c.origin,
                "rustc": str(c.rustc),
                "version": c.version,
                "wasm_targets": c.targets,
            }
            for c in cands
        ],
        wasmtime_version=WASMTIME_VERSION,
        module=str(module),
        module_present=module.exists(),
        prebuilt_present=PREBUILT_MODULE.exists(),
        built_present=built_module() is not None,
        node=_node_version(),
        models=models,
        images=images,
        next_steps=steps,
    )


def format_doctor(rep: DoctorReport) -> str:
    lines = ["Rust toolchains found:"]
    for c in rep.candidates:
        targets = ", ".join(c["wasm_targets"]) or "no wasm target"
        lines.append(f"  - {c['origin']}: {c['version'] or '?'} [{targets}]")
    if rep.toolchain:
        t = rep.toolchain
        lines += [
            f"Chosen: {t['rustc']} ({t['version']}) for {t['target']}",
            f"  why: {t['reason']}",
        ]
    else:
        lines.append(rep.toolchain_advice or "no toolchain")
    lines += [
        f"wasmtime (Python): {rep.wasmtime_version}",
        f"node: {rep.node or 'not found (notebook 05 skips the Node host)'}",
        f"guest module: {rep.module} ({'present' if rep.module_present else 'MISSING'})",
    ]
    for m in rep.models:
        lines.append(
            f"model {m.get('name')}: {'present' if m.get('present') else 'absent'}"
            f" ({m.get('source', '')})"
        )
    lines.append(f"images: {rep.images} in images/")
    lines.append("next:")
    lines += [f"  - {s}" for s in rep.next_steps]
    return "\n".join(lines)


def doctor_json(rep: DoctorReport) -> str:
    return json.dumps(rep.__dict__, indent=2, default=str)
