"""Keep a native library's start-up chatter off a learner's screen, and lose nothing.

TensorFlow's C++ runtime writes to file descriptor 2 before Python's logging exists: absl's
"All log messages before absl::InitializeLog() is called ...", oneDNN's notice, "Could not
find cuda drivers", "failed call to cuInit: ... CUDA error". No environment variable silences
the first of them, and in a notebook a line that says "CUDA error" reads as a failure on a
machine that needs no GPU. `quiet_native_stderr` points fd 2 at a temporary file for a block
and drops what was written there, unless the block raises: then every captured line is written
back to stderr before the exception goes on, so a real failure keeps its explanation.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Run the block with file descriptor 2 captured; replay the capture if it raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                capture.seek(0)
                sys.stderr.write(capture.read().decode("utf-8", errors="replace"))
                sys.stderr.flush()
