"""Self-checking exercises: the one convention every notebook follows.

A notebook exercise is three cells, tagged so that tests (and a teacher's tools) can find them:

* ``exercise`` — a code cell the learner edits. As shipped it must run without error and leave
  the answer unanswered (``None``, ``...``, or a function whose body is ``...``).
* ``check`` — the code cell right after it. It calls one of the functions below, which print a
  single line starting with ``✓`` when the answer is right and ``✗`` plus a hint when it is not.
  A check **never raises**: Run All completes on an unanswered notebook.
* ``solution`` — a markdown cell after the check holding a collapsed ``<details>`` block with one
  fenced ``python`` block. The tests put that code in place of the exercise cell and expect every
  check to print ``✓``. Being markdown, a solution never runs on Run All.

Why markdown for solutions: a hidden *code* cell would run on Run All and quietly answer the
exercise for the learner; a ``<details>`` block stays folded until they choose to look.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from typing import Any

PASS = "✓"
FAIL = "✗"

#: An answer that was left as shipped: ``None`` or ``...``.
_UNANSWERED = (None, Ellipsis)


def unanswered(value: Any) -> bool:
    """True for the placeholders an exercise cell ships with."""
    return any(value is u for u in _UNANSWERED)


def report(ok: bool, right: str, hint: str) -> bool:
    """Print the one line a check prints; return ``ok`` so a test can use it too."""
    print(f"{PASS} {right}" if ok else f"{FAIL} {hint}")
    return ok


def check_value(
    name: str, got: Any, expected: Any, hint: str, equal: Callable[[Any, Any], bool] | None = None
) -> bool:
    """Compare a predicted or computed value with the one the run produced.

    ``expected`` comes from the run (never typed into the notebook), so the check holds on
    every learner's machine.
    """
    if unanswered(got):
        return report(False, "", f"{name}: not answered yet. {hint}")
    try:
        ok = bool(equal(got, expected)) if equal else bool(got == expected)
    except Exception as exc:  # a malformed answer is a hint, not a traceback
        return report(False, "", f"{name}: could not compare {got!r} ({exc}). {hint}")
    if ok:
        return report(True, f"{name} = {got!r}", "")
    return report(False, "", f"{name}: you said {got!r}, the run says {expected!r}. {hint}")


def check_call(
    name: str, fn: Callable[..., Any], args: tuple, verify: Callable[[Any], str | None], hint: str
) -> bool:
    """Call the learner's function and judge its result.

    ``verify`` returns ``None`` when the result is right, or a sentence saying what is wrong.
    Whatever the learner's code does — return ``None``, raise, trap the guest — the check prints
    one line and returns.
    """
    if fn is None or not callable(fn):
        return report(False, "", f"{name}: define it in the exercise cell first. {hint}")
    try:
        result = fn(*args)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return report(
            False, "", f"{name} raised {type(exc).__name__}: {exc} (line {where.lineno}). {hint}"
        )
    if result is None or unanswered(result):
        return report(False, "", f"{name} returned {result!r}: not written yet? {hint}")
    try:
        problem = verify(result)
    except Exception as exc:
        problem = f"its result could not be checked ({type(exc).__name__}: {exc})"
    if problem is None:
        return report(True, f"{name} works", "")
    return report(False, "", f"{name}: {problem}. {hint}")


def trap_or_value(fn: Callable[[], object] | None) -> str | None:
    """What calling `fn()` did, in words: "trap: ..." when wasm trapped, "returned X" when it
    returned a value, None when `fn` is missing or returned nothing (not written yet).

    Notebook 02's out-of-bounds exercise: the learner's call should trap, and a trap is an
    exception, so the check needs the outcome as a value.
    """
    import wasmtime  # late: the other checks run without it

    if fn is None or not callable(fn):
        return None
    try:
        result = fn()
    except wasmtime.Trap as exc:
        # The last line is the cause ("wasm trap: out of bounds memory access"); the first
        # is a generic "error while executing".
        cause = str(exc).strip().splitlines()[-1].strip()
        return "trap: " + re.sub(r"^\d+:\s*", "", cause)
    if result is None or result is Ellipsis:
        return None
    return f"returned {result!r}"
