"""The notebook widget that runs the guest in the learner's own browser tab.

`BrowserHost` is an anywidget: the kernel sends the prebuilt module and the model once (as
binary widget state), the tab compiles and instantiates them with the browser's own
WebAssembly engine through `host.js`'s WASI shim, and every image the learner picks or
uploads is classified in the tab. The tab sends back its raw output floats and the image
bytes; the kernel runs the same bytes under wasmtime (`Classifier`) and answers whether the
two engines wrote identical bytes (sha256) or how far apart they are (max abs diff), with
wasmtime's timings to show beside the tab's.

The callback is a plain method (`receive`), so tests can drive the kernel side without a
browser, and the browser side is tested in real Chromium.
"""

from __future__ import annotations

from pathlib import Path

import anywidget
import numpy as np
import traitlets

from wasi_lab.browser import HOST_JS
from wasi_lab.hosts_check import compare_raw
from wasi_lab.images import list_images
from wasi_lab.paths import IMAGES_DIR, default_module
from wasi_lab.predict import MODE_IDS, Classifier, resolve_mode


class BrowserHost(anywidget.AnyWidget):
    """The guest in this browser tab, beside wasmtime in the kernel."""

    _esm = HOST_JS
    wasm = traitlets.Bytes(b"").tag(sync=True)
    model_bytes = traitlets.Bytes(b"").tag(sync=True)
    output_name = traitlets.Unicode("").tag(sync=True)
    mode = traitlets.Int(1).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    sample_names = traitlets.List(traitlets.Unicode()).tag(sync=True)
    image_name = traitlets.Unicode("").tag(sync=True)
    image = traitlets.Bytes(b"").tag(sync=True)
    #: The kernel's verdict on the last result: seq, identical, sha256, max_abs_diff, timings.
    comparison = traitlets.Dict().tag(sync=True)

    def __init__(
        self,
        model: str = "efficientnet-lite0",
        image: str = "grace_hopper.jpg",
        mode: str = "model",
        wasm: Path | str | None = None,
        images_dir: Path = IMAGES_DIR,
    ):
        self.classifier = Classifier(model, module=wasm)
        spec = self.classifier.spec
        self.images_dir = Path(images_dir)
        names = [p.name for p in list_images(self.images_dir)]
        if image not in names:
            raise FileNotFoundError(
                f"{image}: not in {self.images_dir} (there: {', '.join(names) or 'nothing'})"
            )
        self.mode_name = resolve_mode(mode, spec)
        #: Every result the tab sent, with the kernel's comparison (newest last).
        self.results: list[dict] = []
        super().__init__(
            wasm=Path(wasm or default_module()).read_bytes(),
            model_bytes=self.classifier.model_path.read_bytes(),
            output_name=spec.output,
            mode=MODE_IDS[self.mode_name],
            labels=list(self.classifier.labels),
            sample_names=names,
            image_name=image,
            image=(self.images_dir / image).read_bytes(),
        )
        self.on_msg(self._on_msg)

    @traitlets.observe("image_name")
    def _pick(self, change: dict) -> None:
        """The learner picked a sample: send its bytes (the tab classifies on arrival)."""
        path = self.images_dir / Path(change["new"]).name
        if path.is_file():
            self.image = path.read_bytes()

    def _on_msg(self, _widget: object, content: dict, buffers: list) -> None:
        if content.get("kind") == "result" and len(buffers) == 2:
            self.receive(content, bytes(buffers[0]), bytes(buffers[1]))

    def wasmtime_raw(self, image: bytes) -> tuple[bytes, dict[str, float]]:
        """wasmtime's raw output bytes and timings for the same image bytes."""
        clf = self.classifier
        probs, timing, _ = clf.scores(image, self.mode_name)
        raw = np.ascontiguousarray(probs, dtype="<f4").tobytes()
        setup = {
            k: v
            for k, v in clf.setup_ms.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        return raw, {k: round(v, 3) for k, v in {**setup, **timing}.items()}

    def receive(self, content: dict, raw: bytes, image: bytes) -> dict:
        """The tab's answer for one image: compare its raw floats with wasmtime's.

        Never raises: an image wasmtime refuses (the tab would have refused it too) becomes
        an `error` in the comparison the widget shows.
        """
        verdict: dict = {"seq": content.get("seq"), "image": content.get("name", "")}
        try:
            ref, timings = self.wasmtime_raw(image)
            verdict.update(compare_raw(raw, ref), wasmtime_timings_ms=timings)
        except Exception as exc:  # noqa: BLE001 (shown in the widget, not a traceback)
            verdict["error"] = f"{type(exc).__name__}: {exc}"
        self.results.append({"browser": content, "raw": raw, "comparison": verdict})
        self.comparison = verdict
        return verdict

    def latest(self) -> dict | None:
        """The last comparison, or None while no browser has run the widget (nbclient)."""
        return self.results[-1]["comparison"] if self.results else None
