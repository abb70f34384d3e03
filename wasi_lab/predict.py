"""Classify images with the wasm guest: the article's flow, done once per process.

`Classifier` keeps one guest instance with the model parsed and resident, so a prediction
costs one image write, one decode and one forward pass; the article re-instantiated the
module and re-parsed the model for every request. The timing breakdown makes each cost
visible (notebook 04 charts it).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wasi_lab.models.labels import labels_for, resolve_labels, top_k
from wasi_lab.models.registry import ModelSpec, ensure_model, get_model
from wasi_lab.runtime import CompiledModule, Guest, shared_module

#: Preprocessing modes as the guest numbers them (guest/src/preprocess.rs).
MODE_IDS = {"article": 0, "efficientnet": 1, "inception": 2}
#: File name endings of the formats the guest decodes (JPEG and PNG), for directories.
GUEST_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def resolve_mode(mode: str, spec: ModelSpec) -> str:
    """'model' means the preprocessing the network was trained with."""
    name = spec.preprocess if mode == "model" else mode
    if name not in MODE_IDS:
        raise ValueError(f"unknown mode {mode!r}: use 'model', 'article', "
                         f"'efficientnet' or 'inception'")
    return name


@dataclass
class TopClass:
    index: int
    label: str
    prob: float


@dataclass
class Prediction:
    image: str
    model: str
    mode: str
    top: list[TopClass]
    timings_ms: dict[str, float]
    pages: dict[str, int] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return self.top[0].label


def image_bytes(source: bytes | bytearray | str | Path) -> tuple[bytes, str]:
    """(bytes, display name) for raw bytes, a file path or an http(s) URL."""
    if isinstance(source, bytes | bytearray):
        return bytes(source), "<bytes>"
    text = str(source)
    if text.startswith(("http://", "https://")):
        from wasi_lab.images import load_image_bytes

        return load_image_bytes(text), text
    path = Path(text)
    if path.is_dir():
        raise IsADirectoryError(f"{text} is a directory, not an image: pass one of its files "
                                f"(`wasi-lab predict {text}` classifies each image in it)")
    if not path.is_file():
        raise FileNotFoundError(f"{text}: not found (pass an image file, a directory of "
                                "images, or an http(s) URL)")
    return path.read_bytes(), text


def images_in(directory: str | Path) -> list[Path]:
    """The JPEG and PNG files directly in ``directory``, by name (hidden files skipped)."""
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in GUEST_IMAGE_SUFFIXES)


def infer_tensor_on(guest: Guest, handle: int, output_len: int, tensor: np.ndarray,
                    what: str = "output") -> np.ndarray:
    """The guest's `infer_tensor` on one loaded model: the NHWC f32 tensor in, `output_len`
    floats out, both buffers freed whatever happens. Shared by `Classifier.infer_tensor` and
    `logits.LogitsProbe`, which loads a second model handle; `what` names the output buffer
    in allocation errors."""
    arr = np.ascontiguousarray(tensor, dtype="<f4")
    ptr = guest.write_bytes(arr, "tensor")
    out = guest.alloc(4 * output_len, what)
    try:
        guest.call("infer_tensor", handle, ptr, out)
        return guest.read_f32(out, output_len)
    finally:
        guest.dealloc(ptr, arr.nbytes)
        guest.dealloc(out, 4 * output_len)


class Classifier:
    """A guest instance with one model loaded.

    >>> clf = Classifier("efficientnet-lite0")
    >>> clf.classify("images/grace_hopper.jpg").label
    'military uniform'
    """

    def __init__(self, model: str | Path = "efficientnet-lite0",
                 module: CompiledModule | Path | str | None = None,
                 guest: Guest | None = None, labels: str | Path | int | None = None):
        self.spec = get_model(str(model))
        t0 = time.perf_counter()
        compiled = module if isinstance(module, CompiledModule) else shared_module(module)
        t1 = time.perf_counter()
        self.guest = guest or Guest(compiled)
        t2 = time.perf_counter()
        # Only the path is kept: the guest parses the model into its own weights, and a
        # server holds one Classifier per core (the raw .pb is ~19 MB each time).
        self.model_path = ensure_model(self.spec.name, progress=False) \
            if self.spec.directory is None else self.spec.path
        self.handle = self._load()
        t3 = time.perf_counter()
        self.output_len = self.guest.call("model_output_len", self.handle)
        # `labels`: a file, a class count or None (see resolve_labels); a registered model
        # brings its own, and a graph that does not fit them is refused (LabelsError).
        if labels is None and self.spec.directory is None:
            labels = labels_for(self.spec.labels)
        self.labels = resolve_labels(labels, self.output_len)
        self.setup_ms = {"compile": (t1 - t0) * 1000, "compile_from_cache": compiled.from_cache,
                         "instantiate": (t2 - t1) * 1000, "load_model": (t3 - t2) * 1000}
        self.pages_after_load = self.guest.pages

    def _load(self) -> int:
        """Write the model, let the guest parse it once, and free the raw bytes."""
        g = self.guest
        model = self.model_path.read_bytes()
        ptr = g.write_bytes(model, "model")
        try:
            out = self.spec.output.encode()
            name = g.write_bytes(out, "output name")
            try:
                return g.call("load_model_with_output", ptr, len(model), name, len(out))
            finally:
                g.dealloc(name, len(out))
        finally:
            g.dealloc(ptr, len(model))

    def reset(self) -> None:
        """A fresh instance after a trap, with the model loaded again."""
        self.guest.reset()
        self.handle = self._load()

    # -- the two steps, exposed for the notebooks

    def preprocess(self, image: bytes | str | Path, mode: str = "model") -> np.ndarray:
        """The 1x224x224x3 tensor the guest feeds the network."""
        data, _ = image_bytes(image)
        return self.guest.decode_image(data, MODE_IDS[resolve_mode(mode, self.spec)])[2]

    def infer_tensor(self, tensor: np.ndarray) -> np.ndarray:
        """Raw network output (probabilities) for a preprocessed NHWC f32 tensor."""
        return infer_tensor_on(self.guest, self.handle, self.output_len, tensor)

    def profile(self, tensor: np.ndarray) -> list[dict]:
        """One timed inference: per step of the guest's plan, its node, op, multiply-adds
        and nanoseconds (the guest reads the WASI clock around each step)."""
        g = self.guest
        arr = np.ascontiguousarray(tensor, dtype="<f4")
        ptr = g.write_bytes(arr, "tensor")
        cap = 64 * 1024
        try:
            while True:
                out = g.alloc(cap, "profile")
                try:
                    n = g.call("profile_tensor", self.handle, ptr, out, cap)
                    if n <= cap:
                        return json.loads(g.read_bytes(out, n))
                finally:
                    g.dealloc(out, cap)
                cap = n  # too short: ask again with room for the whole profile
        finally:
            g.dealloc(ptr, arr.nbytes)

    # -- the whole prediction

    def scores(self, image: bytes | str | Path, mode: str = "model"
               ) -> tuple[np.ndarray, dict[str, float], tuple[int, int]]:
        """Probabilities, timings and original size for one image."""
        g = self.guest
        data, _ = image_bytes(image)
        mode_id = MODE_IDS[resolve_mode(mode, self.spec)]
        t0 = time.perf_counter()
        img = g.write_bytes(data, "image")
        dec_len = g.call("decoded_len")
        dec = g.alloc(dec_len, "tensor")
        out = g.alloc(4 * self.output_len, "output")
        t1 = time.perf_counter()
        try:
            g.call("decode_image", img, len(data), mode_id, dec)
            t2 = time.perf_counter()
            g.call("infer_tensor", self.handle, dec + 8, out)
            t3 = time.perf_counter()
            probs = g.read_f32(out, self.output_len)
            w, h = (int(v) for v in g.read_u32(dec, 2))
        finally:
            for ptr, n in ((img, len(data)), (dec, dec_len), (out, 4 * self.output_len)):
                if g.poisoned is None:
                    g.dealloc(ptr, n)
        timings = {"write": (t1 - t0) * 1000, "decode": (t2 - t1) * 1000,
                   "infer": (t3 - t2) * 1000}
        return probs, timings, (w, h)

    def classify(self, image: bytes | str | Path, top: int = 5, mode: str = "model"
                 ) -> Prediction:
        """Top-`top` classes for one image, with where the time went."""
        if not 1 <= top <= self.output_len:
            raise ValueError(f"top must be between 1 and {self.output_len}, not {top}")
        data, name = image_bytes(image)
        probs, timings, size = self.scores(data, mode)
        timings = {"compile": self.setup_ms["compile"],
                   "instantiate": self.setup_ms["instantiate"],
                   "load_model": self.setup_ms["load_model"], **timings}
        best = [TopClass(i, label, p) for i, label, p in top_k(probs, top, self.labels)]
        return Prediction(image=name, model=self.spec.name, mode=resolve_mode(mode, self.spec),
                          top=best, timings_ms={k: round(v, 3) for k, v in timings.items()},
                          pages={"after_load": self.pages_after_load,
                                 "after_infer": self.guest.pages},
                          image_size=size)
