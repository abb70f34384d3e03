"""The model registry: building EfficientNet into models/ once, listing, user files."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from wasi_lab.models.efficientnet import OUTPUT_NAME
from wasi_lab.models.fetch import MOBILENET_SHA256, ModelError
from wasi_lab.models.graphdef import GraphBuilder, parse_graphdef
from wasi_lab.models.registry import MODELS, ensure_model, get_model, list_models, model_path
from wasi_lab.paths import MODELS_DIR


@pytest.fixture(scope="module")
def efficientnet_pb() -> Path:
    return ensure_model("efficientnet-lite0", progress=False)


def test_ensure_builds_into_models_dir(efficientnet_pb: Path) -> None:
    assert efficientnet_pb == MODELS_DIR / "efficientnet-lite0.pb"
    graph = parse_graphdef(efficientnet_pb.read_bytes())
    assert graph.nodes[-1].name == OUTPUT_NAME
    assert efficientnet_pb.with_suffix(".onnx").stat().st_size > 10_000_000
    assert not [p for p in MODELS_DIR.iterdir() if p.name.endswith(".tmp")]


def test_ensure_is_idempotent_and_quick(efficientnet_pb: Path) -> None:
    before = efficientnet_pb.stat().st_mtime_ns
    start = time.perf_counter()
    assert ensure_model("efficientnet-lite0", progress=False) == efficientnet_pb
    assert time.perf_counter() - start < 0.5
    assert efficientnet_pb.stat().st_mtime_ns == before


def test_stale_stamp_triggers_rebuild(efficientnet_pb: Path) -> None:
    stamp = efficientnet_pb.with_name(efficientnet_pb.name + ".stamp.json")
    data = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**data, "converter": -1}))
    os.utime(efficientnet_pb, ns=(0, 0))
    ensure_model("efficientnet-lite0", progress=False)
    assert efficientnet_pb.stat().st_mtime_ns > 0
    assert json.loads(stamp.read_text()) == data


def test_list_models(efficientnet_pb: Path) -> None:
    rows = {r["name"]: r for r in list_models()}
    assert set(rows) == {"efficientnet-lite0", "mobilenet-v2-1.4"}
    eff = rows["efficientnet-lite0"]
    assert eff["present"] is True and eff["size"] == efficientnet_pb.stat().st_size
    assert "storage.googleapis.com" in str(rows["mobilenet-v2-1.4"]["source"])


def test_specs() -> None:
    eff, mob = MODELS["efficientnet-lite0"], MODELS["mobilenet-v2-1.4"]
    assert (eff.labels, eff.preprocess, eff.input, eff.input_size) == (
        1000,
        "efficientnet",
        "input",
        224,
    )
    assert (mob.labels, mob.preprocess, mob.sha256) == (1001, "inception", MOBILENET_SHA256)
    assert mob.output == "MobilenetV2/Predictions/Reshape_1"
    assert model_path("mobilenet-v2-1.4") == MODELS_DIR / "mobilenet_v2_1.4_224_frozen.pb"


def test_user_model_by_path(tmp_path: Path) -> None:
    g = GraphBuilder()
    g.op("Softmax", "probs", [g.placeholder("input", [1, 3])])
    pb = tmp_path / "mine.pb"
    pb.write_bytes(g.to_bytes())
    spec = get_model(str(pb))
    assert (spec.name, spec.output, spec.path) == ("mine", "probs", pb.resolve())
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff\xff\xff")
    with pytest.raises(ModelError, match="not a TensorFlow frozen graph"):
        get_model(str(junk))
    with pytest.raises(ModelError, match="unknown model"):
        get_model("resnet-9000")
