"""The guest's preprocessing against an independent NumPy/PIL reference, on images that vary.

A uniform image cannot tell `(x - 127) / 128` from `x / 127.5 - 1` well (they meet at 255),
and nothing else in the suite compares the guest's tensor with a reference value by value, so
a swapped formula used to pass every test. Here each mode's formula is written out once, from
the article and the models' papers, and applied to pixels PIL decoded; the guest's
`decode_image` output must match it:

* exactly (1e-6) on 224x224 PNGs, where no resize happens and PNG decoding is lossless;
* on a JPEG and on a PNG that must be resized, where the decoders and filters differ by a
  level here and there, by the mean signed difference (a swapped formula shifts every value
  the same way) and by the guest's values mapping back to whole 0..255 levels.

Each check also proves it can fail: the same comparison must reject the *other* modes'
formulas applied to the same pixels.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from wasi_lab.models.preprocess import preprocess as host_preprocess
from wasi_lab.predict import MODE_IDS
from wasi_lab.runtime import Guest

SIDE = 224

#: value map per mode, and its inverse (tensor value -> 0..255 level)
FORMULAS: dict[
    str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
] = {
    "article": (lambda x: x / 255.0, lambda t: t * 255.0),
    "efficientnet": (lambda x: (x - 127.0) / 128.0, lambda t: t * 128.0 + 127.0),
    "inception": (lambda x: x / 127.5 - 1.0, lambda t: (t + 1.0) * 127.5),
}
#: one 0..255 level in each mode's units
LEVEL = {"article": 1 / 255, "efficientnet": 1 / 128, "inception": 1 / 127.5}


def gradient_noise(width: int, height: int, seed: int = 1) -> np.ndarray:
    """RGB ramps in three different directions plus noise: every level 0..255 occurs, and the
    three channels differ (so a BGR/RGB swap or a transposed layout shows too)."""
    y, x = np.mgrid[0:height, 0:width]
    ramps = np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)],
        axis=-1,
    ).astype(np.int16)
    noise = np.random.default_rng(seed).integers(-40, 41, ramps.shape)
    return np.clip(ramps + noise, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str, mode: str | None = None, **kw: object) -> bytes:
    img = Image.fromarray(pixels)
    if mode is not None:
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def reference(data: bytes, mode: str) -> np.ndarray:
    """PIL decodes and stretches to 224x224 (bilinear); the mode's formula maps the levels."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if img.size != (SIDE, SIDE):
        img = img.resize((SIDE, SIDE), Image.BILINEAR)
    forward, _ = FORMULAS[mode]
    return forward(np.asarray(img, dtype=np.float64))[None].astype(np.float32)


@pytest.fixture(scope="module")
def guest() -> Guest:
    return Guest()


def guest_tensor(guest: Guest, data: bytes, mode: str) -> np.ndarray:
    w, h, tensor = guest.decode_image(data, MODE_IDS[mode])
    assert (w, h) == Image.open(io.BytesIO(data)).size
    return tensor


def exact_match(t: np.ndarray, ref: np.ndarray) -> bool:
    return t.shape == ref.shape and float(np.abs(t - ref).max()) <= 1e-6


def close_match(t: np.ndarray, ref: np.ndarray, mode: str) -> bool:
    """Decoder/filter noise is a fraction of a level and unbiased; a formula is a shift."""
    level = LEVEL[mode]
    diff = t.astype(np.float64) - ref
    return (
        t.shape == ref.shape
        and abs(float(diff.mean())) < 0.12 * level
        and float(np.abs(diff).mean()) < 0.4 * level
    )


def whole_levels(t: np.ndarray, mode: str) -> bool:
    """The guest's values, mapped back with this mode's inverse, are whole levels in 0..255:
    true for the right formula whatever the decoder did, false for any other one."""
    levels = FORMULAS[mode][1](t.astype(np.float64))
    return bool(
        levels.min() > -1e-3
        and levels.max() < 255 + 1e-3
        and np.abs(levels - np.round(levels)).max() < 1e-3
    )


LOSSLESS = {
    "rgb": lambda: encode(gradient_noise(SIDE, SIDE), "PNG"),
    "rgba": lambda: encode(
        np.dstack([gradient_noise(SIDE, SIDE, 2), gradient_noise(SIDE, SIDE, 3)[..., :1]]), "PNG"
    ),
    "grey": lambda: encode(gradient_noise(SIDE, SIDE, 4), "PNG", mode="L"),
}


@pytest.mark.parametrize("mode", list(FORMULAS))
@pytest.mark.parametrize("kind", list(LOSSLESS))
def test_guest_matches_the_formula_exactly_on_a_224_png(guest: Guest, kind: str, mode: str) -> None:
    data = LOSSLESS[kind]()
    t = guest_tensor(guest, data, mode)
    ref = reference(data, mode)
    assert np.ptp(FORMULAS[mode][1](ref)) > 250, "the image must span the whole range"
    assert exact_match(t, ref), f"max diff {np.abs(t - ref).max():.3g}"
    assert whole_levels(t, mode)
    for other in FORMULAS.keys() - {mode}:
        assert not exact_match(t, reference(data, other)), f"{mode} looks like {other}"
        assert not whole_levels(t, other), f"{mode} maps back like {other}"


@pytest.mark.parametrize("mode", list(FORMULAS))
def test_host_reference_module_agrees_with_the_formulas(mode: str) -> None:
    """wasi_lab.models.preprocess (what notebooks compare against) uses the same formulas."""
    data = LOSSLESS["rgb"]()
    assert exact_match(host_preprocess(data, mode), reference(data, mode))


LOSSY = {
    "jpeg 224x224": lambda: encode(gradient_noise(SIDE, SIDE, 5), "JPEG", quality=90),
    "png 301x187 (resized)": lambda: encode(gradient_noise(301, 187, 6), "PNG"),
    "jpeg 640x480 (resized)": lambda: encode(gradient_noise(640, 480, 7), "JPEG", quality=85),
}


@pytest.mark.parametrize("mode", list(FORMULAS))
@pytest.mark.parametrize("kind", list(LOSSY))
def test_guest_matches_the_formula_through_decoder_and_resize(
    guest: Guest, kind: str, mode: str
) -> None:
    data = LOSSY[kind]()
    t = guest_tensor(guest, data, mode)
    ref = reference(data, mode)
    diff = t - ref
    assert close_match(t, ref, mode), (
        f"mean diff {diff.mean() / LEVEL[mode]:.3f} levels, "
        f"mean |diff| {np.abs(diff).mean() / LEVEL[mode]:.3f} levels"
    )
    assert whole_levels(t, mode)
    for other in FORMULAS.keys() - {mode}:
        assert not close_match(t, reference(data, other), mode), f"{mode} looks like {other}"
        assert not whole_levels(t, other), f"{mode} maps back like {other}"
