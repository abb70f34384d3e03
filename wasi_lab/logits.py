"""The network's raw scores, before its Softmax: for notebook 04's "softmax by hand".

The kit's models end in a Softmax (EfficientNet-Lite0: `.../Predictions/Softmax`; MobileNet:
a Reshape after it), and `Classifier` reads that node. The guest can read any node instead
(`load_model_with_output`), so `LogitsProbe` loads the same graph a second time in the
classifier's own guest with the Softmax's *input* as output: the logits. Softmax of those,
computed in NumPy, must give the probabilities the guest returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wasi_lab.models.graphdef import Graph, parse_graphdef
from wasi_lab.predict import Classifier, infer_tensor_on, resolve_mode

#: Ops that pass a tensor through unchanged in value (walked back over from the output).
_PASS_THROUGH = ("Reshape", "Identity", "Squeeze")


def logits_node(graph: Graph, output: str) -> str:
    """The name of the node that feeds the Softmax behind `output`."""
    node = graph.node(output)
    seen = set()
    while node.op in _PASS_THROUGH and node.name not in seen:
        seen.add(node.name)
        node = graph.node(node.inputs[0].split(":")[0].lstrip("^"))
    if node.op != "Softmax":
        raise ValueError(f"{output!r} is not a Softmax (it is a {node.op}): no logits before it")
    return node.inputs[0].split(":")[0]


@dataclass
class LogitsProbe:
    """A second handle on the classifier's model whose output is the logits."""

    clf: Classifier
    node: str
    handle: int
    output_len: int

    @classmethod
    def attach(cls, clf: Classifier) -> LogitsProbe:
        model = Path(clf.model_path).read_bytes()
        node = logits_node(parse_graphdef(model), clf.spec.output)
        g = clf.guest
        ptr = g.write_bytes(model, "model")
        name = node.encode()
        nptr = g.write_bytes(name, "output name")
        try:
            handle = g.call("load_model_with_output", ptr, len(model), nptr, len(name))
        finally:
            g.dealloc(nptr, len(name))
            g.dealloc(ptr, len(model))
        return cls(clf, node, handle, g.call("model_output_len", handle))

    def logits(self, image: bytes | str | Path, mode: str = "model") -> np.ndarray:
        """Raw scores for one image: preprocess as `Classifier.classify` does, run to the
        logits node, copy the floats out of linear memory."""
        resolve_mode(mode, self.clf.spec)  # same errors as classify for a bad mode
        return infer_tensor_on(
            self.clf.guest, self.handle, self.output_len, self.clf.preprocess(image, mode), "logits"
        )

    def free(self) -> None:
        """Drop the second copy of the weights from the guest."""
        self.clf.guest.call("free_model", self.handle)
