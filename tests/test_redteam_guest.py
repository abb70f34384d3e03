"""Red team for the guest: hostile images, hostile graphs and raw ABI calls, against the REAL
wasm module under wasmtime, most of them with a store memory limit (as the server runs it).

Every input here is small and generated in Python. The rule each test checks: a hostile input
gets its error code (BadImage, BadModel, OutOfMemory, BadArgument ...) and the instance keeps
working; it never traps, never labels made-up pixels, never aliases host buffers.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_guest_model_abi import load  # write a GraphDef, load_model, free it
from wasi_lab.models.graphdef import (
    DataType,
    GraphBuilder,
    Node,
    TensorShape,
    encode_node,
    encode_varint,
)
from wasi_lab.pngs import SIGNATURE, png_chunk
from wasi_lab.runtime import (
    BadArgumentError,
    BadImageError,
    BadModelError,
    Guest,
    GuestError,
    GuestOutOfMemoryError,
    GuestTrap,
)

MiB = 1 << 20


# --------------------------------------------------------------------------- helpers
def png(
    width: int,
    height: int,
    rows: bytes,
    bit_depth: int = 8,
    colour: int = 2,
    declared_height: int | None = None,
) -> bytes:
    """A PNG from already filtered rows (each starting with its filter byte)."""
    ihdr = struct.pack(">IIBBBBB", width, declared_height or height, bit_depth, colour, 0, 0, 0)
    return (
        SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(rows, 9))
        + png_chunk(b"IEND", b"")
    )


def jpeg(array: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", **options)
    return buf.getvalue()


def noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    return a[..., 0] if c == 1 else a


def classifier(extra=None, side: int = 4, classes: int = 5) -> GraphBuilder:
    """input [1,side,side,3] -> Mean -> MatMul -> Softmax, optionally more nodes after."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, side, side, 3])
    m = g.op("Mean", "mean", [x, g.const("axes", np.array([1, 2], np.int32))])
    w = g.const("w", np.arange(3 * classes, dtype=np.float32).reshape(3, classes) / 10)
    g.op("Softmax", "prob", [g.op("MatMul", "logits", [m, w])])
    return g


def still_works(guest: Guest) -> None:
    """After a refusal the same instance still loads and runs a model."""
    h = load(guest, classifier().to_bytes())
    x = np.ones((1, 4, 4, 3), np.float32)
    ip, op = guest.write_bytes(x.tobytes()), guest.alloc(20)
    assert guest.call("infer_raw", h, ip, x.nbytes, op, 20) == 5
    assert abs(guest.read_f32(op, 5).sum() - 1) < 1e-5
    guest.call("free_model", h)


def no_trap(call, *args):
    """Run `call`; return the GuestError it raised, or None on success. A trap fails."""
    try:
        call(*args)
    except GuestTrap as trap:  # pragma: no cover - this is the failure being tested
        pytest.fail(f"the guest trapped: {trap}")
    except GuestError as exc:
        return exc
    return None


def raw_const(name: str, dtype: int, dims: list[int], payload: bytes = b"") -> bytes:
    """A Const NodeDef written by hand: shapes and values the GraphBuilder would refuse."""

    def varint(v: int) -> bytes:
        out = bytearray()
        while True:
            b, v = v & 0x7F, v >> 7
            out.append(b | (0x80 if v else 0))
            if not v:
                return bytes(out)

    def field(n: int, payload: bytes) -> bytes:
        return varint(n << 3 | 2) + varint(len(payload)) + payload

    shape = b"".join(field(2, (varint(8) + varint(d)) if d else b"") for d in dims)
    tensor = varint(1 << 3) + varint(dtype) + field(2, shape) + payload
    attr = field(1, b"value") + field(2, field(8, tensor))
    dtype_attr = field(1, b"dtype") + field(2, varint(6 << 3) + varint(dtype))
    return field(
        1, field(1, name.encode()) + field(2, b"Const") + field(5, dtype_attr) + field(5, attr)
    )


# --------------------------------------------------------------------------- images
def test_wide_and_tall_pngs_decode_in_little_memory(module_path) -> None:
    """A 545-byte 160000x1 PNG: the resize's intermediate was width x 224 RGBA f32 (573 MB);
    now one row. Both orientations decode under a 48 MiB store limit."""
    wide = png(160000, 1, b"\x00" + bytes(range(256)) * 1875)
    tall = png(1, 160000, b"\x00\x10\x20\x30" * 160000)
    for data, size in ((wide, (160000, 1)), (tall, (1, 160000))):
        g = Guest(module_path, memory_limit=48 * MiB)
        w, h, t = g.decode_image(data, 1)
        assert (w, h) == size and t.shape == (1, 224, 224, 3) and np.isfinite(t).all()
        assert g.pages * 65536 < 40 * MiB
    assert len(wide) < 4096


def test_resize_matches_an_independent_triangle_filter(guest: Guest) -> None:
    """The streaming resize against PIL-free NumPy code of the same separable filter."""
    a = noise(37, 301, seed=3)
    data = png(301, 37, b"".join(b"\x00" + a[y].tobytes() for y in range(37)))
    got = guest.decode_image(data, 0)[2][0] * 255

    def weights(size: int, new: int) -> np.ndarray:
        ratio = size / new
        s = max(ratio, 1.0)
        m = np.zeros((new, size))
        for o in range(new):
            c = (o + 0.5) * ratio
            lo, hi = max(int(np.floor(c - s)), 0), min(int(np.ceil(c + s)), size)
            hi = max(hi, lo + 1)
            x = (np.arange(lo, hi) - (c - 0.5)) / s
            k = np.where(np.abs(x) < 1, 1 - np.abs(x), 0)
            m[o, lo:hi] = k / k.sum()
        return m

    want = np.einsum("oy,yxc->oxc", weights(37, 224), a.astype(np.float64))
    want = np.einsum("px,oxc->opc", weights(301, 224), want)
    assert np.abs(got - np.clip(np.round(want), 0, 255)).max() <= 1.0001


@pytest.mark.parametrize("kind", ["png16", "jpeg", "progressive"])
def test_big_decodes_answer_out_of_memory_not_a_trap(module_path, kind: str) -> None:
    """Sweep the store limit across the decode's peak: every limit either decodes or answers
    OutOfMemory, and the instance stays usable. 16-bit RGBA is 8 bytes a pixel before the
    RGB copy; jpeg-decoder holds its planes and its output at once, and for a progressive
    file every coefficient as well."""
    if kind == "png16":
        side = 1400
        yy, xx = np.mgrid[0:side, 0:side]
        a = np.stack([xx * 40, yy * 40, (xx + yy) * 20, xx * 0 + 65535], -1).astype(">u2")
        data = png(
            side,
            side,
            b"".join(b"\x00" + a[y].tobytes() for y in range(side)),
            bit_depth=16,
            colour=6,
        )
        limits = range(8, 40, 2)
    else:
        side = 1600
        yy, xx = np.mgrid[0:side, 0:side]
        pixels = np.stack([xx % 256, yy % 256, (xx ^ yy) % 256], -1).astype(np.uint8)
        if kind == "jpeg":
            data, limits = jpeg(pixels, quality=70), range(8, 36, 2)
        else:  # progressive 4:4:4: jpeg-decoder keeps every coefficient until the end
            data = jpeg(pixels, quality=70, progressive=True, subsampling=0)
            limits = range(8, 64, 3)
    outcomes = set()
    for mib in limits:
        g = Guest(module_path, memory_limit=mib * MiB)
        try:
            ptr = g.write_bytes(data)
        except GuestOutOfMemoryError:
            continue
        g.dealloc(ptr, len(data))
        err = no_trap(g.decode_image, data, 1)
        assert err is None or isinstance(err, GuestOutOfMemoryError), err
        outcomes.add(type(err).__name__ if err else "ok")
        if err:
            assert "MiB" in err.message
            g.decode_image(png(8, 8, b"".join(b"\x00" + bytes(24) for _ in range(8))), 1)
    assert outcomes == {"ok", "GuestOutOfMemoryError"}, outcomes


def test_truncated_jpeg_scans_are_bad_images(guest: Guest) -> None:
    """A JPEG cut in its scan and closed with EOI used to decode (jpeg-decoder pads the scan
    with zero bits) and get a label; now BadImage. Complete JPEGs of every layout still
    decode: colour 4:2:0 and 4:4:4, greyscale, small and odd sizes."""
    cases = [
        jpeg(noise(300, 400, seed=1), quality=90),
        jpeg(noise(97, 131, seed=2), quality=95, subsampling=0),
        jpeg(noise(64, 50, 1, seed=3), quality=80),
        jpeg(noise(9, 7, seed=4), quality=50),
    ]
    for full in cases:
        guest.decode_image(full, 1)
        start, end = full.index(b"\xff\xda"), len(full) - 2  # the scan, before EOI
        for cut in (0.5, 0.9, 0.98):
            n = start + int((end - start) * cut)
            for tail in (b"\xff\xd9", b""):
                with pytest.raises(BadImageError):
                    guest.decode_image(full[:n] + tail, 1)
    still_works(guest)


def test_progressive_jpegs_missing_scans_are_bad_images(guest: Guest) -> None:
    """A progressive JPEG closed with EOI after some of its scans decodes to a blurred or
    grey picture; the scan headers say which coefficients never got their last bits."""
    cases = [
        jpeg(noise(120, 160, seed=6), quality=85, progressive=True),
        jpeg(noise(61, 47, seed=7), quality=90, progressive=True, subsampling=0),
        jpeg(noise(50, 70, 1, seed=8), quality=75, progressive=True),
    ]
    for full in cases:
        guest.decode_image(full, 1)
        scans = [i for i in range(len(full) - 1) if full[i : i + 2] == b"\xff\xda"]
        assert len(scans) > 2
        for cut in scans[1:]:  # after 1, 2 ... of the scans
            with pytest.raises(BadImageError):
                guest.decode_image(full[:cut] + b"\xff\xd9", 1)
    still_works(guest)


def progressive_cases() -> dict[str, bytes]:
    """Real progressive JPEGs (Pillow's libjpeg) of every layout the walk must follow:
    4:2:0, 4:4:4 and 4:2:2, greyscale, Huffman tables optimised per scan, restart intervals
    (by blocks and by rows), odd and tall-thin sizes, a photograph and a flat picture whose
    scans are mostly end-of-band runs."""
    from PIL import Image as PILImage

    photo = np.asarray(
        PILImage.open(
            Path(__file__).resolve().parent.parent / "images" / "grace_hopper.jpg"
        ).convert("RGB")
    )[::2, ::2]
    return {
        "4:2:0 noise": jpeg(noise(120, 160, seed=11), quality=85, progressive=True),
        "4:4:4 odd": jpeg(noise(61, 47, seed=12), quality=90, progressive=True, subsampling=0),
        "4:2:2 wide": jpeg(noise(17, 333, seed=13), quality=60, progressive=True, subsampling=1),
        "grey": jpeg(noise(50, 70, 1, seed=14), quality=75, progressive=True),
        "photo optimised": jpeg(photo, quality=92, progressive=True, optimize=True),
        "photo restarts": jpeg(photo, quality=80, progressive=True, restart_marker_blocks=3),
        "restart rows": jpeg(photo[:100], quality=70, progressive=True, restart_marker_rows=1),
        "tall thin": jpeg(noise(900, 3, seed=15), quality=60, progressive=True),
        "flat": jpeg(np.full((64, 64, 3), 128, np.uint8), quality=80, progressive=True),
    }


def cuts(data: bytes, count: int) -> list[int]:
    """`count` offsets spread over the scans, and every one of the last 24 bytes before EOI
    (inside the last progressive scan: the cut the scan headers cannot show)."""
    first = data.index(b"\xff\xda")
    end = len(data) - 2
    spread = range(first, end, max(1, (end - first) // count))
    return sorted(set(spread) | set(range(max(first, end - 24), end)))


def test_progressive_jpegs_cut_anywhere_are_bad_images(guest: Guest) -> None:
    """A progressive JPEG cut inside its LAST scan has all its scan headers, so only walking
    the entropy-coded data shows the cut: jpeg-decoder pads it with zero bits and used to
    decode it (and the model labelled the filler). Every cut, closed with EOI or not, is now
    BadImage; every whole file still decodes."""
    for name, full in progressive_cases().items():
        w, h, _ = guest.decode_image(full, 1)
        assert w > 0 and h > 0, name
        last_scan = full.rindex(b"\xff\xda")
        offsets = cuts(full, 120)
        assert sum(n > last_scan for n in offsets) >= min(24, len(full) - 3 - last_scan), name
        for n in offsets:
            for tail in (b"\xff\xd9", b""):
                try:
                    guest.decode_image(full[:n] + tail, 1)
                except BadImageError:
                    continue
                pytest.fail(f"{name}: cut at {n} of {len(full)} (+{tail!r}) decoded")
    still_works(guest)


def test_sample_jpegs_are_not_refused(guest: Guest, grace_hopper_bytes: bytes) -> None:
    folder = Path(__file__).resolve().parent.parent / "images"
    images = [grace_hopper_bytes] + [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    for data in images:
        w, h, _ = guest.decode_image(data, 1)
        assert w > 0 and h > 0


def test_png_with_missing_rows_is_a_bad_image(guest: Guest) -> None:
    a = noise(30, 40, seed=5)
    rows = b"".join(b"\x00" + a[y].tobytes() for y in range(30))
    with pytest.raises(BadImageError):
        guest.decode_image(png(40, 30, rows, declared_height=60), 1)
    full = png(40, 30, rows)
    with pytest.raises(BadImageError):
        guest.decode_image(full[: int(len(full) * 0.6)], 1)


# --------------------------------------------------------------------------- graphs
def node(op: str, name: str, inputs: list[str], **attrs) -> bytes:
    """One NodeDef as a GraphDef `node` field (graphs concatenate these)."""
    body = encode_node(Node(name, op, inputs, attrs))
    return b"\x0a" + encode_varint(len(body)) + body


def softmax_of(nodes: bytes, name: str) -> bytes:
    """A graph: a Placeholder, the given nodes, and Softmax(name)."""
    placeholder = node(
        "Placeholder", "input", [], dtype=DataType.DT_FLOAT, shape=TensorShape([1, 4])
    )
    return placeholder + nodes + node("Softmax", "prob", [name])


def test_const_bomb_is_refused_not_a_trap(module_path) -> None:
    """60 bytes announce 2^26 floats and send none: under the server's memory limit the
    expansion is a fallible allocation (OutOfMemory), not an abort."""
    pb = softmax_of(raw_const("c", 1, [1 << 26]), "c")
    assert len(pb) < 160
    g = Guest(module_path, memory_limit=160 * MiB)
    err = no_trap(load, g, pb)
    assert isinstance(err, (GuestOutOfMemoryError, BadModelError)), err
    still_works(g)


def test_constants_share_one_budget(module_path) -> None:
    """Five constants of 2^24 floats (one float_val each: a few bytes) are each under the
    per-tensor cap but 320 MiB together, over the model's 256 MiB budget for constants."""
    one = struct.pack("<f", 0.5)
    nodes = b"".join(raw_const(f"c{i}", 1, [1 << 24], b"\x2d" + one) for i in range(5))
    # All five on the output's path (the guest decodes only the constants it needs).
    nodes += node("AddV2", "s1", ["c0", "c1"])
    nodes += b"".join(node("AddV2", f"s{i}", [f"s{i - 1}", f"c{i}"]) for i in range(2, 5))
    pb = softmax_of(nodes, "s4")
    g = Guest(module_path)  # no store limit: only the budget stands in the way
    with pytest.raises(BadModelError, match="budget"):
        load(g, pb)
    g = Guest(module_path, memory_limit=160 * MiB)
    assert no_trap(load, g, pb) is not None
    still_works(g)


def test_weight_copies_share_the_same_budget(module_path) -> None:
    """One 64 MiB filter (a single float_val) used by four convolutions: each folds and packs
    its own copy, 512 MiB in all. The planner charges them to the budget the constants left;
    under a store limit the copies and the packing fail cleanly (they used to abort)."""
    c = 1 << 12
    nodes = node(
        "Placeholder", "input", [], dtype=DataType.DT_FLOAT, shape=TensorShape([1, 1, 1, c])
    ) + raw_const("w", 1, [1, 1, c, c], b"\x2d" + struct.pack("<f", 1e-3))
    prev = "input"
    for i in range(4):
        nodes += node("Conv2D", f"conv{i}", [prev, "w"], strides=[1, 1, 1, 1], padding="VALID")
        prev = f"conv{i}"
    pb = nodes + node("Softmax", "prob", [prev])
    with pytest.raises(BadModelError, match="budget"):
        load(Guest(module_path), pb)
    for mib in (100, 160, 230):
        g = Guest(module_path, memory_limit=mib * MiB)
        assert isinstance(no_trap(load, g, pb), (BadModelError, GuestOutOfMemoryError))
        still_works(g)


def test_huge_dimensions_of_empty_tensors_are_refused(module_path) -> None:
    """A zero-element constant whose other dimension is huge: its element count is 0, but
    the MatMul's bias of that length was allocated before any size check."""
    g = Guest(module_path, memory_limit=160 * MiB)
    for n in (1 << 30, 1 << 26, (1 << 32) + 5):
        nodes = raw_const("a", 1, [1, 0]) + raw_const("b", 1, [0, n])
        pb = softmax_of(nodes + node("MatMul", "mm", ["a", "b"]), "mm")
        err = no_trap(load, g, pb)
        assert isinstance(err, (BadModelError, GuestOutOfMemoryError)), (n, err)
    still_works(g)


def test_dimensions_of_2_to_the_32_are_refused(guest: Guest) -> None:
    """On wasm32 `as usize` kept the low 32 bits: [1, 2^32+224, 224, 3] loaded as 224x224."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, (1 << 32) + 224, 224, 3])
    m = g.op("Mean", "mean", [x, g.const("axes", np.array([1, 2], np.int32))])
    g.op("Softmax", "prob", [m])
    with pytest.raises(BadModelError, match="dimension"):
        load(guest, g.to_bytes())
    # A Reshape whose known size is 2^32 became a division by 0 (a trap).
    for want in ([1 << 32, -1], [(1 << 32) + 48, 1], [-1, 1 << 33]):
        g = GraphBuilder()
        x = g.placeholder("input", [1, 4, 4, 3])
        r = g.op("Reshape", "r", [x, g.const("shape", np.array(want, np.int64))])
        g.op("Softmax", "prob", [r])
        assert isinstance(no_trap(load, guest, g.to_bytes()), BadModelError), want
    still_works(guest)


def test_identity_chain_loads_in_linear_time(guest: Guest) -> None:
    """The output is followed through Identity nodes after the Softmax: once a reverse scan
    of the graph per link (20,000 links: 4.8 s), now one pass."""

    def chain(n: int) -> bytes:
        g = classifier()
        prev = "prob"
        for i in range(n):
            prev = g.op("Identity", f"id{i}", [prev])
        return g.to_bytes()

    pb = chain(20000)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        guest.call("free_model", load(guest, pb))
        times.append(time.perf_counter() - t)
    # Measured: ~40 ms (4.8 s before); a tenth of the old time leaves room for a busy machine.
    assert min(times) < 0.5, times


def test_constant_data_is_shared_not_copied(module_path) -> None:
    """A big constant read by a step used to be held three times (parsed, copied into the
    plan's value, copied again into the step's constants). Now the parsed copy is shared."""
    n = 4 << 20  # 16 MiB of floats, sent as one float_val
    pb = (
        node("Placeholder", "input", [], dtype=DataType.DT_FLOAT, shape=TensorShape([1, 1]))
        + raw_const("big", 1, [n, 1], b"\x2d" + struct.pack("<f", 0.25))
        + node("AddV2", "add", ["input", "big"])
        + node("Softmax", "prob", ["add"])
    )
    guest = Guest(module_path)
    before = guest.pages * 65536
    h = load(guest, pb)
    grown = guest.pages * 65536 - before
    # The constant once, the Add's and the Softmax's outputs: 3 x 16 MiB (+ slack).
    assert grown < 3.5 * 4 * n, grown / (4 * n)
    ip, op = guest.write_bytes(np.float32([[1.0]]).tobytes()), guest.alloc(4 * n)
    assert guest.call("infer_raw", h, ip, 4, op, 4 * n) == n
    assert np.allclose(guest.read_f32(op, 4), 1.0)


# --------------------------------------------------------------------------- ABI
@pytest.fixture(scope="module")
def tiny_224() -> bytes:
    return classifier(side=224, classes=7).to_bytes()


def test_outputs_overlapping_inputs_are_refused(
    guest: Guest, tiny_224: bytes, small_png: bytes
) -> None:
    """An output inside the input block would be a `&mut [u8]` over the bytes of a live
    `&[u8]`; each entry point refuses it, and accepts the same block's bytes right after
    the input."""
    h = load(guest, tiny_224)
    n = len(small_png)
    decoded = guest.call("decoded_len")
    img = guest.alloc(n + decoded)
    guest.write_into(img, small_png)
    overlapping = {
        "image_size": (img, n, img + n - 4),
        "decode_image": (img, n, 1, img + 4),
        "classify": (h, img, n, 1, img + 8, 3),
    }
    for name, args in overlapping.items():
        with pytest.raises(BadArgumentError, match="overlaps"):
            guest.call(name, *args)
    assert guest.call("image_size", img, n, img + n) == 0
    assert tuple(guest.read_u32(img + n, 2)) == (40, 30)
    assert guest.call("decode_image", img, n, 1, img + n) == 0
    assert guest.call("classify", h, img, n, 1, img + n, 7) == 7
    tlen = 224 * 224 * 3 * 4
    t = guest.alloc(tlen + 28)
    with pytest.raises(BadArgumentError, match="overlaps"):
        guest.call("infer_tensor", h, t, t + tlen - 4)
    with pytest.raises(BadArgumentError, match="overlaps"):
        guest.call("infer_raw", h, t, tlen, t + 8, 28)
    assert guest.call("infer_tensor", h, t, t + tlen) == 7
    assert guest.call("infer_raw", h, t, tlen, t + tlen, 28) == 7


def test_alloc_never_hands_out_an_earlier_requests_bytes(guest: Guest, tiny_224: bytes) -> None:
    """A freed block that held data comes back zeroed; an unwritten tensor is zeros."""
    size = 1 << 20
    p = guest.alloc(size)
    guest.write_into(p, b"\xab" * size)
    guest.dealloc(p, size)
    q = guest.alloc(size)
    assert q == p  # the allocator reused the block: the test is meaningful
    assert guest.read_bytes(q, size) == bytes(size)
    guest.dealloc(q, size)
    h = load(guest, tiny_224)
    tlen = 224 * 224 * 3 * 4
    t = guest.alloc(tlen)
    guest.write_into(t, np.full(tlen // 4, 9.0, np.float32))
    guest.dealloc(t, tlen)
    t, out = guest.alloc(tlen), guest.alloc(28)
    guest.call("infer_tensor", h, t, out)
    unwritten = guest.read_f32(out, 7)
    guest.write_into(t, bytes(tlen))
    guest.call("infer_tensor", h, t, out)
    assert np.array_equal(unwritten, guest.read_f32(out, 7))


def test_model_handles_never_wrap_onto_a_live_model(guest: Guest) -> None:
    first = load(guest, classifier(classes=5).to_bytes())
    assert first == 1
    guest.call("set_next_handle_for_tests", 2**31 - 1)
    last = load(guest, classifier(classes=6).to_bytes())
    assert last == 2**31 - 1
    wrapped = load(guest, classifier(classes=7).to_bytes())
    assert wrapped not in (first, last)
    assert guest.call("model_output_len", first) == 5
    assert guest.call("model_output_len", last) == 6
    assert guest.call("model_output_len", wrapped) == 7


def test_nan_through_simd_clamp_and_scalar_activation_agree(guest: Guest) -> None:
    """Relu6 fused into a depthwise convolution (the SIMD kernel's clamp) and Relu6 on its
    own (the scalar activation) give the same values, NaN and infinities included."""
    c = 16
    x = np.float32([np.nan, -1, 0.5, 7, np.inf, -np.inf, -0.0, 3] * 64).reshape(1, 4, 8, c)

    def run(fused: bool) -> np.ndarray:
        g = GraphBuilder()
        inp = g.placeholder("input", list(x.shape))
        if fused:
            y = g.op(
                "DepthwiseConv2dNative",
                "dw",
                [inp, g.const("w", np.ones((1, 1, c, 1), np.float32))],
                strides=[1, 1, 1, 1],
                padding="VALID",
            )
        else:
            y = inp
        g.op("Relu6", "act", [y])
        h = guest.call("load_model_with_output", *_with_name(guest, g.to_bytes(), "act"))
        ip, op = guest.write_bytes(x.tobytes()), guest.alloc(x.nbytes)
        assert guest.call("infer_raw", h, ip, x.nbytes, op, x.nbytes) == x.size
        return guest.read_f32(op, x.size)

    scalar, simd = run(False), run(True)
    want = np.float32([np.nan, 0, 0.5, 6, 6, 0, 0, 3] * 64)
    np.testing.assert_array_equal(simd, want)
    np.testing.assert_array_equal(scalar, want)


def _with_name(guest: Guest, pb: bytes, name: str) -> tuple[int, int, int, int]:
    return guest.write_bytes(pb), len(pb), guest.write_bytes(name.encode()), len(name)


# --------------------------------------------------------------------------- traps
def test_a_trap_names_its_cause(module_path) -> None:
    """Rust prints why it aborts on stderr; the trap carries that line, not only wasmtime's
    "error while executing at wasm backtrace:"."""
    g = Guest(module_path, memory_limit=32 * MiB)
    with pytest.raises(GuestTrap) as info:
        g.raw_call("abort_on_alloc_for_tests", 64 * MiB)
    trap = info.value
    assert trap.function == "abort_on_alloc_for_tests"
    assert "memory allocation of 67108864 bytes failed" in str(trap)
    assert "error while executing" not in str(trap)
    g.reset()
    with pytest.raises(GuestTrap) as info:
        g.raw_call("trap_for_tests")
    assert "unreachable" in str(info.value)


def test_cleanup_after_a_trap_keeps_the_trap(guest: Guest) -> None:
    """`decode_image` frees its blocks in a `finally`: after a trap that cleanup used to
    raise a trap of its own, reported as `dealloc`."""
    ptr = guest.alloc(64)
    with pytest.raises(GuestTrap) as info:
        try:
            guest.raw_call("trap_for_tests")
        finally:
            guest.dealloc(ptr, 64)
    assert info.value.function == "trap_for_tests"
    with pytest.raises(GuestTrap, match="reset"):
        guest.call("live_allocations")
