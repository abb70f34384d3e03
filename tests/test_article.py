"""The article reproduction table: every figure present, measured for real, nothing faked."""

from __future__ import annotations

import json
import math

import pytest

from wasi_lab.cli import main
from wasi_lab.rayon_lesson import ARTICLE_PANIC, panic_note
from wasi_lab.reproduction import (
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

#: What the article printed, in order: one row each.
ARTICLE_FIGURES = [
    "ThreadPoolBuildError",
    "Some((0.32560226, 654))",
    "military uniform",
    "golden retriever",
    "Eskimo dog, husky",
    "832 ms / 541 ms",
    "774.715145ms",
    "723.531083ms",
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
    for key in ("golden retriever", "Eskimo dog, husky"):
        assert by_fig[key].status == NEEDS_NETWORK
        assert "mobilenet-v2-1.4" in by_fig[key].note
    # The file-reading guest runs for real on the bundled model (notebook 01's host).
    result = by_fig["Some((0.32560226, 654))"]
    assert result.status == STAND_IN, result
    assert result.this_machine == f"Some(({result.value:.8f}, 653))"  # military uniform, 1-based
    assert "military uniform" in result.note and "mobilenet-v2-1.4" in result.note
    uniform = by_fig["military uniform"]
    assert uniform.status == STAND_IN
    assert uniform.this_machine.startswith("military uniform")
    assert "different model" in uniform.note


def test_timings_rows(rows):
    by_fig = dict(zip(ARTICLE_FIGURES, rows, strict=True))
    inst = by_fig["774.715145ms"]
    assert inst.status == MEASURED and inst.unit == "ms"
    assert inst.article_value == pytest.approx(774.715145)
    # Like for like: the article's server compiled the module on every request, so the row
    # is a cold compile plus an instantiation, not the instantiation alone.
    assert "cold Cranelift compile" in inst.how and inst.value > 10 * 0.66
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
    assert set(data[0]) == {
        "figure",
        "article",
        "article_value",
        "this_machine",
        "value",
        "unit",
        "how",
        "status",
        "note",
    }
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


@pytest.mark.skipif(
    not mobilenet_present(), reason="needs network: `wasi-lab models fetch mobilenet-v2-1.4`"
)
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


def _row(
    figure: str,
    article: str,
    article_value: float | None,
    this: str | None,
    value: float | None,
    status: str,
) -> ArticleRow:
    return ArticleRow(
        figure=figure,
        article=article,
        article_value=article_value,
        this_machine=this,
        value=value,
        unit="ms",
        how="how",
        status=status,
        note="no rayon-demo build: run `wasi-lab build --features rayon-demo`",
    )


def test_what_to_notice_is_built_from_the_rows():
    from types import SimpleNamespace

    from wasi_lab.reproduction import what_to_notice

    rows = [
        _row("image crate's rayon panic under `wasmtime run`", "x", None, None, None, UNAVAILABLE),
        _row(
            "class of grace_hopper.jpg",
            "military uniform (32.6%)",
            0.33,
            "military uniform (38.2%)",
            0.38,
            STAND_IN,
        ),
        _row(
            "module instantiation time (wasmtime host)",
            "774.715145ms",
            774.715145,
            "1234 ms",
            1234.5,
            MEASURED,
        ),
        _row(
            "inference time (wasmtime host)",
            "723.531083ms",
            723.531083,
            "480.0 ms",
            480.0,
            STAND_IN,
        ),
    ]
    timings = SimpleNamespace(compile_cold_ms=1234.0, instantiate_ms=0.5)
    text = "\n".join(what_to_notice(rows, timings))
    assert "not reproduced here" in text and "notebook 01" in text
    assert "a different model: military uniform (38.2%) (the same class)" in text
    assert "this machine 1234 ms" in text  # compile + instantiate, from the row
    assert "0.50 ms, 1,549 times less" in text  # 774.7 / 0.5, from the timings
    assert "rough comparison" in text
    assert "1 of 4 rows are empty" in text
    # Another machine, other sentences: nothing is fixed in advance.
    rows[1] = _row(
        "class of grace_hopper.jpg",
        "military uniform (32.6%)",
        0.33,
        "bulletproof vest (20.0%)",
        0.2,
        MEASURED,
    )
    rows[0] = _row(
        "image crate's rayon panic under `wasmtime run`", "x", None, ARTICLE_PANIC, None, MEASURED
    )
    text = "\n".join(what_to_notice(rows))
    assert "(a different class)" in text and "the article's model" in text
    assert "starts like the article's" in text and "times less" not in text


def test_panic_note_reads_the_message():
    assert "same io error text" in panic_note(ARTICLE_PANIC)
    assert "kind: Unsupported" in panic_note(
        'ThreadPoolBuildError { kind: IOError(Error { kind: Unsupported, message: "..." }) }'
    )
    assert "Unsupported" not in panic_note(ARTICLE_PANIC)


def test_text_table_fits_a_notebook():
    rows = article_table(repeat=1, build_rayon=False, node=False)
    table = format_table(rows).split("\n\n")[0]  # the table, not the notes under it
    assert len(table.splitlines()) == 2 + len(rows)
    assert max(len(line) for line in table.splitlines()) <= 100
