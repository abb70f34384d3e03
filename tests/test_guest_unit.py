"""The guest crate's own Rust unit tests, run natively with the kit's toolchain."""

from __future__ import annotations

import re

from wasi_lab.build import run_guest_unit_tests


def test_cargo_unit_tests_pass() -> None:
    out = run_guest_unit_tests()
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    m = re.search(r"test result: ok\. (\d+) passed; 0 failed", log)
    assert m, log[-2000:]
    # The kernels' tail and border cases are among them.
    assert int(m.group(1)) >= 15
    assert "vector_depthwise_matches_plain_loops ... ok" in log
    assert "blocked_conv_matches_plain_loops ... ok" in log
