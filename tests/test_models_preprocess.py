"""Preprocessing modes and label layouts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wasi_lab.models.labels import imagenet_labels, labels_for, top_k
from wasi_lab.models.preprocess import center_crop, preprocess


@pytest.fixture()
def gradient() -> Image.Image:
    """A 400x300 image: red rises left→right, green top→bottom, blue constant 255."""
    w, h = 400, 300
    r = np.tile(np.linspace(0, 255, w), (h, 1))
    g = np.tile(np.linspace(0, 255, h)[:, None], (1, w))
    b = np.full((h, w), 255.0)
    return Image.fromarray(np.stack([r, g, b], -1).round().astype(np.uint8))


def test_modes_scale_as_documented(gradient: Image.Image) -> None:
    art = preprocess(gradient, "article")
    eff = preprocess(gradient, "efficientnet")
    inc = preprocess(gradient, "inception")
    for x in (art, eff, inc):
        assert x.shape == (1, 224, 224, 3) and x.dtype == np.float32
    np.testing.assert_allclose(art[..., 2], 1.0)  # 255 / 255
    np.testing.assert_allclose(eff[..., 2], 1.0)  # (255 - 127) / 128
    np.testing.assert_allclose(inc[..., 2], 1.0, atol=1e-6)  # 255 / 127.5 - 1
    assert 0 <= art.min() and art.max() <= 1
    assert -1 <= eff.min() and -1 <= inc.min()
    # Every mode keeps the whole width: the red channel spans (almost) its full range;
    # asking for the TF crop sees only the central 87.5 % of the short side.
    assert art[0, 112, 0, 0] < 0.02 and art[0, 112, -1, 0] > 0.98
    assert eff[0, 112, 0, 0] < -0.95
    cropped = preprocess(gradient, "efficientnet", crop=0.875)
    assert cropped[0, 112, 0, 0] > -0.8  # red 44 at the crop edge, not 0


def test_center_crop_geometry(gradient: Image.Image) -> None:
    crop = center_crop(gradient)
    assert crop.size == (262, 262)  # round(0.875 * 300)
    full = preprocess(gradient, "efficientnet", crop=1.0)
    assert full[0, 0, 0, 1] < -0.9  # top row visible again (green = 0)
    with pytest.raises(ValueError, match="crop"):
        preprocess(gradient, "efficientnet", crop=0)
    with pytest.raises(ValueError, match="unknown preprocessing mode"):
        preprocess(gradient, "caffe")


def test_grey_and_encoded_inputs(gradient: Image.Image) -> None:
    import io

    buf = io.BytesIO()
    gradient.convert("L").save(buf, format="PNG")
    x = preprocess(buf.getvalue(), "inception")
    assert x.shape == (1, 224, 224, 3)
    np.testing.assert_array_equal(x[..., 0], x[..., 1])


def test_labels() -> None:
    names = imagenet_labels()
    assert len(names) == 1000
    assert names[652] == "military uniform"
    assert names[967] == "espresso"
    assert names[0] == "tench"
    slim = labels_for(1001)
    assert slim[0] == "background" and slim[653] == "military uniform"
    with pytest.raises(ValueError):
        labels_for(1002)


def test_top_k() -> None:
    p = np.zeros(1001)
    p[653], p[1] = 0.7, 0.2
    assert top_k(p, 2, kind=1001) == [(653, "military uniform", 0.7), (1, "tench", 0.2)]
    with pytest.raises(ValueError, match="1001 scores"):
        top_k(p, kind=1000)
