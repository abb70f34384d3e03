"""Classify images with the wasm guest: the article's flow, done once per process.

`Classifier` keeps one guest instance with the model parsed and resident, so a prediction
costs one image write, one decode and one forward pass; the article re-instantiated the
module and re-parsed the model for every request. The timing breakdown makes each cost
visible (notebook 04 charts it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
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
        raise ValueError(
            f"unknown mode {mode!r}: use 'model', 'article', 'efficientnet' or 'inception'"
        )
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
        raise IsADirectoryError(
            f"{text} is a directory, not an image: pass one of its files "
            f"(`wasi-lab predict {text}` classifies each image in it)"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"{text}: not found (pass an image file, a directory of images, or an http(s) URL)"
        )
    return path.read_bytes(), text


def images_in(directory: str | Path) -> list[Path]:
    """The JPEG and PNG files directly in ``directory``, by name (hidden files skipped)."""
    return sorted(
        p
        for p in Path(directory).iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in GUEST_IMAGE_SUFFIXES
    )


class GuestBuffers:
    """Blocks lent to the guest for one call, given back on exit whatever happens.

    The write -> call -> dealloc pattern of every entry point that takes buffers:

    >>> with GuestBuffers(guest) as buf:                        # doctest: +SKIP
    ...     ptr = buf.write(data, "image")
    ...     guest.call("decode_image", ptr, len(data), mode, buf.alloc(n, "tensor"))

    After a trap the instance's memory is gone and `Guest.dealloc` gives nothing back, so a
    cleanup never replaces the trap being raised with an error of its own.
    """

    def __init__(self, guest: Guest):
        self.guest = guest
        self._held: list[tuple[int, int]] = []

    def write(self, data: bytes | bytearray | memoryview | np.ndarray, label: str = "") -> int:
        """Copy `data` into a fresh block (`Guest.write_bytes`); freed on exit."""
        ptr = self.guest.write_bytes(data, label)
        n = data.nbytes if isinstance(data, np.ndarray) else memoryview(data).nbytes
        self._held.append((ptr, n))
        return ptr

    def alloc(self, length: int, label: str = "") -> int:
        """An empty block of `length` bytes for the guest to fill; freed on exit."""
        ptr = self.guest.alloc(length, label)
        self._held.append((ptr, length))
        return ptr

    def __enter__(self) -> GuestBuffers:
        return self

    def __exit__(self, *exc: object) -> None:
        while self._held:
            self.guest.dealloc(*self._held.pop())


def infer_tensor_on(
    guest: Guest, handle: int, output_len: int, tensor: np.ndarray, what: str = "output"
) -> np.ndarray:
    """The guest's `infer_tensor` on one loaded model: the NHWC f32 tensor in, `output_len`
    floats out, both buffers freed whatever happens. Shared by `Classifier.infer_tensor` and
    `logits.LogitsProbe`, which loads a second model handle; `what` names the output buffer
    in allocation errors."""
    with GuestBuffers(guest) as buf:
        ptr = buf.write(np.ascontiguousarray(tensor, dtype="<f4"), "tensor")
        out = buf.alloc(4 * output_len, what)
        guest.call("infer_tensor", handle, ptr, out)
        return guest.read_f32(out, output_len)


class Classifier:
    """A guest instance with one model loaded.

    >>> clf = Classifier("efficientnet-lite0")
    >>> clf.classify("images/grace_hopper.jpg").label
    'military uniform'
    """

    def __init__(
        self,
        model: str | Path = "efficientnet-lite0",
        module: CompiledModule | Path | str | None = None,
        guest: Guest | None = None,
        labels: str | Path | int | None = None,
    ):
        self.spec = get_model(str(model))
        t0 = time.perf_counter()
        compiled = module if isinstance(module, CompiledModule) else shared_module(module)
        t1 = time.perf_counter()
        self.guest = guest or Guest(compiled)
        t2 = time.perf_counter()
        # Only the path is kept: the guest parses the model into its own weights, and a
        # server holds one Classifier per core (the raw .pb is ~19 MB each time).
        self.model_path = (
            ensure_model(self.spec.name, progress=False)
            if self.spec.directory is None
            else self.spec.path
        )
        self.handle = self._load()
        t3 = time.perf_counter()
        self.output_len = self.guest.call("model_output_len", self.handle)
        # `labels`: a file, a class count or None (see resolve_labels); a registered model
        # brings its own, and a graph that does not fit them is refused (LabelsError).
        if labels is None and self.spec.directory is None:
            labels = labels_for(self.spec.labels)
        self.labels = resolve_labels(labels, self.output_len)
        self.setup_ms = {
            "compile": (t1 - t0) * 1000,
            "compile_from_cache": compiled.from_cache,
            "instantiate": (t2 - t1) * 1000,
            "load_model": (t3 - t2) * 1000,
        }
        self.pages_after_load = self.guest.pages

    def _load(self) -> int:
        """Write the model, let the guest parse it once, and free the raw bytes."""
        model = self.model_path.read_bytes()
        out = self.spec.output.encode()
        with GuestBuffers(self.guest) as buf:
            return self.guest.call(
                "load_model_with_output",
                buf.write(model, "model"),
                len(model),
                buf.write(out, "output name"),
                len(out),
            )

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
        cap = 64 * 1024
        with GuestBuffers(g) as buf:
            ptr = buf.write(np.ascontiguousarray(tensor, dtype="<f4"), "tensor")
            while True:
                with GuestBuffers(g) as scratch:
                    out = scratch.alloc(cap, "profile")
                    n = g.call("profile_tensor", self.handle, ptr, out, cap)
                    if n <= cap:
                        return json.loads(g.read_bytes(out, n))
                cap = n  # too short: ask again with room for the whole profile

    # -- the whole prediction

    def scores(
        self, image: bytes | str | Path, mode: str = "model"
    ) -> tuple[np.ndarray, dict[str, float], tuple[int, int]]:
        """Probabilities, timings and original size for one image."""
        data, _ = image_bytes(image)
        return self._scores(data, resolve_mode(mode, self.spec))

    def _scores(
        self, data: bytes, mode: str
    ) -> tuple[np.ndarray, dict[str, float], tuple[int, int]]:
        """`scores` for image bytes and a resolved mode name."""
        g = self.guest
        t0 = time.perf_counter()
        with GuestBuffers(g) as buf:
            img = buf.write(data, "image")
            dec = buf.alloc(g.call("decoded_len"), "tensor")
            out = buf.alloc(4 * self.output_len, "output")
            t1 = time.perf_counter()
            g.call("decode_image", img, len(data), MODE_IDS[mode], dec)
            t2 = time.perf_counter()
            g.call("infer_tensor", self.handle, dec + 8, out)
            t3 = time.perf_counter()
            probs = g.read_f32(out, self.output_len)
            w, h = (int(v) for v in g.read_u32(dec, 2))
        timings = {"write": (t1 - t0) * 1000, "decode": (t2 - t1) * 1000, "infer": (t3 - t2) * 1000}
        return probs, timings, (w, h)

    def classify(self, image: bytes | str | Path, top: int = 5, mode: str = "model") -> Prediction:
        """Top-`top` classes for one image, with where the time went."""
        if not 1 <= top <= self.output_len:
            raise ValueError(f"top must be between 1 and {self.output_len}, not {top}")
        data, name = image_bytes(image)
        mode = resolve_mode(mode, self.spec)
        probs, timings, size = self._scores(data, mode)
        timings = {
            "compile": self.setup_ms["compile"],
            "instantiate": self.setup_ms["instantiate"],
            "load_model": self.setup_ms["load_model"],
            **timings,
        }
        best = [TopClass(i, label, p) for i, label, p in top_k(probs, top, self.labels)]
        return Prediction(
            image=name,
            model=self.spec.name,
            mode=mode,
            top=best,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            pages={"after_load": self.pages_after_load, "after_infer": self.guest.pages},
            image_size=size,
        )


def compare_models(
    images: Sequence[Path | str],
    models: Sequence[str],
    mode: str = "model",
    progress: bool = True,
    modes: Sequence[str] | None = None,
) -> list[dict]:
    """The same images through several models (and preprocessing modes): one row per
    image, top-1 with its probability per model and mode, and the time per image."""
    from tqdm.auto import tqdm

    modes = list(modes) if modes else [mode]
    rows: dict[str, dict] = {}
    for m in models:
        clf = Classifier(m)
        for md in modes:
            column = m if len(modes) == 1 else f"{m} ({md})"
            for img in tqdm(list(images), desc=column, disable=not progress, leave=False):
                t0 = time.perf_counter()
                pred = clf.classify(img, top=1, mode=md)
                row = rows.setdefault(Path(str(img)).name, {"image": Path(str(img)).name})
                row[column] = f"{pred.top[0].label} ({pred.top[0].prob:.0%})"
                row[f"{column} ms"] = round((time.perf_counter() - t0) * 1000, 1)
    return list(rows.values())
