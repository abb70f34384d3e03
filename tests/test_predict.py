"""Predictions from the real wasm guest on the real bundled model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from wasi_lab.models.reference import run_graph
from wasi_lab.pngs import make_png
from wasi_lab.predict import Classifier, GuestBuffers
from wasi_lab.runtime import BadImageError, GuestTrap


@pytest.fixture(scope="module")
def clf() -> Classifier:
    return Classifier("efficientnet-lite0")


def test_grace_hopper_is_a_military_uniform(clf: Classifier, grace_hopper_bytes) -> None:
    pred = clf.classify(grace_hopper_bytes, top=5)
    assert pred.top[0].label == "military uniform" and pred.top[0].index == 652
    probs = [t.prob for t in pred.top]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert set(pred.timings_ms) >= {
        "compile",
        "instantiate",
        "load_model",
        "write",
        "decode",
        "infer",
    }
    assert pred.pages["after_infer"] >= pred.pages["after_load"] > 0
    assert pred.image_size == (512, 600)


def test_guest_output_matches_the_numpy_reference(clf: Classifier, grace_hopper_bytes) -> None:
    from wasi_lab.models.graphdef import parse_graphdef

    tensor = clf.preprocess(grace_hopper_bytes)
    ours = clf.infer_tensor(tensor)
    graph = parse_graphdef(clf.model_path.read_bytes())
    (ref,) = run_graph(graph, {clf.spec.input: tensor}, [clf.spec.output])
    assert np.abs(ours - ref.reshape(-1)).max() <= 1e-4


def test_article_mode_differs_but_still_classifies(clf: Classifier, grace_hopper_bytes) -> None:
    model = clf.classify(grace_hopper_bytes, mode="model")
    article = clf.classify(grace_hopper_bytes, mode="article")
    assert article.mode == "article" and model.mode == "efficientnet"
    assert article.top[0].prob != pytest.approx(model.top[0].prob, abs=1e-3)


def test_bad_image_is_a_clear_error_and_the_classifier_keeps_working(
    clf: Classifier, grace_hopper_bytes
) -> None:
    with pytest.raises(BadImageError):
        clf.classify(b"\xff\xd8\xff garbage")
    with pytest.raises(BadImageError):
        clf.classify(grace_hopper_bytes[:200])
    assert clf.classify(grace_hopper_bytes).label == "military uniform"
    assert clf.guest.call("live_allocations") == 0


def test_every_buffer_lent_to_the_guest_is_given_back(clf: Classifier, grace_hopper_bytes) -> None:
    """Each entry point's buffers go back to the guest on success and on a refused input:
    the allocator's live blocks are the same before and after."""
    before = dict(clf.guest.allocations)
    clf.classify(grace_hopper_bytes)
    clf.profile(clf.preprocess(grace_hopper_bytes))
    with pytest.raises(BadImageError):
        clf.classify(b"not an image at all")
    assert clf.guest.allocations == before
    with pytest.raises(BadImageError), GuestBuffers(clf.guest) as buf:
        ptr = buf.write(b"nope", "image")
        assert ptr in clf.guest.allocations
        clf.guest.call("decode_image", ptr, 4, 0, buf.alloc(clf.guest.call("decoded_len")))
    assert clf.guest.allocations == before


def test_a_trap_is_recovered_by_reset(clf: Classifier, grace_hopper_bytes) -> None:
    with pytest.raises(GuestTrap):
        clf.guest.call("trap_for_tests")
    clf.reset()
    assert clf.classify(grace_hopper_bytes).label == "military uniform"


def test_top_k_bounds(clf: Classifier) -> None:
    with pytest.raises(ValueError):
        clf.classify(make_png(8, 8), top=0)


def test_predict_cli_json(tmp_path, grace_hopper_bytes) -> None:
    img = tmp_path / "grace_hopper.jpg"
    img.write_bytes(grace_hopper_bytes)
    out = subprocess.run(
        [sys.executable, "-m", "wasi_lab", "predict", str(img), "--json", "--top", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["model"] == "efficientnet-lite0" and row["mode"] == "efficientnet"
    assert row["top"][0]["label"] == "military uniform" and len(row["top"]) == 3
    assert {"index", "label", "prob"} == set(row["top"][0])
    assert row["timings_ms"]["infer"] > 0


def test_predict_cli_missing_image_fails_cleanly(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "wasi_lab", "predict", str(tmp_path / "nope.jpg")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1 and "not found" in out.stderr
