"""TensorFlow as the oracle: the graphs TensorFlow writes, run by the guest, against TF itself.

Each graph of `tests.oracle.graphs` (Keras 3 and tf_keras applications with random weights,
TF1 graph mode, one small graph per op) is frozen by TensorFlow and fed one tensor; the
guest gets the same bytes and the same tensor, and its output must match TensorFlow's
(`harness.RTOL`/`ATOL`). Graphs are cached on disk (`tests.oracle.cache`), so only a first
run pays for TensorFlow.

The engine does not run everything TensorFlow writes yet. Those graphs are listed in
`NOT_YET`, the one table of what is missing and why; for each, the guest must refuse the
graph with a clear BadModelError saying what it lacks (never a trap, never an answer), and
the test fails as soon as the graph loads, so the table shrinks with every op the engine
gains.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from tests.oracle import harness
from tests.oracle.cache import Frozen, ensure, tensorflow_missing
from tests.oracle.graphs import APP_NAMES, BUILDERS, OP_NAMES
from wasi_lab.paths import REPO_ROOT
from wasi_lab.runtime import BadModelError, Guest
from wasi_lab.stepthrough import read_plan

MISSING = tensorflow_missing()
if MISSING:
    pytest.skip(MISSING, allow_module_level=True)

#: Graph -> (why the guest cannot run it yet, what its refusal must say: a regex).
NOT_YET: dict[str, tuple[str, str]] = {}  # every graph of tests.oracle.graphs runs today
#: A graph the guest runs today, loaded after each refusal to show the guest still works.
KNOWN_GOOD = "op-relu-pad"


@pytest.fixture(scope="module")
def op_graphs() -> dict[str, Frozen]:
    return ensure(OP_NAMES)


def check(guest: Guest, frozen: Frozen, known_good: Frozen) -> None:
    """The oracle's verdict on one graph: matches TensorFlow, or is refused as NOT_YET says."""
    name = frozen.name
    if name not in NOT_YET:
        got = harness.run(guest, frozen)
        problem = harness.mismatch(got.y, frozen.y)
        assert problem is None, f"{name}: the guest's output differs from TensorFlow's: {problem}"
        return
    why, refusal = NOT_YET[name]
    try:
        got = harness.run(guest, frozen)
    except BadModelError as exc:
        assert re.search(refusal, exc.message), (
            f"{name}: refused, but not for the reason NOT_YET gives ({why}): {exc.message}"
        )
        assert guest.poisoned is None
        after = harness.run(guest, known_good)  # the refusal left the guest usable
        assert harness.mismatch(after.y, known_good.y) is None
        return
    problem = harness.mismatch(got.y, frozen.y)
    verdict = "and matches TensorFlow" if problem is None else f"but differs: {problem}"
    pytest.fail(f"{name} now loads {verdict}: take it out of NOT_YET ({why})")


@pytest.mark.parametrize("name", OP_NAMES)
def test_op_graph(guest: Guest, op_graphs: dict[str, Frozen], name: str) -> None:
    check(guest, op_graphs[name], op_graphs[KNOWN_GOOD])


@pytest.mark.slow  # cached: under a second each; a first run builds each in 15-40 s
@pytest.mark.parametrize("name", APP_NAMES)
def test_keras_application(guest: Guest, op_graphs: dict[str, Frozen], name: str) -> None:
    frozen = ensure([name])[name]
    assert frozen.y.shape == (1, 1000)
    check(guest, frozen, op_graphs[KNOWN_GOOD])


def plan_ops(guest: Guest, frozen: Frozen) -> list[tuple[str, str]]:
    """(op kind, fused activation) of every step the guest plans for a graph."""
    handle = harness.load(guest, frozen)
    try:
        return [(s.op.split(" ")[0], s.act) for s in read_plan(guest, handle).steps]
    finally:
        guest.call("free_model", handle)


@pytest.mark.slow  # cached: about a second; a first run builds the six applications
def test_keras_activations_run_inside_the_convolutions(guest: Guest) -> None:
    """Keras' swish and hard swish (several ops each as TensorFlow writes them) and their
    squeeze-excite gates run as the activation of the convolution before: no Sigmoid,
    RealDiv or activation-only step is left, the only Mul steps are the squeeze-excite
    products (one per Mean but the final pooling), and the same network from Keras 3
    (batch norm written out) and tf_keras (FusedBatchNormV3) has the very same plan."""
    # Steps other than Pad (which a Pad fold into the convolution after it may remove).
    pairs = [("efficientnetb0", 118), ("mobilenetv3small", 75), ("mobilenetv2-1.0", 55)]
    names = [f"{k}-{app}" for app, _ in pairs for k in ("keras3", "tfkeras")]
    graphs = ensure(names)
    for app, steps in pairs:
        plans = [plan_ops(guest, graphs[f"{k}-{app}"]) for k in ("keras3", "tfkeras")]
        assert plans[0] == plans[1], app
        plan = plans[0]
        assert sum(op != "Pad" for op, _ in plan) == steps, (app, len(plan))
        ops = {op for op, _ in plan}
        assert not ops & {"Sigmoid", "Add"}, (app, sorted(ops))
        kinds = [op for op, _ in plan]
        assert kinds.count("Mul") == max(kinds.count("Mean") - 1, 0), app
        assert [a for op, a in plan if op == "Affine"] in ([], ["none"]), app
    effnet = plan_ops(guest, graphs["keras3-efficientnetb0"])
    assert effnet.count(("Conv", "sigmoid")) == 16  # the squeeze-excite gates
    assert sum(a == "swish" for _, a in effnet) == 49
    v3 = plan_ops(guest, graphs["keras3-mobilenetv3small"])
    assert v3.count(("Conv", "hard_sigmoid")) == 9
    assert sum(a == "hard_swish" for _, a in v3) == 19


def test_not_yet_names_only_graphs_that_exist() -> None:
    assert set(NOT_YET) <= set(BUILDERS), set(NOT_YET) - set(BUILDERS)
    assert KNOWN_GOOD not in NOT_YET


def test_the_oracle_is_strict(guest: Guest, op_graphs: dict[str, Frozen]) -> None:
    """The comparison catches a tiny error: the known-good graph with one value nudged by
    3e-5 relative fails, so a pass above means the guest really agrees with TensorFlow."""
    frozen = op_graphs["op-conv2d-valid"]
    got = harness.run(guest, frozen).y
    assert harness.mismatch(got, frozen.y) is None
    nudged = got.copy()
    i = int(abs(nudged).argmax())
    nudged.flat[i] *= 1 + 3e-5
    assert "differ" in (harness.mismatch(nudged, frozen.y) or "")
    assert "shape" in (harness.mismatch(got.reshape(-1), frozen.y) or "")
    # near-uniform probabilities, as random-weight classifiers give: 0.1% off is caught
    probs = np.full((1, 1000), 1e-3, np.float32)
    assert harness.mismatch(probs * (1 + 3e-6), probs) is None
    assert "differ" in (harness.mismatch(probs * (1 + 1e-3), probs) or "")


SKIP_RUN = """
import sys
sys.modules["tensorflow"] = None  # as if TensorFlow were not installed
import pytest
sys.exit(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", "tests/test_oracle_graphs.py"]))
"""


def test_without_tensorflow_everything_skips_with_one_reason() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SKIP_RUN], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    # 5: pytest ran nothing, the module skipped itself whole (not one skip per test)
    assert done.returncode == 5, done.stdout[-2000:] + done.stderr[-2000:]
    skipped = [
        re.sub(r"py:\d+:", "py:", ln) for ln in done.stdout.splitlines() if ln.startswith("SKIPPED")
    ]
    assert skipped == [
        "SKIPPED [1] tests/test_oracle_graphs.py: TensorFlow oracle skipped: "
        "tensorflow is not installed (pip install -e '.[oracle]')"
    ], done.stdout
