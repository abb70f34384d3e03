"""See linear memory: which 64 KiB page holds what, what changed, and what a bad length reads.

Everything here is a pure function of `MemorySnapshot`s (plain copies of the guest's memory
plus the host's record of its blocks), so the notebook, the widgets and the tests all look
at the same numbers. Only `replay_article_stages` and `replay_node_bug` touch a live guest:
they drive it through the article's sequence and take the snapshots.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from wasi_lab.runtime import (
    PAGE_SIZE,
    Allocation,
    Guest,
    GuestError,
    LengthMismatchError,
    MemorySnapshot,
)

#: Region names in legend order, with colours that stay distinct on a projector.
REGIONS: tuple[str, ...] = (
    "data + stack",
    "heap (guest)",
    "model",
    "image",
    "other block",
    "freed block",
    "untouched (zero)",
    "beyond memory",
)
REGION_COLOURS: dict[str, str] = {
    "data + stack": "#4c72b0",
    "heap (guest)": "#dd8452",
    "model": "#55a868",
    "image": "#c44e52",
    "other block": "#8172b3",
    "freed block": "#b8e0b9",
    "untouched (zero)": "#e8e8e8",
    "beyond memory": "#ffffff",
}
#: Stage labels of the article's flow, in order (notebook 03 steps through them).
ARTICLE_STAGES: tuple[str, ...] = (
    "fresh instance",
    "alloc(model)",
    "model written",
    "alloc(image)",
    "image written",
    "after inference",
)


# --------------------------------------------------------------------------- classification


def page_count(snap: MemorySnapshot) -> int:
    return len(snap.data) // PAGE_SIZE


def _memo(snap: MemorySnapshot, name: str, compute):
    """Per-snapshot memo: the stage stepper, the inspector and the figures ask for the same
    regions and entropies of a 90 MB snapshot a dozen times. Keyed on the bytes object and
    the block list, so a snapshot whose blocks are edited (as the replay does) is recomputed.
    """
    key = (
        name,
        id(snap.data),
        len(snap.data),
        snap.heap_base,
        tuple((a.ptr, a.length, a.label) for a in snap.allocations),
    )
    memo = snap.__dict__.setdefault("_memviz_memo", {})
    hit = memo.get(key)
    if hit is None or hit[0] is not snap.data:  # the same id for new bytes is no hit
        hit = memo[key] = (snap.data, compute())
    return hit[1]


def _block_region(label: str) -> str:
    text = label.lower()
    if "freed" in text:
        return "freed block"
    if "model" in text:
        return "model"
    if "image" in text:
        return "image"
    return "other block"


def page_regions(snap: MemorySnapshot) -> list[str]:
    """One region name per page (see `_page_regions`), computed once per snapshot."""
    return list(_memo(snap, "regions", lambda: _page_regions(snap)))


def _page_regions(snap: MemorySnapshot) -> list[str]:
    """One region name per page.

    A page that overlaps a host-known block takes that block's region (the block with the
    largest overlap wins); otherwise pages below `__heap_base` are static data and the
    shadow stack, non-zero pages above it are the guest's own heap, and all-zero pages above
    it have never been touched.
    """
    n = page_count(snap)
    overlap = np.zeros((n, len(REGIONS)), dtype=np.int64)
    index = {r: i for i, r in enumerate(REGIONS)}
    for a in snap.allocations:
        if a.length <= 0:
            continue
        col = index[_block_region(a.label)]
        first, last = a.ptr // PAGE_SIZE, (a.ptr + a.length - 1) // PAGE_SIZE
        for p in range(first, min(last, n - 1) + 1):
            lo = max(a.ptr, p * PAGE_SIZE)
            hi = min(a.ptr + a.length, (p + 1) * PAGE_SIZE)
            overlap[p, col] += max(0, hi - lo)
    nonzero = page_nonzero_fraction(snap) > 0
    regions: list[str] = []
    for p in range(n):
        if overlap[p].any():
            regions.append(REGIONS[int(overlap[p].argmax())])
        elif (p + 1) * PAGE_SIZE <= snap.heap_base or p * PAGE_SIZE < snap.heap_base:
            regions.append("data + stack")
        elif nonzero[p]:
            regions.append("heap (guest)")
        else:
            regions.append("untouched (zero)")
    return regions


def _pages(snap: MemorySnapshot) -> np.ndarray:
    n = page_count(snap)
    return np.frombuffer(snap.data, dtype=np.uint8, count=n * PAGE_SIZE).reshape(n, PAGE_SIZE)


def page_nonzero_fraction(snap: MemorySnapshot) -> np.ndarray:
    """Fraction of non-zero bytes in each page (0 = never written, or written with zeros)."""
    return _memo(snap, "nonzero", lambda: np.count_nonzero(_pages(snap), axis=1) / PAGE_SIZE).copy()


def page_entropy(snap: MemorySnapshot) -> np.ndarray:
    """Shannon entropy of each page's bytes, in bits per byte (0 = constant, 8 = random).

    Compressed data (the JPEG, the float weights' mantissas) sits near 8; code-like tables
    and text lower; zero pages at 0. A cheap way to *see* content without decoding it.
    """
    return _memo(snap, "entropy", lambda: _page_entropy(snap)).copy()


def _page_entropy(snap: MemorySnapshot) -> np.ndarray:
    pages = _pages(snap)
    out = np.zeros(len(pages))
    for i, page in enumerate(pages):
        counts = np.bincount(page, minlength=256)
        p = counts[counts > 0] / PAGE_SIZE
        out[i] = float(-(p * np.log2(p)).sum())
    return out


# --------------------------------------------------------------------------- diffs


@dataclass
class SnapshotDiff:
    """What changed between two snapshots: byte ranges, pages, and growth."""

    before: str
    after: str
    ranges: list[tuple[int, int]]  # [start, end) byte ranges that differ
    changed_pages: list[int]
    pages_before: int
    pages_after: int

    @property
    def grown_pages(self) -> int:
        return self.pages_after - self.pages_before

    @property
    def changed_bytes(self) -> int:
        return sum(e - s for s, e in self.ranges)

    def summary(self) -> str:
        return (
            f"{self.before!r} -> {self.after!r}: {self.changed_bytes:,} bytes changed in "
            f"{len(self.ranges):,} ranges on {len(self.changed_pages)} pages; memory "
            f"{self.pages_before} -> {self.pages_after} pages "
            f"(memory.grow by {self.grown_pages})"
        )


def changed_mask(a: MemorySnapshot, b: MemorySnapshot) -> np.ndarray:
    """One bool per byte of the larger snapshot: True where `b` differs from `a`.

    Memory only grows and fresh pages are zero, so a byte that exists only in the larger
    snapshot counts as changed when it is non-zero.
    """
    x = np.frombuffer(a.data, dtype=np.uint8)
    y = np.frombuffer(b.data, dtype=np.uint8)
    common = min(len(x), len(y))
    mask = np.empty(max(len(x), len(y)), dtype=bool)
    np.not_equal(x[:common], y[:common], out=mask[:common])
    rest = x[common:] if len(x) > len(y) else y[common:]
    np.not_equal(rest, 0, out=mask[common:])
    return mask


def diff_snapshots(a: MemorySnapshot, b: MemorySnapshot, merge_gap: int = 16) -> SnapshotDiff:
    """Changed byte ranges from `a` to `b` (memory only grows: new bytes count as changed
    when non-zero, since fresh pages are zero). Ranges closer than `merge_gap` are merged.

    Works on run boundaries, not on the changed bytes one by one: after inference some
    69 million bytes differ, and listing their indices took 8 s and half a gigabyte.
    """
    mask = changed_mask(a, b)
    edges = np.flatnonzero(np.diff(mask.view(np.int8), prepend=np.int8(0), append=np.int8(0)))
    starts, ends = edges[0::2], edges[1::2]  # runs of changed bytes: [start, end)
    ranges: list[tuple[int, int]] = []
    if starts.size:
        # merge when the next run starts at most merge_gap bytes after the last changed byte
        split = np.flatnonzero(starts[1:] - (ends[:-1] - 1) > merge_gap)
        merged_starts = np.concatenate(([starts[0]], starts[1:][split]))
        merged_ends = np.concatenate((ends[:-1][split], [ends[-1]]))
        ranges = [(int(s), int(e)) for s, e in zip(merged_starts, merged_ends, strict=True)]
    pad = (-len(mask)) % PAGE_SIZE
    per_page = np.concatenate((mask, np.zeros(pad, dtype=bool))).reshape(-1, PAGE_SIZE)
    pages = np.flatnonzero(per_page.any(axis=1)).tolist()
    return SnapshotDiff(a.label, b.label, ranges, pages, a.pages, b.pages)


def changed_offsets(a: MemorySnapshot, b: MemorySnapshot, start: int, length: int) -> np.ndarray:
    """Offsets (from `start`) of the bytes of `[start, start + length)` that differ.

    Notebook 03 asks it of the image block and the model block between *image written* and
    *after inference*: freeing a block does not clear it, and the allocator's free-list
    links land in the first bytes of the merged free chunk (the model's), not in the image.
    """

    def window(s: MemorySnapshot) -> np.ndarray:
        out = np.zeros(length, np.uint8)
        part = np.frombuffer(s.data[start : start + length], np.uint8)
        out[: len(part)] = part
        return out

    return np.flatnonzero(window(a) != window(b))


def blocks_on_page(snap: MemorySnapshot, page: int) -> list[tuple[Allocation, int, int]]:
    """The host-known blocks that overlap `page`, each with the `[lo, hi)` addresses it
    covers there. A page often holds the end of one block and the start of the next (the
    image starts in the model's last page), so one region name per page is not the whole
    story."""
    lo, hi = page * PAGE_SIZE, (page + 1) * PAGE_SIZE
    out = []
    for a in snap.allocations:
        s, e = max(a.ptr, lo), min(a.ptr + a.length, hi)
        if s < e:
            out.append((a, s, e))
    return out


# --------------------------------------------------------------------------- hex dump


def hex_dump(
    data: bytes,
    offset: int = 0,
    length: int = 256,
    width: int = 16,
    base: int = 0,
    mark: tuple[int, int] | None = None,
) -> str:
    """Classic `offset  hex  |ascii|` lines for `length` bytes of `data` starting at `offset`.

    `base` is added to the printed offsets (the address of `data[0]` in linear memory);
    rows overlapping `mark` (a [start, end) address range) get a `*` in the margin.
    """
    chunk = data[offset : offset + length]
    lines = []
    for row in range(0, len(chunk), width):
        part = chunk[row : row + width]
        addr = base + offset + row
        hexes = " ".join(f"{b:02x}" for b in part).ljust(width * 3 - 1)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in part)
        flag = "*" if mark and addr < mark[1] and addr + len(part) > mark[0] else " "
        lines.append(f"{flag}{addr:08x}  {hexes}  |{text}|")
    return "\n".join(lines)


def page_hex(snap: MemorySnapshot, page: int, length: int = 256, offset: int = 0) -> str:
    """Hex dump of the first `length` bytes (from `offset`) of one page."""
    if not 0 <= page < page_count(snap):
        raise IndexError(f"page {page} is outside memory ({page_count(snap)} pages)")
    start = page * PAGE_SIZE + offset
    return hex_dump(snap.data, start, min(length, PAGE_SIZE - offset))


def first_change_in_page(a: MemorySnapshot, b: MemorySnapshot, page: int) -> int | None:
    """Offset inside `page` of the first byte that differs between `a` and `b`."""
    lo, hi = page * PAGE_SIZE, (page + 1) * PAGE_SIZE
    x = np.zeros(PAGE_SIZE, np.uint8)
    y = np.zeros(PAGE_SIZE, np.uint8)
    xa = np.frombuffer(a.data[lo:hi], np.uint8)
    yb = np.frombuffer(b.data[lo:hi], np.uint8)
    x[: len(xa)] = xa
    y[: len(yb)] = yb
    idx = np.flatnonzero(x != y)
    return int(idx[0]) if idx.size else None


def hex_diff(a: MemorySnapshot, b: MemorySnapshot, page: int, length: int = 128) -> str:
    """The same window of one page in both snapshots, starting at the first changed row."""
    first = first_change_in_page(a, b, page)
    if first is None:
        return f"page {page}: identical in {a.label!r} and {b.label!r}"
    start = (first // 16) * 16
    length = min(length, PAGE_SIZE - start)

    def dump(s: MemorySnapshot) -> str:
        if (page + 1) * PAGE_SIZE > len(s.data):
            return "  (page not yet allocated: memory had not grown this far)"
        return hex_dump(s.data, page * PAGE_SIZE + start, length)

    return f"--- {a.label}\n{dump(a)}\n+++ {b.label}\n{dump(b)}"


# --------------------------------------------------------------------------- figures


def _grid(n: int, cols: int) -> tuple[int, int]:
    return (n + cols - 1) // cols, cols


def page_map_figure(
    snap: MemorySnapshot,
    color_by: str = "region",
    cols: int | None = None,
    highlight: tuple[int, int] | None = None,
    changed_pages: Sequence[int] = (),
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """One square per 64 KiB page, row by row from address 0.

    `color_by="region"` colours by what the page holds; `"entropy"` by bits/byte.
    `highlight` is an address range drawn as hatched outlines over the pages it touches
    (used for the Node-bug read); when it runs past the end of memory the map is extended
    with white "beyond memory" cells. `changed_pages` get a black dot.
    """
    n = page_count(snap)
    shown = n
    if highlight is not None:
        shown = max(n, (highlight[1] + PAGE_SIZE - 1) // PAGE_SIZE)
    cols = cols or (32 if shown <= 640 else 64)
    rows, cols = _grid(shown, cols)
    cell = 8.5 / cols
    figsize = figsize or (12, max(2.6, cell * rows + 1.4))
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    if color_by == "region":
        regions = page_regions(snap) + ["beyond memory"] * (shown - n)
        codes = np.full(rows * cols, np.nan)
        codes[:shown] = [REGIONS.index(r) for r in regions]
        cmap = ListedColormap([REGION_COLOURS[r] for r in REGIONS])
        ax.imshow(
            codes.reshape(rows, cols),
            cmap=cmap,
            vmin=-0.5,
            vmax=len(REGIONS) - 0.5,
            aspect="equal",
            interpolation="nearest",
        )
        present = [r for r in REGIONS if r in regions]
        handles = [
            Patch(facecolor=REGION_COLOURS[r], edgecolor="grey", label=f"{r} ({regions.count(r)})")
            for r in present
        ]
    elif color_by == "entropy":
        ent = np.full(rows * cols, np.nan)
        ent[:n] = page_entropy(snap)
        im = ax.imshow(
            ent.reshape(rows, cols),
            cmap="viridis",
            vmin=0,
            vmax=8,
            aspect="equal",
            interpolation="nearest",
        )
        fig.colorbar(im, ax=ax, label="byte entropy (bits/byte)", shrink=0.8)
        handles = []
    else:
        raise ValueError(f"color_by must be 'region' or 'entropy', not {color_by!r}")
    dots = [p for p in changed_pages if p < n]
    if dots:  # one call for all dots: a plot() per page took seconds for a thousand pages
        ax.plot(
            [p % cols for p in dots],
            [p // cols for p in dots],
            "o",
            color="black",
            markersize=3,
            linestyle="",
        )
    if len(changed_pages):
        handles.append(
            plt.Line2D(
                [],
                [],
                marker="o",
                color="black",
                linestyle="",
                markersize=4,
                label="changed since previous stage",
            )
        )
    if highlight is not None:
        lo, hi = highlight
        for p in range(lo // PAGE_SIZE, (max(hi, lo + 1) - 1) // PAGE_SIZE + 1):
            r, c = divmod(p, cols)
            ax.add_patch(
                Rectangle(
                    (c - 0.5, r - 0.5),
                    1,
                    1,
                    fill=False,
                    edgecolor="black" if p < n else "#c44e52",
                    linewidth=1.2,
                    hatch="///",
                )
            )
        handles.append(
            Patch(
                facecolor="none",
                edgecolor="black",
                hatch="///",
                label=f"read range the call claims {lo:#x}..{hi:#x}",
            )
        )
        if shown > n:
            handles.append(
                Patch(
                    facecolor="white",
                    edgecolor="#c44e52",
                    hatch="///",
                    label=f"beyond the end of memory ({shown - n} pages)",
                )
            )
    ax.set_xticks(range(0, cols, 4))
    step = max(1, rows // 12)
    labelled = range(0, rows, step)  # only the labelled rows get a tick: text is what costs
    ax.set_yticks(list(labelled))
    ax.set_yticklabels([f"{r * cols * PAGE_SIZE // 2**20} MiB" for r in labelled])
    ax.set_xlabel(f"page within row ({cols} pages x 64 KiB = {cols * 64 // 1024} MiB per row)")
    label = snap.label or "memory"
    ax.set_title(
        title
        or f"{label}: {n} pages = {n * PAGE_SIZE / 2**20:.1f} MiB"
        f"  (__heap_base = {snap.heap_base:#x})",
        fontsize=13,
    )
    if handles:
        ax.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=10, frameon=False
        )
    return fig


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def page_map_png(
    snap: MemorySnapshot,
    color_by: str = "region",
    changed_pages: Sequence[int] = (),
    cols: int | None = None,
    width: int = 900,
) -> bytes:
    """The page map of `page_map_figure` drawn straight into pixels: the same squares,
    colours and dots, in tens of milliseconds instead of a second of matplotlib, so the
    stage stepper can draw every stage ahead. Row labels (MiB) on the left, page numbers
    within the row below; the legend is the widget's (`page_map_legend_html`)."""
    from PIL import Image, ImageDraw, ImageFont

    n = page_count(snap)
    cols = cols or (32 if n <= 640 else 64)
    rows = max(1, (n + cols - 1) // cols)
    cell = max(6, (width - 70) // cols)
    left, top, bottom = 62, 6, 24
    img = Image.new("RGB", (left + cols * cell + 8, top + rows * cell + bottom), "white")
    grid = np.full((rows * cols, 3), 255, np.uint8)
    if color_by == "region":
        palette = np.array([_rgb(REGION_COLOURS[r]) for r in REGIONS], np.uint8)
        grid[:n] = palette[[REGIONS.index(r) for r in page_regions(snap)]]
    elif color_by == "entropy":
        from matplotlib import colormaps

        grid[:n] = (colormaps["viridis"](page_entropy(snap) / 8)[:, :3] * 255).astype(np.uint8)
    else:
        raise ValueError(f"color_by must be 'region' or 'entropy', not {color_by!r}")
    cells = np.repeat(np.repeat(grid.reshape(rows, cols, 3), cell, 0), cell, 1)
    if cell >= 8:  # a hairline between pages keeps single pages countable
        cells[cell - 1 :: cell, :, :] = (cells[cell - 1 :: cell, :, :] * 0.85).astype(np.uint8)
        cells[:, cell - 1 :: cell, :] = (cells[:, cell - 1 :: cell, :] * 0.85).astype(np.uint8)
    beyond = np.arange(rows * cols) >= n  # cells past the end of memory: plain white
    if beyond.any():
        mask = np.repeat(np.repeat(beyond.reshape(rows, cols), cell, 0), cell, 1)
        cells[mask] = 255
    img.paste(Image.fromarray(cells), (left, top))
    draw = ImageDraw.Draw(img)
    r = max(2, cell // 5)
    for p in changed_pages:
        if p < n:
            cx = left + (p % cols) * cell + cell // 2
            cy = top + (p // cols) * cell + cell // 2
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill="black")
    font = ImageFont.load_default(size=12)
    step = max(1, rows // 12)
    for row in range(0, rows, step):
        text = f"{row * cols * PAGE_SIZE // 2**20} MiB"
        y = top + row * cell + cell // 2
        draw.text((left - 6, y), text, fill="black", font=font, anchor="rm")
    for c in range(0, cols, 4):
        draw.text(
            (left + c * cell + cell // 2, top + rows * cell + 4),
            str(c),
            fill="black",
            font=font,
            anchor="mt",
        )
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def page_map_legend_html(
    snap: MemorySnapshot, color_by: str = "region", changed_pages: Sequence[int] = ()
) -> str:
    """The legend of `page_map_png` as HTML: swatches with page counts, as the figure's."""
    n = page_count(snap)
    cols = 32 if n <= 640 else 64
    items = []
    if color_by == "region":
        regions = page_regions(snap)
        for r in REGIONS:
            if r in regions:
                items.append(
                    f"<span style='display:inline-block; width:12px; height:12px; "
                    f"background:{REGION_COLOURS[r]}; border:1px solid grey; "
                    f"vertical-align:middle'></span> {r} ({regions.count(r)})"
                )
    else:
        items.append(
            "entropy 0 <span style='display:inline-block; width:120px; height:12px;"
            " vertical-align:middle; background:linear-gradient(to right, #440154,"
            " #3b528b, #21918c, #5ec962, #fde725)'></span> 8 bits/byte"
        )
    if len(changed_pages):
        items.append("<b>&#9679;</b> changed since previous stage")
    items.append(f"one square = one 64 KiB page; {cols} pages ({cols * 64 // 1024} MiB) per row")
    return " &nbsp; ".join(items)


def stage_sizes_figure(snaps: Sequence[MemorySnapshot]) -> Figure:
    """Stacked pages per region for each stage: `memory.grow` made visible."""
    fig, ax = plt.subplots(figsize=(11, 4.2), layout="constrained")
    counts = np.array([[page_regions(s).count(r) for r in REGIONS] for s in snaps])
    bottom = np.zeros(len(snaps))
    for j, r in enumerate(REGIONS):
        ax.bar(
            range(len(snaps)),
            counts[:, j],
            bottom=bottom,
            color=REGION_COLOURS[r],
            edgecolor="grey",
            label=r,
        )
        bottom += counts[:, j]
    ax.set_xticks(range(len(snaps)))
    ax.set_xticklabels([s.label for s in snaps], rotation=15)
    ax.set_ylabel("64 KiB pages")
    ax.set_title("Linear memory per stage: it only grows, the blocks come and go", fontsize=13)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return fig


# --------------------------------------------------------------------------- replays


def _infer_from_ptrs(
    guest: Guest, model_ptr: int, model_len: int, img_ptr: int, img_len: int
) -> int:
    if not guest.has_export("infer_from_ptrs"):
        raise RuntimeError(
            "this guest module does not export infer_from_ptrs; rebuild it "
            "(`wasi-lab build --update-prebuilt`)"
        )
    return guest.call("infer_from_ptrs", model_ptr, model_len, img_ptr, img_len)


@dataclass
class StageReplay:
    """The article's flow, one snapshot per stage, and the class the guest predicted."""

    snapshots: list[MemorySnapshot]
    model_ptr: int
    model_len: int
    img_ptr: int
    img_len: int
    class_index: int  # 1-based, as the article's infer_from_ptrs returns it
    live_blocks_after: int
    notes: list[str] = field(default_factory=list)


def replay_article_stages(guest: Guest, model_bytes: bytes, image_bytes: bytes) -> StageReplay:
    """Run `alloc` / copy / `alloc` / copy / `infer_from_ptrs` and snapshot after each step.

    Returns the six snapshots of `ARTICLE_STAGES`. `infer_from_ptrs` takes ownership of both
    blocks and frees them, so the last snapshot no longer lists them (their bytes stay in
    memory until something reuses the space: freeing does not zero).
    """
    guest.reset()
    snaps = [guest.snapshot(ARTICLE_STAGES[0])]
    mptr = guest.alloc(len(model_bytes), "model")
    snaps.append(guest.snapshot(ARTICLE_STAGES[1]))
    guest.write_into(mptr, model_bytes)
    snaps.append(guest.snapshot(ARTICLE_STAGES[2]))
    iptr = guest.alloc(len(image_bytes), "image")
    snaps.append(guest.snapshot(ARTICLE_STAGES[3]))
    guest.write_into(iptr, image_bytes)
    snaps.append(guest.snapshot(ARTICLE_STAGES[4]))
    cls = _infer_from_ptrs(guest, mptr, len(model_bytes), iptr, len(image_bytes))
    guest.forget(mptr, iptr)
    last = guest.snapshot(ARTICLE_STAGES[5])
    # The guest freed both blocks; keep them on the map, marked as freed, to show where
    # they were (the allocator may already have reused part of that space).
    last.allocations = sorted(
        [
            *last.allocations,
            Allocation(mptr, len(model_bytes), "model (freed)"),
            Allocation(iptr, len(image_bytes), "image (freed)"),
        ],
        key=lambda a: a.ptr,
    )
    snaps.append(last)
    live = guest.call("live_allocations")
    return StageReplay(snaps, mptr, len(model_bytes), iptr, len(image_bytes), cls, live)


def unchecked_read_range(img_ptr: int, img_len: int, model_len: int) -> tuple[int, int]:
    """The bytes an unchecked `from_raw_parts(img_ptr, model_len)` would treat as the image.

    The article's Node host passes `model_bytes.length` as the image length; the guest would
    read `[img_ptr, img_ptr + model_len)`, i.e. `model_len - img_len` bytes past the image
    block (heap it does not own, or beyond the end of memory).
    """
    return img_ptr, img_ptr + model_len


@dataclass
class NodeBugReplay:
    """The article's Node call against the checked ABI: what the guest said, what it
    would have read, and the memory at that moment."""

    error: GuestError | None
    img_ptr: int
    img_len: int
    model_len: int
    read_range: tuple[int, int]
    memory_size: int
    snapshot: MemorySnapshot

    @property
    def overread(self) -> int:
        """Bytes past the end of the image block."""
        return self.read_range[1] - (self.img_ptr + self.img_len)

    @property
    def past_end_of_memory(self) -> int:
        """Bytes of the read that lie beyond linear memory (0 when it fits)."""
        return max(0, self.read_range[1] - self.memory_size)

    def explain(self) -> str:
        lo, hi = self.read_range
        lines = [
            f"image block: {self.img_len:,} bytes at {self.img_ptr:#x}",
            f"the call says the image is {self.model_len:,} bytes (the model's length)",
            f"an unchecked guest would treat [{lo:#x}, {hi:#x}) as the image: "
            f"{self.overread:,} bytes past the image block",
        ]
        if self.past_end_of_memory:
            lines.append(
                f"{self.past_end_of_memory:,} of them lie beyond the end of linear "
                f"memory ({self.memory_size:,} bytes): a wasm load there would trap"
            )
        if self.error is not None:
            lines.append(
                f"the checked guest refused: {type(self.error).__name__}: {self.error.message}"
            )
        else:
            lines.append("the guest accepted the call (it does not check lengths)")
        return "\n".join(lines)


def replay_node_bug(guest: Guest, model_bytes: bytes, image_bytes: bytes) -> NodeBugReplay:
    """Call `infer_from_ptrs(mptr, model_len, iptr, model_len)` as the article's Node host did.

    The checked guest answers with `LengthMismatchError` and leaves both blocks alone; we
    free them afterwards so the instance stays clean.
    """
    guest.reset()
    mptr = guest.write_bytes(model_bytes, "model")
    iptr = guest.write_bytes(image_bytes, "image")
    snap = guest.snapshot("Node bug: image length = model length")
    error: GuestError | None = None
    try:
        _infer_from_ptrs(guest, mptr, len(model_bytes), iptr, len(model_bytes))
        guest.forget(mptr, iptr)
    except LengthMismatchError as exc:
        error = exc
        guest.dealloc(iptr, len(image_bytes))
        guest.dealloc(mptr, len(model_bytes))
    return NodeBugReplay(
        error=error,
        img_ptr=iptr,
        img_len=len(image_bytes),
        model_len=len(model_bytes),
        read_range=unchecked_read_range(iptr, len(image_bytes), len(model_bytes)),
        memory_size=len(snap.data),
        snapshot=snap,
    )


def node_bug_figure(replay: NodeBugReplay) -> Figure:
    """The page map at the moment of the bad call, with the range it would have read."""
    title = (
        f"Node bug replay: the image is {replay.img_len / 1024:.0f} KiB, the call claims "
        f"{replay.model_len / 2**20:.1f} MiB"
    )
    return page_map_figure(replay.snapshot, highlight=replay.read_range, title=title)
