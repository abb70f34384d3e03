"""The article reproduction table: every figure present, measured for real, nothing faked."""

from __future__ import annotations

import json
import math

import pytest

from wasi_lab.article import (
    MEASURED,
    NEEDS_NETWORK,
    STAND_IN,
    UNAVAILABLE,
    ArticleRow,
    article_table,
    format_table,
    mobilenet_present,
    rows_to_json,
)
from wasi_lab.cli import main

#: What the article printed, in order: one row each.
ARTICLE_FIGURES = [
    "ThreadPoolBuildError", "Some((0.32560226, 654))", "military uniform", "golden retriever",
    "Eskimo dog, husky", "832 ms / 541 ms", "774.715145ms", "723.531083ms",
]


@pytest.fixture(scope="module")
def rows() -> list[ArticleRow]:
    return article_table(repeat=2)


def test_one_row_per_article_figure(rows):
    assert len(rows) == len(ARTICLE_FIGURES)
    for row, figure in zip(rows, ARTICLE_FIGURES, strict=True):
        assert figure in row.article
        assert row.status in (MEASURED, STAND_IN, NEEDS_NETWORK, UNAVAILABLE)
        assert row.how and row.note


def test_measured_values_are_numbers_and_gaps_stay_empty(rows):
    for row in rows:
        if row.status in (NEEDS_NETWORK, UNAVAILABLE):
            # Never a plausible-looking number where nothing was measured.
            assert row.value is None and row.this_machine is None, row
        elif row.unit != "text":
            assert isinstance(row.value, float), row
            assert math.isfinite(row.value) and row.value > 0, row
            assert row.this_machine
        if row.status == NEEDS_NETWORK:
            assert "wasi-lab" in row.note  # says how to get what is missing


def test_needs_network_rows_without_the_article_model(rows):
    if mobilenet_present():
        pytest.skip("MobileNet V2 1.4 is on disk: those rows are measured instead")
    by_fig = dict(zip(ARTICLE_FIGURES, rows, strict=True))
    for key in ("Some((0.32560226, 654))", "golden retriever", "Eskimo dog, husky"):
        assert by_fig[key].status == NEEDS_NETWORK
        assert "mobilenet-v2-1.4" in by_fig[key].note
    uniform = by_fig["military uniform"]
    assert uniform.status == STAND_IN
    assert uniform.this_machine.startswith("military uniform")
    assert "different model" in uniform.note


def test_timings_rows(rows):
    by_fig = dict(zip(ARTICLE_FIGURES, rows, strict=True))
    inst = by_fig["774.715145ms"]
    assert inst.status == MEASURED and inst.unit == "ms"
    assert inst.article_value == pytest.approx(774.715145)
    for key in ("832 ms / 541 ms", "723.531083ms"):
        assert by_fig[key].unit == "ms"
        assert by_fig[key].status in (MEASURED, STAND_IN)


def test_rayon_panic_row(rows):
    row = rows[0]
    if row.status == UNAVAILABLE:
        assert row.value is None and row.note  # says why (no toolchain, build failed ...)
        return
    assert row.status == MEASURED
    assert "The global thread pool has not been initialized" in row.this_machine
    assert "operation not supported on this platform" in row.this_machine


def test_json_and_text(rows):
    data = json.loads(rows_to_json(rows))
    assert [d["article"] for d in data] == [r.article for r in rows]
    assert set(data[0]) == {"figure", "article", "article_value", "this_machine", "value",
                            "unit", "how", "status", "note"}
    text = format_table(rows)
    for i, r in enumerate(rows, 1):
        assert f"{i}. how:" in text
        assert r.status in text


def test_your_own_photo_fills_a_row(tmp_path):
    from wasi_lab.images import SAMPLES, sample_source

    cat = sample_source(next(s for s in SAMPLES if s.file == "chelsea.png"))
    rows = article_table(golden_retriever=cat, repeat=1, build_rayon=False, node=False)
    row = rows[3]
    assert row.status in (MEASURED, STAND_IN)
    assert isinstance(row.value, float) and 0 < row.value <= 1
    assert "cat" in row.this_machine  # Chelsea is a tabby: the model says some kind of cat


@pytest.mark.skipif(not mobilenet_present(), reason="needs network: "
                    "`wasi-lab models fetch mobilenet-v2-1.4`")
def test_article_model_reproduces_the_result_line():
    from wasi_lab.hosts import grace_hopper
    from wasi_lab.predict import Classifier

    top = Classifier("mobilenet-v2-1.4").classify(grace_hopper(), top=1, mode="article").top[0]
    assert top.index == 654 and top.label == "military uniform"
    assert top.prob == pytest.approx(0.32560226, abs=0.03)


def test_cli_article_json(capsys):
    assert main(["article", "--json", "--no-build", "--repeat", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == len(ARTICLE_FIGURES)
