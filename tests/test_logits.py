"""Logits before the Softmax, read from the real guest: softmax of them is what classify says."""

from __future__ import annotations

import numpy as np
import pytest

from wasi_lab.logits import LogitsProbe, logits_node
from wasi_lab.models.graphdef import Graph, Node
from wasi_lab.predict import Classifier


def test_softmax_of_the_logits_is_the_guests_probabilities(grace_hopper_bytes: bytes) -> None:
    clf = Classifier("efficientnet-lite0")
    probe = LogitsProbe.attach(clf)
    assert probe.node.endswith("BiasAdd") and probe.output_len == 1000
    z = probe.logits(grace_hopper_bytes)
    e = np.exp(z - z.max())
    mine = e / e.sum()
    pred = clf.classify(grace_hopper_bytes, top=1)
    assert int(np.argmax(z)) == pred.top[0].index
    assert mine.max() == pytest.approx(pred.top[0].prob, rel=1e-5)
    assert not np.allclose(z.sum(), 1.0), "these are scores, not probabilities"
    with pytest.raises(ValueError, match="unknown mode"):
        probe.logits(grace_hopper_bytes, mode="nope")
    probe.free()
    assert clf.classify(grace_hopper_bytes, top=1).label == pred.label


def test_logits_node_walks_back_over_reshapes() -> None:
    g = Graph(
        [
            Node("x", "Placeholder"),
            Node("fc/BiasAdd", "BiasAdd", ["x", "b"]),
            Node("sm", "Softmax", ["fc/BiasAdd"]),
            Node("out", "Reshape", ["sm", "shape"]),
        ]
    )
    assert logits_node(g, "out") == "fc/BiasAdd"
    with pytest.raises(ValueError, match="not a Softmax"):
        logits_node(g, "fc/BiasAdd")
