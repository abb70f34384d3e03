"""The portable `scalar` build and the SIMD128 build must agree to float rounding.

Builds the scalar variant with the kit's own `build_guest(features=("scalar",))` when it is
not built yet (skipped when no Rust toolchain is available).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wasi_lab.runtime import Guest

EFFICIENTNET = Path(__file__).resolve().parent.parent / "models" / "efficientnet-lite0.pb"


@pytest.fixture(scope="module")
def scalar_module() -> Path:
    from wasi_lab.build import build_guest
    from wasi_lab.toolchain import find_toolchain

    try:
        find_toolchain()
    except Exception as exc:  # noqa: BLE001 - any missing toolchain means skip
        pytest.skip(f"no Rust toolchain: {exc}")
    # Always through cargo: it rebuilds only what changed, and a scalar module left over from
    # older sources would compare today's SIMD kernels with yesterday's engine.
    return build_guest(features=("scalar",), progress=False).module


def run(module: Path | str, pb: bytes, x: np.ndarray) -> tuple[np.ndarray, str]:
    g = Guest(module)
    mp = g.write_bytes(pb)
    h = g.call("load_model", mp, len(pb))
    n = g.call("model_output_len", h)
    tp, op = g.write_bytes(x.tobytes()), g.alloc(4 * n)
    g.call("infer_tensor", h, tp, op)
    ip = g.alloc(4096)
    info = g.read_bytes(ip, g.call("model_info", h, ip, 4096)).decode()
    return g.read_f32(op, n), info


@pytest.mark.skipif(not EFFICIENTNET.exists(), reason="models/efficientnet-lite0.pb missing")
def test_scalar_and_simd_agree(scalar_module: Path, module_path: Path) -> None:
    pb = EFFICIENTNET.read_bytes()
    x = np.random.default_rng(5).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    fast, fast_info = run(module_path, pb, x)
    slow, slow_info = run(scalar_module, pb, x)
    assert '"kernels":"scalar"' in slow_info
    assert '"kernels":"simd128"' in fast_info
    assert np.abs(fast - slow).max() <= 1e-4
