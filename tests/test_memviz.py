"""memviz: pure functions on synthetic snapshots, then the article's replays on the real guest."""

from __future__ import annotations

import numpy as np
import pytest

from wasi_lab.models.labels import labels_for
from wasi_lab.models.registry import ensure_model
from wasi_lab.runtime import PAGE_SIZE, Allocation, Guest, LengthMismatchError, MemorySnapshot
from wasi_lab.views import memviz


def snap(
    pages: int,
    heap_base: int = PAGE_SIZE,
    fill: dict[int, bytes] | None = None,
    allocations: list[Allocation] | None = None,
    label: str = "s",
) -> MemorySnapshot:
    data = bytearray(pages * PAGE_SIZE)
    for off, chunk in (fill or {}).items():
        data[off : off + len(chunk)] = chunk
    return MemorySnapshot(bytes(data), pages, heap_base, heap_base - 8, allocations or [], label)


# --------------------------------------------------------------------------- pure functions


def test_hex_dump_layout() -> None:
    data = bytes(range(0x41, 0x41 + 20))
    lines = memviz.hex_dump(data, base=0x1000).splitlines()
    assert len(lines) == 2
    assert lines[0] == (
        " 00001000  41 42 43 44 45 46 47 48 49 4a 4b 4c 4d 4e 4f 50  |ABCDEFGHIJKLMNOP|"
    )
    assert lines[1].startswith(" 00001010  51 52 53 54")
    assert lines[1].endswith("|QRST|")


def test_hex_dump_marks_rows_and_hides_control_bytes() -> None:
    data = b"\x00\x01hi\xff" + bytes(27)
    out = memviz.hex_dump(data, mark=(16, 17)).splitlines()
    assert out[0].startswith(" ") and out[1].startswith("*")
    assert "|..hi." in out[0]


def test_page_regions_blocks_data_heap_and_zero() -> None:
    s = snap(
        6,
        heap_base=PAGE_SIZE + 100,
        fill={3 * PAGE_SIZE + 5: b"guest heap", 0: b"static"},
        allocations=[
            Allocation(2 * PAGE_SIZE, 100, "model"),
            Allocation(4 * PAGE_SIZE + 10, PAGE_SIZE, "image"),
        ],
    )
    assert memviz.page_regions(s) == [
        "data + stack",
        "data + stack",
        "model",
        "heap (guest)",
        "image",
        "image",
    ]
    assert memviz.page_regions(s).count("image") == 2
    nonzero = memviz.page_nonzero_fraction(s)
    assert nonzero[5] == 0 and nonzero[3] > 0


def test_untouched_and_freed_regions() -> None:
    s = snap(3, allocations=[Allocation(PAGE_SIZE, 10, "model (freed)")])
    assert memviz.page_regions(s) == ["data + stack", "freed block", "untouched (zero)"]


def test_page_entropy_bounds() -> None:
    rng = np.random.default_rng(0)
    s = snap(
        3,
        fill={
            PAGE_SIZE: rng.integers(0, 256, PAGE_SIZE, dtype=np.uint8).tobytes(),
            2 * PAGE_SIZE: b"\x07" * PAGE_SIZE,
        },
    )
    ent = memviz.page_entropy(s)
    assert ent[0] == 0.0 and ent[2] == 0.0
    assert 7.9 < ent[1] <= 8.0


def test_diff_snapshots_ranges_pages_and_growth() -> None:
    a = snap(2, label="a")
    b = snap(3, fill={10: b"xy", 40: b"z", 2 * PAGE_SIZE + 1: b"new"}, label="b")
    d = memviz.diff_snapshots(a, b, merge_gap=4)
    assert d.ranges == [(10, 12), (40, 41), (2 * PAGE_SIZE + 1, 2 * PAGE_SIZE + 4)]
    assert d.changed_pages == [0, 2]
    assert d.grown_pages == 1 and d.changed_bytes == 6
    assert "memory.grow by 1" in d.summary()
    merged = memviz.diff_snapshots(a, b, merge_gap=64)
    assert merged.ranges[0] == (10, 41)
    assert memviz.diff_snapshots(a, a).ranges == []


def test_page_hex_and_hex_diff() -> None:
    a = snap(2, label="before")
    b = snap(2, fill={PAGE_SIZE + 0x20: b"hello"}, label="after")
    assert "|hello" in memviz.page_hex(b, 1, 64)
    with pytest.raises(IndexError):
        memviz.page_hex(b, 2)
    text = memviz.hex_diff(a, b, 1)
    assert text.startswith("--- before") and "+++ after" in text and "hello" in text
    assert "identical" in memviz.hex_diff(a, b, 0)


def test_unchecked_read_range() -> None:
    assert memviz.unchecked_read_range(0x1000, 10, 500) == (0x1000, 0x1000 + 500)


def test_page_map_figure_legend_and_highlight_past_memory() -> None:
    s = snap(4, allocations=[Allocation(2 * PAGE_SIZE, 5, "image")])
    fig = memviz.page_map_figure(s, highlight=(2 * PAGE_SIZE, 6 * PAGE_SIZE))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("image (1)") for t in labels)
    assert any("beyond the end of memory (2 pages)" in t for t in labels)
    fig2 = memviz.page_map_figure(s, color_by="entropy")
    assert len(fig2.axes) == 2  # map + colour bar
    with pytest.raises(ValueError):
        memviz.page_map_figure(s, color_by="nope")


# --------------------------------------------------------------------------- the real guest


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return ensure_model("efficientnet-lite0", progress=False).read_bytes()


@pytest.fixture(scope="module")
def replay(model_bytes: bytes, grace_hopper_bytes: bytes) -> memviz.StageReplay:
    return memviz.replay_article_stages(Guest(), model_bytes, grace_hopper_bytes)


def test_replay_stages_show_the_article_flow(
    replay: memviz.StageReplay, model_bytes: bytes, grace_hopper_bytes: bytes
) -> None:
    snaps = replay.snapshots
    assert [s.label for s in snaps] == list(memviz.ARTICLE_STAGES)
    pages = [s.pages for s in snaps]
    assert pages == sorted(pages), "linear memory never shrinks"
    assert pages[1] > pages[0], "alloc(model) grows memory"
    assert pages[5] > pages[4], "inference grows memory (memory.grow)"
    m, n = replay.model_ptr, replay.model_len
    block = np.frombuffer(snaps[1].data[m : m + n], np.uint8)
    # fresh pages from memory.grow are zero; only allocator bookkeeping may show through
    assert np.count_nonzero(block) < 256, "alloc(model) should not fill the block"
    assert snaps[2].data[m : m + n] == model_bytes
    i, k = replay.img_ptr, replay.img_len
    assert snaps[4].data[i : i + k] == grace_hopper_bytes
    assert m >= snaps[0].heap_base and i >= m + n
    # infer_from_ptrs took ownership and freed both blocks
    assert replay.live_blocks_after == 0
    assert {a.label for a in snaps[5].allocations} == {"model (freed)", "image (freed)"}
    assert labels_for(1000)[replay.class_index - 1] == "military uniform"


def test_replay_regions_and_diffs(replay: memviz.StageReplay) -> None:
    s = replay.snapshots
    model_pages = memviz.page_regions(s[2]).count("model")
    assert model_pages >= replay.model_len // PAGE_SIZE
    assert "image" in memviz.page_regions(s[4])
    assert memviz.diff_snapshots(s[0], s[1]).changed_bytes < 4096  # alloc barely writes
    d = memviz.diff_snapshots(s[1], s[2])
    first = replay.model_ptr // PAGE_SIZE
    last = (replay.model_ptr + replay.model_len - 1) // PAGE_SIZE
    assert set(range(first + 1, last)) <= set(d.changed_pages)
    assert memviz.diff_snapshots(s[4], s[5]).grown_pages > 0


def test_node_bug_replay_is_refused(model_bytes: bytes, grace_hopper_bytes: bytes) -> None:
    guest = Guest()
    bug = memviz.replay_node_bug(guest, model_bytes, grace_hopper_bytes)
    assert isinstance(bug.error, LengthMismatchError)
    assert str(len(model_bytes)) in bug.error.message
    assert bug.read_range == (bug.img_ptr, bug.img_ptr + len(model_bytes))
    assert bug.overread == len(model_bytes) - len(grace_hopper_bytes)
    assert bug.past_end_of_memory > 0  # the image is the last block: the read leaves memory
    assert "refused: LengthMismatchError" in bug.explain()
    assert guest.call("live_allocations") == 0, "both blocks were given back"
    labels = [t.get_text() for t in memviz.node_bug_figure(bug).axes[0].get_legend().get_texts()]
    assert any(t.startswith("read range") for t in labels)


# --------------------------------------------------------------------------- page-map labels
# Which page gets which label, pinned page by page: a block on the page wins (the block with
# the most bytes there), then "below __heap_base", then non-zero vs zero.


def pages_of(ptr: int, length: int) -> range:
    return range(ptr // PAGE_SIZE, (ptr + length - 1) // PAGE_SIZE + 1)


def test_page_labels_at_every_article_stage(replay: memviz.StageReplay) -> None:
    s = replay.snapshots
    heap_base = s[0].heap_base
    model = pages_of(replay.model_ptr, replay.model_len)
    image = pages_of(replay.img_ptr, replay.img_len)
    data = ["data + stack"] * model.start
    assert all(p * PAGE_SIZE < heap_base for p in range(model.start))

    # fresh instance: every page starts below __heap_base (the last one holds it)
    assert s[0].pages == -(-heap_base // PAGE_SIZE)
    assert memviz.page_regions(s[0]) == ["data + stack"] * s[0].pages

    # alloc(model) and model written: the model's first page also holds __heap_base (static
    # data ends there), and the block wins it; memory ends with the block
    assert model.start * PAGE_SIZE < heap_base, "the model is the first block on the heap"
    only_model = data + ["model"] * len(model)
    for st in (s[1], s[2]):
        assert st.pages == model.stop
        assert memviz.page_regions(st) == only_model

    # alloc(image) and image written: the image starts on the model's last page; that shared
    # page goes to whichever block has more bytes on it
    shared = model[-1]
    assert image.start == shared, "the image block follows the model block on its last page"
    model_bytes = replay.model_ptr + replay.model_len - shared * PAGE_SIZE
    image_bytes = (shared + 1) * PAGE_SIZE - replay.img_ptr
    winner = "model" if model_bytes >= image_bytes else "image"
    both = data + ["model"] * (len(model) - 1) + [winner] + ["image"] * (len(image) - 1)
    assert winner == "model"  # 43 KiB of model against 22 KiB of image in today's layout
    for st in (s[3], s[4]):
        assert st.pages == image.stop
        assert memviz.page_regions(st) == both

    # after inference: both blocks freed (kept on the map), the guest's weights and
    # activations above them are its own heap
    regions = memviz.page_regions(s[5])
    assert regions[: image.stop] == data + ["freed block"] * (image.stop - model.start)
    nonzero = memviz.page_nonzero_fraction(s[5]) > 0
    rest = ["heap (guest)" if nz else "untouched (zero)" for nz in nonzero[image.stop :]]
    assert regions[image.stop :] == rest
    assert rest.count("heap (guest)") > 0.9 * len(rest) > 500


def test_a_shared_page_goes_to_the_block_with_more_bytes_on_it() -> None:
    # page 1: 0x4000 bytes of model, 0xC000 of image -> image; page 3: model 0xC000, image
    # 0x4000 -> model (whatever the order of the blocks in the list)
    blocks = [
        Allocation(PAGE_SIZE + 0x4000, PAGE_SIZE, "image"),
        Allocation(0, PAGE_SIZE + 0x4000, "model"),
        Allocation(2 * PAGE_SIZE, PAGE_SIZE + 0xC000, "model"),
        Allocation(3 * PAGE_SIZE + 0xC000, 0x4000, "image"),
    ]
    for order in (blocks, blocks[::-1]):
        s = snap(5, heap_base=0, allocations=order)
        assert memviz.page_regions(s) == ["model", "image", "model", "model", "untouched (zero)"]


def test_heap_base_page_blocks_and_other_labels() -> None:
    # __heap_base in the middle of page 1: page 1 is still data + stack; page 2 starts at
    # a page boundary above it, so it is heap (non-zero) or untouched (zero)
    s = snap(
        6,
        heap_base=PAGE_SIZE + 1,
        fill={2 * PAGE_SIZE + 7: b"x"},
        allocations=[
            Allocation(4 * PAGE_SIZE, 0, "model"),  # empty: owns nothing
            Allocation(5 * PAGE_SIZE + 1, 10, "output"),
        ],
    )
    assert memviz.page_regions(s) == [
        "data + stack",
        "data + stack",
        "heap (guest)",
        "untouched (zero)",
        "untouched (zero)",
        "other block",
    ]
    exact = snap(2, heap_base=PAGE_SIZE, fill={PAGE_SIZE: b"y"})
    assert memviz.page_regions(exact) == ["data + stack", "heap (guest)"]
    # a block below __heap_base still wins its page; "freed" beats the block's kind
    low = snap(3, heap_base=2 * PAGE_SIZE, allocations=[Allocation(PAGE_SIZE, 8, "image (freed)")])
    assert memviz.page_regions(low) == ["data + stack", "freed block", "untouched (zero)"]


def test_a_block_past_the_end_of_memory_labels_only_the_pages_that_exist() -> None:
    s = snap(
        3, heap_base=PAGE_SIZE, allocations=[Allocation(2 * PAGE_SIZE, 5 * PAGE_SIZE, "image")]
    )
    assert memviz.page_regions(s) == ["data + stack", "untouched (zero)", "image"]
