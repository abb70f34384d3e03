"""`wasi-lab figures` (what `make figures` runs) writes real, readable PNGs."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from wasi_lab.cli import main

EXPECTED = {
    "article-table.png",
    "timing-breakdown.png",
    "cold-vs-cached.png",
    "top5-grace-hopper.png",
    "page-map.png",
    "bench.png",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_figures_command_writes_valid_pngs(tmp_path: Path, capsys):
    assert main(["figures", "--out", str(tmp_path), "--repeat", "1", "--no-build"]) == 0
    out = capsys.readouterr().out
    written = {p.name for p in tmp_path.glob("*.png")}
    assert written == EXPECTED
    for name in EXPECTED:
        path = tmp_path / name
        assert f"wrote {path}" in out or name in out
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as img:
            img.verify()  # checks chunk CRCs: a truncated file fails here
        with Image.open(path) as img:
            w, h = img.size
            assert w >= 400 and h >= 150, (name, img.size)
            # Not a blank canvas: a chart has many distinct colours.
            assert len(img.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 20, name


def test_top5_figure_from_a_prediction(tmp_path: Path):
    from wasi_lab.hosts import grace_hopper
    from wasi_lab.predict import Classifier
    from wasi_lab.views.prediction_charts import top5_figure
    from wasi_lab.views.render import save

    pred = Classifier().classify(grace_hopper())
    fig = top5_figure(pred)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[-1] == "military uniform (652)"  # the best class is the top bar
    path = save(fig, tmp_path / "top5.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
