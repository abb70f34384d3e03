"""`quiet_native_stderr`: native writes to fd 2 vanish, unless the block fails."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, sys
from wasi_lab.quiet import quiet_native_stderr
os.write(2, b"before\\n")
with quiet_native_stderr():
    os.write(2, b"native chatter\\n")
os.write(2, b"after\\n")
try:
    with quiet_native_stderr():
        os.write(2, b"why it failed\\n")
        raise RuntimeError("boom")
except RuntimeError:
    os.write(2, b"caught\\n")
"""


def test_chatter_is_dropped_and_a_failure_keeps_its_lines() -> None:
    err = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stderr
    assert err.splitlines() == ["before", "after", "why it failed", "caught"]
