"""Interactive pieces for the notebooks, as small classes with plain-Python callbacks.

Each class builds its ipywidgets once and keeps the callback as a named method
(`StageStepper.show`, `PageInspector.select`, `PredictionPanel.run`), so a test can set a
widget's value from Python and check what changed, without a browser. Figures are rendered
to PNG and put in `widgets.Image`, which works the same in JupyterLab, in nbclient and in
tests (no Output-widget capture needed).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import ipywidgets as W

from wasi_lab.runtime import PAGE_SIZE, MemorySnapshot
from wasi_lab.views import memviz
from wasi_lab.views.prediction_charts import (
    setup_and_image_figure,
    tensors_figure,
    top5_figure,
)
from wasi_lab.views.style import figure_png


def _pre(text: str) -> str:
    # white-space:pre + a scroll bar: a hex row that wraps no longer lines up in columns
    return (
        f"<pre style='font-size:13px; line-height:1.25; margin:0; white-space:pre; "
        f"overflow-x:auto'>{html.escape(text)}</pre>"
    )


# --------------------------------------------------------------------------- notebook 03


class StageStepper:
    """Step through the article's stages; the page map and a one-line diff follow.

    The slider and the toggle buttons are two views of the same stage index. Every page map
    is drawn ahead, in both colourings (`memviz.page_map_png`: pixels, not matplotlib), and
    every diff computed once, so a click only swaps a cached PNG: drawing on click took up
    to 8 s for the 1,378-page *after inference* stage. `prerender=False` draws on first use.
    """

    COLOURINGS = ("region", "entropy")

    def __init__(
        self, snapshots: Sequence[MemorySnapshot], color_by: str = "region", prerender: bool = True
    ):
        if not snapshots:
            raise ValueError("StageStepper needs at least one snapshot")
        self.snapshots = list(snapshots)
        self.index = -1
        self._cache: dict[tuple[int, str], bytes] = {}
        self._diffs: dict[int, memviz.SnapshotDiff | None] = {}
        #: How many page maps were drawn: a step through cached stages leaves it unchanged.
        self.renders = 0
        self.prerender = prerender
        n = len(self.snapshots)
        self.slider = W.IntSlider(
            value=0,
            min=0,
            max=n - 1,
            description="stage",
            continuous_update=False,
            layout=W.Layout(width="420px"),
        )
        self.slider.add_class("wasi-stage-slider")
        self.buttons = W.ToggleButtons(
            options=[(s.label or str(i), i) for i, s in enumerate(self.snapshots)],
            value=0,
            style={"button_width": "auto"},
        )
        self.buttons.add_class("wasi-stage-buttons")
        self.color = W.ToggleButtons(
            options=[("by region", "region"), ("by content (entropy)", "entropy")],
            value=color_by,
            style={"button_width": "auto"},
        )
        self.image = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.image.add_class("wasi-pagemap")
        self.caption = W.HTML()
        self.caption.add_class("wasi-stage-caption")
        self.legend = W.HTML()
        self.slider.observe(lambda ch: self.show(ch["new"]), names="value")
        self.buttons.observe(lambda ch: self.show(ch["new"]), names="value")
        self.color.observe(lambda ch: self._recolour(), names="value")
        self.widget = W.VBox(
            [W.HBox([self.slider, self.color]), self.buttons, self.caption, self.legend, self.image]
        )
        if prerender:
            for colouring in self.COLOURINGS:
                self.render_all(colouring)
        self.show(0)

    def diff(self, i: int) -> memviz.SnapshotDiff | None:
        """Changes from stage i-1 to stage i (None for the first stage), computed once."""
        if i not in self._diffs:
            self._diffs[i] = (
                None if i == 0 else memviz.diff_snapshots(self.snapshots[i - 1], self.snapshots[i])
            )
        return self._diffs[i]

    def render(self, i: int, color_by: str | None = None) -> bytes:
        """The PNG of stage `i`'s page map (drawn on first use, then from the cache)."""
        color_by = color_by or self.color.value
        key = (i, color_by)
        if key not in self._cache:
            d = self.diff(i)
            self._cache[key] = memviz.page_map_png(
                self.snapshots[i], color_by=color_by, changed_pages=d.changed_pages if d else ()
            )
            self.renders += 1
        return self._cache[key]

    def render_all(self, color_by: str | None = None) -> None:
        """Draw every stage's page map ahead of the clicks."""
        for i in range(len(self.snapshots)):
            self.render(i, color_by)

    def cached(self, i: int, color_by: str | None = None) -> bool:
        return (i, color_by or self.color.value) in self._cache

    def _recolour(self) -> None:
        self.show(self.index, force=True)

    def show(self, i: int, force: bool = False) -> None:
        """Show stage `i`: page map, and what changed since the stage before."""
        i = int(i) % len(self.snapshots)
        if i == self.index and not force:
            return
        self.index = i
        if self.slider.value != i:
            self.slider.value = i
        if self.buttons.value != i:
            self.buttons.value = i
        snap = self.snapshots[i]
        d = self.diff(i)
        blocks = (
            ", ".join(f"{a.label} {a.length:,} B at {a.ptr:#x}" for a in snap.allocations)
            or "no host-known blocks"
        )
        text = f"<b>{html.escape(snap.label)}</b>: {snap.pages} pages; {html.escape(blocks)}"
        if d is not None:
            text += f"<br>{html.escape(d.summary())}"
        # picture first, caption last: whoever sees the new caption sees the new map
        self.image.value = self.render(i)
        self.legend.value = memviz.page_map_legend_html(
            snap, self.color.value, d.changed_pages if d else ()
        )
        self.caption.value = text


class PageInspector:
    """Pick a page (and two stages): hex dump with ASCII, and the diff between the stages."""

    def __init__(
        self, snapshots: Sequence[MemorySnapshot], page: int | None = None, length: int = 256
    ):
        self.snapshots = list(snapshots)
        self.length = length
        labels = [(s.label or str(i), i) for i, s in enumerate(self.snapshots)]
        last = len(self.snapshots) - 1
        max_page = max(memviz.page_count(s) for s in self.snapshots) - 1
        self.page = W.BoundedIntText(
            value=0, min=0, max=max_page, description="page", layout=W.Layout(width="180px")
        )
        # Default: the two stages before the last (for the article's replay, "alloc(image)"
        # -> "image written"), where the image block is fresh and intact.
        b = last - 1 if last >= 2 else last
        self.stage_a = W.Dropdown(options=labels, value=max(0, b - 1), description="from")
        self.stage_b = W.Dropdown(options=labels, value=b, description="to")
        self.info = W.HTML()
        self.dump = W.HTML()
        self.diff = W.HTML()
        for w in (self.page, self.stage_a, self.stage_b):
            w.observe(lambda ch: self.select(self.page.value), names="value")
        self.widget = W.VBox(
            [
                W.HBox([self.page, self.stage_a, self.stage_b]),
                self.info,
                W.HBox(
                    [
                        W.VBox([W.HTML("<b>hex dump</b>"), self.dump]),
                        W.VBox([W.HTML("<b>diff</b>"), self.diff]),
                    ],
                    layout=W.Layout(flex_flow="row wrap", grid_gap="1.5em"),
                ),
            ]
        )
        self.select(page if page is not None else self._interesting_page())

    def _interesting_page(self) -> int:
        """Start on the first page of the image block, if the host knows one."""
        for s in reversed(self.snapshots):
            for a in s.allocations:
                if "image" in a.label:
                    return a.ptr // PAGE_SIZE
        return 0

    @staticmethod
    def start_offset(snap: MemorySnapshot, page: int) -> int:
        """Where in the page the dump starts: at a host-known block that begins in this
        page (the image's `ff d8 ff`), else at the first non-zero row."""
        lo = page * PAGE_SIZE
        for a in snap.allocations:
            if lo <= a.ptr < lo + PAGE_SIZE:
                return ((a.ptr - lo) // 16) * 16
        chunk = snap.data[lo : lo + PAGE_SIZE]
        stripped = chunk.lstrip(b"\0")
        return ((len(chunk) - len(stripped)) // 16) * 16 if stripped else 0

    @property
    def text(self) -> str:
        """The current hex dump as plain text (what the HTML shows)."""
        return self._text

    def select(self, page: int) -> str:
        """Show one page of stage `to`, and its diff against stage `from`."""
        page = int(page)
        if self.page.value != page:
            self.page.value = page  # re-enters select() through the observer
            return self._text
        a = self.snapshots[self.stage_a.value]
        b = self.snapshots[self.stage_b.value]
        if page >= memviz.page_count(b):
            self._text = f"page {page} does not exist yet in {b.label!r} ({b.pages} pages)"
            self.info.value = html.escape(self._text)
            self.dump.value = ""
            self.diff.value = ""
            return self._text
        region = memviz.page_regions(b)[page]
        ent = memviz.page_entropy(
            MemorySnapshot(b.data[page * PAGE_SIZE : (page + 1) * PAGE_SIZE], 1, 0, 0)
        )[0]
        offset = min(self.start_offset(b, page), PAGE_SIZE - self.length)
        self._text = memviz.page_hex(b, page, self.length, offset=offset)
        held = memviz.blocks_on_page(b, page)
        holds = "; ".join(
            f"{html.escape(a.label)}: {hi - lo:,} bytes at {lo:#x}..{hi - 1:#x}"
            for a, lo, hi in held
        )
        self.info.value = (
            f"page {page}: addresses {page * PAGE_SIZE:#x}..."
            f"{(page + 1) * PAGE_SIZE - 1:#x}, coloured <b>{region}</b> on the "
            f"map{' (the block with the larger share)' if len(held) > 1 else ''}"
            f", entropy {ent:.2f} bits/byte, showing from offset {offset:#x}"
            + (f"<br>this page holds {holds}" if held else "")
        )
        self.dump.value = _pre(self._text)
        self.diff.value = _pre(memviz.hex_diff(a, b, page, length=128))
        return self._text


# --------------------------------------------------------------------------- notebook 04


def url_problem(text: str) -> str | None:
    """Why `text` cannot go in the URL box, or None when it is an http(s) address."""
    from urllib.parse import urlsplit

    if not text:
        return "the URL box is empty: paste an image address starting with https://"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in text:
        return (
            f"{text!r} is not an http(s) address: paste one that starts with https:// "
            f"(for a file on your computer use the upload button; for a sample, the "
            f"image list)"
        )
    return None


class PredictionPanel:
    """Pick an image (sample, upload or URL), a model and a preprocessing mode; see the
    top-5, the timing breakdown and the tensors each mode feeds the network."""

    def __init__(
        self,
        images: Sequence[Path] | None = None,
        models: Sequence[str] | None = None,
        auto: bool = True,
    ):
        from wasi_lab.images import list_images
        from wasi_lab.models.registry import available_models

        found = [Path(p) for p in (images if images is not None else list_images())]
        # The article's image first: it is the one everybody knows the answer for.
        self.images = sorted(found, key=lambda p: (p.name != "grace_hopper.jpg", p.name))
        model_names = list(models) if models is not None else available_models()
        self._classifiers: dict = {}
        self.last = None
        self.source: bytes | str | None = str(self.images[0]) if self.images else None
        self.source_name = self.images[0].name if self.images else ""
        self.image_pick = W.Dropdown(
            options=[(p.name, str(p)) for p in self.images], description="image"
        )
        self.image_pick.add_class("wasi-image-pick")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload")
        self.url = W.Text(
            placeholder="https://... (an image URL)",
            description="URL",
            layout=W.Layout(width="420px"),
        )
        self.fetch = W.Button(description="classify URL")
        self.model_pick = W.Dropdown(options=model_names, description="model")
        self.mode = W.ToggleButtons(
            options=[("model's own", "model"), ("article's (/255)", "article")],
            description="preprocess",
        )
        self.status = W.HTML()
        self.status.add_class("wasi-status")
        self.top5 = W.Image(format="png", layout=W.Layout(max_width="55%"))
        self.top5.add_class("wasi-top5")
        self.timings = W.Image(format="png", layout=W.Layout(max_width="44%"))
        self.timings.add_class("wasi-timings")
        self.tensors = W.Image(format="png", layout=W.Layout(max_width="70%"))
        self.auto = auto
        self.image_pick.observe(self._on_pick, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.fetch.on_click(lambda _: self.use_url(self.url.value))
        self.model_pick.observe(lambda _: self._maybe_run(), names="value")
        self.mode.observe(lambda _: self._maybe_run(), names="value")
        self.widget = W.VBox(
            [
                W.HBox([self.image_pick, self.upload]),
                W.HBox([self.url, self.fetch]),
                W.HBox([self.model_pick, self.mode]),
                self.status,
                W.HBox([self.top5, self.timings]),
                self.tensors,
            ]
        )
        if auto and self.source is not None:
            self.run()

    # -- inputs

    def _maybe_run(self) -> None:
        if self.auto:
            self.run()

    def _on_pick(self, change) -> None:
        self.use_path(change["new"])

    def _on_upload(self, change) -> None:
        files = change["new"]
        if files:
            f = files[0]
            self.use_bytes(bytes(f["content"]), f.get("name", "upload"))

    def use_path(self, path: str | Path) -> None:
        self.source, self.source_name = str(path), Path(path).name
        self._maybe_run()

    def use_bytes(self, data: bytes, name: str = "upload") -> None:
        self.source, self.source_name = data, name
        self._maybe_run()

    def use_url(self, url: str) -> None:
        """Classify the image at an http(s) address; anything else gets a plain answer.

        Without this check, "not a url" went on as a file path and came back as
        FileNotFoundError, which says nothing about what to type instead.
        """
        url = url.strip()
        problem = url_problem(url)
        if problem is not None:
            self.status.value = f"<b style='color:#c44e52'>not a URL</b>: {html.escape(problem)}"
            return
        self.source, self.source_name = url, url
        self._maybe_run()

    # -- the callback

    def classifier(self, name: str):
        from wasi_lab.predict import Classifier

        if name not in self._classifiers:
            self._classifiers[name] = Classifier(name)
        return self._classifiers[name]

    def run(self):
        """Classify the current source; update the status line and the three charts.

        Errors (a URL that cannot be fetched, an upload that is not an image) are shown in
        the status line and returned as None rather than raised, so the panel stays usable.
        """
        if self.source is None:
            self.status.value = "pick an image first"
            return None
        from wasi_lab.runtime import GuestError, GuestTrap

        self.status.value = f"classifying {html.escape(self.source_name)} ..."
        try:
            clf = self.classifier(self.model_pick.value)
            pred = clf.classify(self.source, top=5, mode=self.mode.value)
            tensors = {
                "model's own": clf.preprocess(self.source, "model"),
                "article's (/255)": clf.preprocess(self.source, "article"),
            }
        except GuestTrap as exc:
            self._classifiers.pop(self.model_pick.value, None)
            self.status.value = f"<b style='color:#c44e52'>guest trapped</b>: {exc}"
            return None
        except (GuestError, OSError, ValueError) as exc:
            self.status.value = (
                f"<b style='color:#c44e52'>{type(exc).__name__}</b>: {html.escape(str(exc))}"
            )
            return None
        pred.image = self.source_name
        self.last = pred
        # charts first, status line last: a reader (or a test) that sees the new status
        # also sees the new charts
        self.top5.value = figure_png(top5_figure(pred))
        self.timings.value = figure_png(setup_and_image_figure(pred))
        self.tensors.value = figure_png(tensors_figure(tensors), dpi=70)
        best = pred.top[0]
        self.status.value = (
            f"<b>{html.escape(self.source_name)}</b> → "
            f"<b>{html.escape(best.label)}</b> ({best.prob:.1%}) with "
            f"{pred.model}, {pred.mode} preprocessing; image "
            f"{pred.image_size[0]}x{pred.image_size[1]}, "
            f"{sum(pred.timings_ms[k] for k in ('write', 'decode', 'infer')):.0f}"
            f" ms per image"
        )
        return pred
