"""Widgets driven from Python: set a value as a learner would, check what the callback did."""

from __future__ import annotations

import datetime
import http.server
import threading
from pathlib import Path

import pytest

from wasi_lab.images import list_images
from wasi_lab.models.registry import ensure_model
from wasi_lab.runtime import PAGE_SIZE, Guest
from wasi_lab.views import memviz
from wasi_lab.views.widgets import PageInspector, PredictionPanel, StageStepper


@pytest.fixture(scope="module")
def replay(grace_hopper_bytes: bytes) -> memviz.StageReplay:
    model = ensure_model("efficientnet-lite0", progress=False).read_bytes()
    return memviz.replay_article_stages(Guest(), model, grace_hopper_bytes)


def test_stage_stepper_slider_and_buttons_stay_in_step(replay: memviz.StageReplay) -> None:
    st = StageStepper(replay.snapshots)
    first = bytes(st.image.value)
    assert first.startswith(b"\x89PNG") and st.index == 0
    st.slider.value = 2
    assert st.index == 2 and st.buttons.value == 2
    assert st.image.value != first
    assert "model written" in st.caption.value and "changed" in st.caption.value
    st.buttons.value = 5
    assert st.slider.value == 5 and "memory.grow by" in st.caption.value
    by_region = bytes(st.image.value)
    st.color.value = "entropy"
    assert st.index == 5 and st.image.value != by_region
    st.show(0)
    assert st.slider.value == 0 and st.buttons.value == 0


def test_stage_stepper_renders_ahead_so_a_click_is_a_cache_hit(replay: memviz.StageReplay) -> None:
    st = StageStepper(replay.snapshots)
    stages = range(len(replay.snapshots))
    assert all(st.cached(i, c) for i in stages for c in StageStepper.COLOURINGS)
    drawn = st.renders
    assert drawn == len(replay.snapshots) * len(StageStepper.COLOURINGS)
    for colouring in StageStepper.COLOURINGS:
        st.color.value = colouring
        for i in (*stages, 0, len(replay.snapshots) - 1):
            st.slider.value = i
            assert st.image.value == st.render(i, colouring)
    assert st.renders == drawn, "a click drew a page map instead of showing a cached one"
    lazy = StageStepper(replay.snapshots, prerender=False)
    assert lazy.renders == 1 and not lazy.cached(5)
    lazy.show(5)
    assert lazy.renders == 2 and lazy.cached(5)


def test_page_inspector_shows_the_jpeg_and_the_diff(replay: memviz.StageReplay) -> None:
    insp = PageInspector(replay.snapshots)
    img_page = replay.img_ptr // PAGE_SIZE
    assert insp.page.value == img_page
    assert "ff d8 ff" in insp.text, "the JPEG signature at the image block"
    # the image starts inside the model's last page: the info line names both blocks
    assert "coloured <b>model</b>" in insp.info.value
    assert "model: " in insp.info.value and "image: " in insp.info.value
    for pane in (insp.dump.value, insp.diff.value):  # hex rows scroll, never wrap
        assert "white-space:pre;" in pane and "overflow-x:auto" in pane
    insp.stage_a.value = 3  # alloc(image)
    insp.stage_b.value = 4  # image written
    assert "+++ image written" in insp.diff.value
    # a page inside the model, between alloc and write: the graph's node names appear
    model_page = replay.model_ptr // PAGE_SIZE + 1
    insp.stage_a.value, insp.stage_b.value = 1, 2
    insp.page.value = model_page
    assert insp.text.startswith(f" {model_page * PAGE_SIZE:08x}")
    assert "--- alloc(model)" in insp.diff.value
    # a page that only exists after inference
    insp.stage_b.value = 0
    insp.select(replay.snapshots[-1].pages - 1)
    assert "does not exist yet" in insp.text


@pytest.fixture(scope="module")
def image_server() -> str:
    """A loopback HTTP server for the URL box (127.0.0.1 only)."""
    directory = str(list_images()[0].parent)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=directory, **kw)

        def log_message(self, *args) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_prediction_panel_inputs(image_server: str, small_png: bytes) -> None:
    images = list_images()
    names = {p.name: p for p in images}
    assert "grace_hopper.jpg" in names and "chelsea.png" in names
    panel = PredictionPanel(
        images=[names["grace_hopper.jpg"], names["chelsea.png"]], models=["efficientnet-lite0"]
    )
    assert panel.last is not None and panel.last.top[0].label == "military uniform"
    assert "military uniform" in panel.status.value
    top5_before = bytes(panel.top5.value)
    assert top5_before.startswith(b"\x89PNG") and panel.timings.value and panel.tensors.value

    panel.image_pick.value = str(names["chelsea.png"])
    assert "cat" in panel.last.top[0].label
    assert panel.top5.value != top5_before
    assert len(panel.last.top) == 5
    assert set(panel.last.timings_ms) >= {"write", "decode", "infer"}

    panel.mode.value = "article"
    assert panel.last.mode == "article" and "article preprocessing" in panel.status.value

    assert panel.run() is not None
    panel.use_url(f"{image_server}/grace_hopper.jpg")
    assert panel.last.top[0].label == "military uniform"
    assert panel.last.image.endswith("grace_hopper.jpg")

    assert panel.use_bytes(small_png, "tiny.png") is None  # auto-run; returns nothing
    assert panel.last.image == "tiny.png"

    before = panel.last
    panel.use_bytes(b"definitely not an image", "junk.bin")
    assert "BadImageError" in panel.status.value and panel.last is before
    panel.use_url(f"{image_server}/missing.jpg")
    assert "ImageError" in panel.status.value and "404" in panel.status.value

    before = panel.last
    for typed in ("not a url", "", "ftp://example.org/x.jpg", "images/chelsea.png"):
        panel.url.value = typed
        panel.fetch.click()
        assert "not a URL" in panel.status.value, typed
        assert "FileNotFoundError" not in panel.status.value and panel.last is before
    assert "https://" in panel.status.value  # says what to type instead


def test_prediction_panel_upload_widget() -> None:
    path = next(p for p in list_images() if p.name == "grace_hopper.jpg")
    panel = PredictionPanel(images=[path], models=["efficientnet-lite0"], auto=False)
    assert panel.last is None
    panel.auto = True
    data = Path(path).read_bytes()
    panel.upload.value = (
        {
            "name": "upload.jpg",
            "type": "image/jpeg",
            "size": len(data),
            "content": memoryview(data),
            "last_modified": datetime.datetime.now(datetime.UTC),
        },
    )
    assert panel.last is not None and panel.last.image == "upload.jpg"
    assert panel.last.top[0].label == "military uniform"


def test_page_map_png_draws_each_page_in_its_colour() -> None:
    import io

    from PIL import Image

    from wasi_lab.runtime import Allocation, MemorySnapshot

    data = bytearray(5 * PAGE_SIZE)
    data[3 * PAGE_SIZE : 4 * PAGE_SIZE] = bytes(range(256)) * 256  # entropy 8 on page 3
    snap = MemorySnapshot(
        bytes(data),
        5,
        PAGE_SIZE,
        PAGE_SIZE - 8,
        [Allocation(2 * PAGE_SIZE, PAGE_SIZE, "model"), Allocation(3 * PAGE_SIZE, 10, "image")],
        "s",
    )
    png = memviz.page_map_png(snap, changed_pages=[2], cols=32, width=900)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    cell = (900 - 70) // 32
    left, top = 62, 6

    def centre(page: int, dx: int = 0) -> tuple[int, int, int]:
        return img.getpixel((left + page * cell + cell // 2 + dx, top + cell // 2))

    def rgb(region: str) -> tuple[int, int, int]:
        c = memviz.REGION_COLOURS[region].lstrip("#")
        return tuple(int(c[i : i + 2], 16) for i in (0, 2, 4))

    assert centre(0) == rgb("data + stack") and centre(1) == rgb("untouched (zero)")
    assert centre(2) == (0, 0, 0), "a changed page carries a dot"
    assert centre(2, dx=cell // 2 - 3) == rgb("model")
    assert centre(3) == rgb("image") and centre(4) == rgb("untouched (zero)")
    assert centre(6) == (255, 255, 255), "no page there"
    ent = Image.open(io.BytesIO(memviz.page_map_png(snap, "entropy", cols=32))).convert("RGB")
    assert ent.getpixel((left + 3 * cell + cell // 2, top + cell // 2)) == (253, 231, 36)
    legend = memviz.page_map_legend_html(snap, "region", [2])
    assert "model (1)" in legend and "changed since previous stage" in legend
    with pytest.raises(ValueError):
        memviz.page_map_png(snap, "nope")
