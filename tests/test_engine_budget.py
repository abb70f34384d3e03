"""The model's byte budget counts what is really held: a convolution's unpacked weights are
freed once they are packed, and go back to the budget (they used to stay charged, so
ResNet50's 98 MiB of weights counted three times and the model was refused)."""

from __future__ import annotations

import struct

from tests.test_redteam_guest import load, node, raw_const
from wasi_lab.models.graphdef import DataType, TensorShape
from wasi_lab.runtime import Guest

MiB = 1 << 20


def test_packed_convolutions_give_their_unpacked_copies_back(module_path) -> None:
    """A 39 MiB filter used by three convolutions: held are the constant, three copies and,
    while each is packed, one packed copy besides: 5 x 39 = 195 MiB, under the 256 MiB
    budget. Charging every packed copy on top of the unpacked ones it replaces made 273."""
    c = 3200
    assert 5 * c * c * 4 < 256 * MiB < 7 * c * c * 4
    nodes = node(
        "Placeholder", "input", [], dtype=DataType.DT_FLOAT, shape=TensorShape([1, 1, 1, c])
    ) + raw_const("w", 1, [1, 1, c, c], b"\x2d" + struct.pack("<f", 1e-4))
    prev = "input"
    for i in range(3):
        nodes += node("Conv2D", f"conv{i}", [prev, "w"], strides=[1, 1, 1, 1], padding="VALID")
        prev = f"conv{i}"
    load(Guest(module_path), nodes + node("Softmax", "prob", [prev]))
