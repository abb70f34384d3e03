"""Fuzz the guest's untrusted-input entry points: image decoding, model loading, classify.

The server hands request bytes straight to these functions, so the property is strict:
whatever the bytes, the call returns or raises a clean GuestError (never a trap, never a
host crash), frees what it allocated, and the same guest keeps working afterwards.
Hypothesis runs derandomized with bounded example counts so CI sees the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wasi_lab.models.graphdef import GraphBuilder
from wasi_lab.paths import IMAGES_DIR
from wasi_lab.pngs import make_png
from wasi_lab.runtime import BadArgumentError, Guest, GuestError

FUZZ = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
#: Room for the guest's own 40-megapixel cap: a mutated header may announce ~100 MB of
#: pixels, and under a tighter store limit Rust's allocation failure aborts (a trap; the
#: server refuses such images from the header before decoding, see check_memory).
MEMORY_LIMIT = 1024 * 1024 * 1024


def tiny_classifier(side: int, classes: int) -> bytes:
    """input [1,side,side,3] -> Mean -> MatMul -> Softmax: runs in microseconds."""
    rng = np.random.default_rng(3)
    g = GraphBuilder()
    x = g.placeholder("input", [-1, side, side, 3])
    m = g.op("Mean", "mean", [x, g.const("axes", np.array([1, 2], np.int32))])
    w = g.const("w", rng.standard_normal((3, classes)).astype(np.float32))
    g.op("Softmax", "prob", [g.op("MatMul", "logits", [m, w])])
    return g.to_bytes()


SMALL_MODEL = tiny_classifier(4, 5)
IMAGE_MODEL = tiny_classifier(224, 10)
SEEDS = [make_png(40, 30), (IMAGES_DIR / "grace_hopper.jpg").read_bytes()]


@pytest.fixture(scope="module")
def fuzz_guest() -> Guest:
    return Guest(memory_limit=MEMORY_LIMIT)


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


mutations = st.tuples(
    st.sampled_from(range(len(SEEDS))),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12),
    st.one_of(st.none(), st.integers(1, 4000)),
)
random_bytes = st.binary(min_size=1, max_size=4096)


def load(guest: Guest, pb: bytes) -> int:
    ptr = guest.write_bytes(pb, "model")
    try:
        return guest.call("load_model", ptr, len(pb))
    finally:
        guest.dealloc(ptr, len(pb))


def still_works(guest: Guest, baseline: int) -> None:
    """No trap, no leaked blocks, and a real model still loads and runs."""
    assert guest.poisoned is None
    assert guest.call("live_allocations") == baseline
    h = load(guest, SMALL_MODEL)
    x = np.full((1, 4, 4, 3), 0.5, np.float32)
    ip, op = guest.write_bytes(x.tobytes()), guest.alloc(20)
    try:
        assert guest.call("infer_raw", h, ip, x.nbytes, op, 20) == 5
        assert abs(float(guest.read_f32(op, 5).sum()) - 1) < 1e-5
    finally:
        guest.dealloc(ip, x.nbytes)
        guest.dealloc(op, 20)
        guest.call("free_model", h)


def _image_case(guest: Guest, data: bytes, mode: int) -> None:
    before = guest.call("live_allocations")
    try:
        w, h = guest.image_size(data)
        assert w > 0 and h > 0
    except GuestError:
        pass
    try:
        guest.decode_image(data, mode)
    except GuestError:
        pass
    assert guest.poisoned is None
    assert guest.call("live_allocations") == before


@FUZZ
@given(case=mutations, mode=st.integers(0, 2))
def test_decode_mutated_images(fuzz_guest: Guest, case, mode: int) -> None:
    seed, edits, cut = case
    _image_case(fuzz_guest, mutate(SEEDS[seed], edits, cut), mode)


@FUZZ
@given(data=random_bytes, mode=st.integers(-3, 5))
def test_decode_random_bytes(fuzz_guest: Guest, data: bytes, mode: int) -> None:
    _image_case(fuzz_guest, data, mode)


def test_bad_mode_is_a_clean_error(fuzz_guest: Guest) -> None:
    with pytest.raises(BadArgumentError):
        fuzz_guest.decode_image(SEEDS[0], 7)


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(1, len(SMALL_MODEL))),
    junk=st.one_of(st.none(), random_bytes),
)
def test_load_mutated_and_random_models(fuzz_guest: Guest, edits, cut, junk) -> None:
    baseline = fuzz_guest.call("live_allocations")
    data = junk if junk is not None else mutate(SMALL_MODEL, edits, cut)
    try:
        handle = load(fuzz_guest, data)
    except GuestError:
        handle = None
    if handle is not None:  # a mutation the parser accepted: running it must be clean too
        x = np.ones((1, 4, 4, 3), np.float32)
        ip, op = fuzz_guest.write_bytes(x.tobytes()), fuzz_guest.alloc(64)
        try:
            fuzz_guest.call("infer_raw", handle, ip, x.nbytes, op, 64)
        except GuestError:
            pass
        finally:
            fuzz_guest.dealloc(ip, x.nbytes)
            fuzz_guest.dealloc(op, 64)
            fuzz_guest.call("free_model", handle)
    still_works(fuzz_guest, baseline)


@pytest.fixture(scope="module")
def image_model(fuzz_guest: Guest) -> int:
    return load(fuzz_guest, IMAGE_MODEL)


@FUZZ
@given(
    case=mutations,
    mode=st.integers(-1, 3),
    k=st.integers(-2, 12),
    handle_delta=st.sampled_from([0, 0, 0, 1, -1000]),
)
def test_classify_mutated_images(
    fuzz_guest: Guest, image_model: int, case, mode: int, k: int, handle_delta: int
) -> None:
    seed, edits, cut = case
    data = mutate(SEEDS[seed], edits, cut)
    before = fuzz_guest.call("live_allocations")
    ip, op = fuzz_guest.write_bytes(data), fuzz_guest.alloc(8 * 12)
    try:
        n = fuzz_guest.call("classify", image_model + handle_delta, ip, len(data), mode, op, k)
        assert 1 <= n <= min(k, 10)
        idx = fuzz_guest.read_u32(op, 2 * n)[0::2]
        assert all(0 <= i < 10 for i in idx)
    except GuestError:
        pass
    finally:
        fuzz_guest.dealloc(ip, len(data))
        fuzz_guest.dealloc(op, 8 * 12)
    assert fuzz_guest.poisoned is None
    assert fuzz_guest.call("live_allocations") == before


def test_guest_usable_after_fuzzing(fuzz_guest: Guest) -> None:
    still_works(fuzz_guest, fuzz_guest.call("live_allocations"))
    w, h, tensor = fuzz_guest.decode_image(SEEDS[1], 1)
    assert (w, h) == (512, 600) and tensor.shape == (1, 224, 224, 3)
