"""`predict --model FILE.pb --labels FILE|N`: a user's own graph, whatever its class count.

The labels come from a file (one per line), a count N (numbered labels) or, by default,
the model's output width (ImageNet's names for 1000 and 1001). Real graphs in the real
guest: the kit's own EfficientNet-Lite0 passed as a path (1000 classes, refused before this
option existed) and a small 10-class graph written with `GraphBuilder`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wasi_lab.models.graphdef import GraphBuilder
from wasi_lab.models.labels import LabelsError, labels_for, resolve_labels
from wasi_lab.models.registry import get_model
from wasi_lab.paths import REPO_ROOT
from wasi_lab.predict import Classifier

NAMES = [f"shade {c}" for c in "abcdefghij"]


def predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wasi_lab", "predict", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )


@pytest.fixture(scope="module")
def bundled() -> Path:
    """The kit's EfficientNet-Lite0 as a plain path (what a learner may pass)."""
    from wasi_lab.models.registry import ensure_model

    return ensure_model("efficientnet-lite0", progress=False)


@pytest.fixture(scope="module")
def ten_class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """224x224x3 -> mean colour -> 10 scores -> Softmax: a 10-class model."""
    g = GraphBuilder()
    x = g.placeholder("input", [1, 224, 224, 3])
    m = g.op("Mean", "mean", [x, g.const("axes", np.array([1, 2], np.int32))], keep_dims=False)
    w = np.random.default_rng(7).standard_normal((3, 10)).astype(np.float32) * 4
    mm = g.op("MatMul", "logits", [m, g.const("w", w)])
    g.op("Softmax", "probs", [mm])
    path = tmp_path_factory.mktemp("model") / "shades.pb"
    path.write_bytes(g.to_bytes())
    return path


def test_the_bundled_pb_as_a_path_classifies(bundled: Path) -> None:
    assert get_model(str(bundled)).directory is not None  # the user-file path, not the name
    out = predict("--model", str(bundled), "--top", "2", "images/grace_hopper.jpg")
    assert out.returncode == 0, out.stderr
    assert "military uniform  [652]" in out.stdout


@pytest.mark.parametrize(
    "labels,line",
    [
        (
            "1001",
            "--labels 1001: 1001 classes, but the model has 1000 outputs (pass --labels 1000, "
            "or leave it out to infer the labels)",
        ),
        (
            "999.txt",
            "--labels {dir}/999.txt: 999 labels (one per line), but the model has 1000 outputs",
        ),
    ],
)
def test_labels_that_do_not_fit_get_one_line(
    bundled: Path, tmp_path: Path, labels: str, line: str
) -> None:
    (tmp_path / "999.txt").write_text("".join(f"{n}\n" for n in labels_for(1000)[:999]))
    arg = str(tmp_path / labels) if labels.endswith(".txt") else labels
    out = predict("--model", str(bundled), "--labels", arg, "images/grace_hopper.jpg")
    assert out.returncode == 1
    assert out.stderr.splitlines() == ["wasi-lab predict: " + line.format(dir=tmp_path)]
    assert out.stdout == ""


def test_ten_classes_numbered_by_default_and_named_by_a_file(
    ten_class: Path, tmp_path: Path
) -> None:
    image = REPO_ROOT / "images" / "grace_hopper.jpg"
    numbered = Classifier(ten_class)
    assert numbered.output_len == 10 and numbered.labels == tuple(f"class {i}" for i in range(10))
    best = numbered.classify(image, top=3)
    assert [t.label for t in best.top] == [f"class {t.index}" for t in best.top]
    assert abs(sum(numbered.infer_tensor(numbered.preprocess(image))) - 1) < 1e-5

    names = tmp_path / "shades.txt"
    names.write_text("\n".join(NAMES) + "\n", encoding="utf-8")
    named = Classifier(ten_class, labels=str(names)).classify(image, top=3)
    assert [(t.index, t.label) for t in named.top] == [(t.index, NAMES[t.index]) for t in best.top]
    assert [t.prob for t in named.top] == [t.prob for t in best.top]
    out = predict("--model", str(ten_class), "--labels", str(names), "--top", "1", str(image))
    assert out.returncode == 0, out.stderr
    assert f"{NAMES[best.top[0].index]}  [{best.top[0].index}]" in out.stdout


def test_ten_classes_refuse_the_imagenet_count(ten_class: Path) -> None:
    with pytest.raises(LabelsError, match="1000 classes, but the model has 10 outputs"):
        Classifier(ten_class, labels="1000")
    assert Classifier(ten_class, labels=10).labels[9] == "class 9"


def test_default_labels_follow_the_output_width() -> None:
    assert resolve_labels(None, 1000) == labels_for(1000)
    assert resolve_labels(None, 1001)[0] == "background"
    assert resolve_labels(None, 3) == ("class 0", "class 1", "class 2")
    assert resolve_labels(" 3 ", 3) == ("class 0", "class 1", "class 2")


@pytest.mark.parametrize(
    "content,message",
    [
        (b"a\n\nc\n", "line 2 is empty"),
        (b"a\nb\xff\nc\n", "not a UTF-8 text file"),
        (b"a\nb\n", "2 labels (one per line), but the model has 3 outputs"),
        (None, "not found"),
    ],
)
def test_bad_label_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "labels.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LabelsError, match=re.escape(message)):
        resolve_labels(path, 3)


def test_a_labels_file_with_windows_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(b"one\r\ntwo\r\nthree")
    assert resolve_labels(path, 3) == ("one", "two", "three")
    with pytest.raises(LabelsError, match="at least one"):
        resolve_labels(0, 3)
