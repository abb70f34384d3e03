"""Image preprocessing in NumPy/PIL: the host-side reference for the guest's own.

Different model families expect different input scaling. Getting it wrong does
not crash anything — it silently makes the predictions worse — which is why the
kit names the modes explicitly:

* ``article``: ``x / 255`` (what the original blog post did with MobileNet).
* ``efficientnet``: ``(x - 127) / 128`` (TF TPU repo).
* ``inception``: ``x / 127.5 - 1`` (TF-slim MobileNet).

Every mode resizes the whole picture to the input size, as the guest does, so the modes
differ in value range only. The TF reference pipelines also centre-crop 87.5 %; pass
``crop=CROP_FRACTION`` to see what that changes (on ``grace_hopper.jpg`` a lot).

We use PIL's bilinear filter; the guest uses the Rust ``image`` crate's Triangle
filter, so pixels differ slightly, classes should not.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

MODES = ("article", "efficientnet", "inception")
CROP_FRACTION = 0.875


def load_rgb(source: str | Path | bytes) -> Image.Image:
    """Open a path or encoded bytes as an RGB PIL image (grey/alpha images are converted)."""
    img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    return img.convert("RGB")


def center_crop(img: Image.Image, fraction: float = CROP_FRACTION) -> Image.Image:
    """Crop a centred square of side ``fraction * min(width, height)``."""
    w, h = img.size
    side = max(1, int(round(fraction * min(w, h))))
    left, top = (w - side) // 2, (h - side) // 2
    return img.crop((left, top, left + side, top + side))


def preprocess(
    source: str | Path | bytes | Image.Image,
    mode: str = "efficientnet",
    size: int = 224,
    crop: float | None = None,
) -> np.ndarray:
    """Return a float32 NHWC batch ``[1, size, size, 3]`` ready for the model.

    ``crop`` overrides the mode's centre-crop fraction (``1.0`` = no crop). It
    matters more than one might think: on ``grace_hopper.jpg`` EfficientNet-Lite0
    says "academic gown" with the standard 87.5 % crop and "military uniform"
    without it.
    """
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; choose one of {MODES}")
    img = source if isinstance(source, Image.Image) else load_rgb(source)
    img = img.convert("RGB")
    fraction = 1.0 if crop is None else crop
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"crop fraction must be in (0, 1], got {fraction}")
    if fraction < 1.0:
        img = center_crop(img, fraction)
    img = img.resize((size, size), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32)
    if mode == "article":
        x = x / 255.0
    elif mode == "efficientnet":
        x = (x - 127.0) / 128.0
    else:
        x = x / 127.5 - 1.0
    return x[None].astype(np.float32)
