"""The same .wasm in a browser tab: host.js in real Chromium, `wasi-lab hosts check`, the widget.

Real everything: the prebuilt guest, the bundled model, wasmtime-py, Node's WASI, Debian's
Chromium through Playwright on a loopback page. Chromium tests skip only when
/usr/bin/chromium is absent (`make test` installs it); Node's only when Node is absent.
The machine is shared, so Chromium is launched few times: once by `hosts check`, once for
the widget's view.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.jupyterlab import jupyterlab_server, open_and_run_all
from wasi_lab.browser.chromium import CHROMIUM, ChromiumHost, chromium_missing
from wasi_lab.cli import main
from wasi_lab.hosts import HostError, NodeNotFoundError, find_node, grace_hopper
from wasi_lab.hosts_check import compare_raw, raw_sha256, run_wasmtime, summarize
from wasi_lab.paths import IMAGES_DIR, REPO_ROOT

CHELSEA = IMAGES_DIR / "chelsea.png"


def _node_missing() -> str | None:
    try:
        find_node()
    except NodeNotFoundError as exc:
        return str(exc)
    return None


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is absent (apt-get install chromium; `make test` installs it)",
)
needs_node = pytest.mark.skipif(_node_missing() is not None, reason=str(_node_missing()))


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def wasmtime_ref() -> tuple[bytes, list[int]]:
    """wasmtime's raw output bytes and top-5 indices for grace_hopper.jpg."""
    run, raw = run_wasmtime(grace_hopper(), "efficientnet-lite0", "model", 5)
    return raw, [c["index"] for c in run.top]


# --------------------------------------------------------------------------- hosts check


@pytest.mark.slow
def test_hosts_check_all_present_hosts_agree_byte_for_byte(wasmtime_ref) -> None:
    code, out, _ = _cli("hosts", "check", "--json")
    rep = json.loads(out)
    ran = {h["host"]: h for h in rep["hosts"]}
    skipped = {s["host"]: s["reason"] for s in rep["skipped"]}
    assert rep["failed"] == [], rep["failed"]
    assert "wasmtime" in ran
    assert ("node" in ran) == (_node_missing() is None), skipped
    assert ("chromium" in ran) == (chromium_missing() is None), skipped
    for host, reason in skipped.items():
        assert reason, f"{host} skipped without a reason"
    raw, top = wasmtime_ref
    for h in rep["hosts"]:
        assert h["raw_sha256"] == raw_sha256(raw), h["host"]
        assert [c["index"] for c in h["top"]] == top, h["host"]
        assert h["top"][0]["label"] == "military uniform"
        assert 0 < h["top"][0]["prob"] <= 1
        assert h["infer_ms"] > 0
        assert {"compile", "instantiate", "load_model", "infer"} <= set(h["timings_ms"])
    assert rep["agree"] is True and code == 0
    assert len(rep["distinct_raw_sha256"]) == 1
    assert Path(rep["image"]).name == "grace_hopper.jpg"


def test_summarize_detects_a_disagreement() -> None:
    a, _ = run_wasmtime(grace_hopper(), "efficientnet-lite0", "model", 5)
    b, _ = run_wasmtime(CHELSEA, "efficientnet-lite0", "model", 5)
    b.host = "other"
    assert summarize("x", "m", [a, a], [], [])["agree"] is True
    rep = summarize("x", "m", [a, b], [], [])
    assert rep["agree"] is False
    assert len(rep["distinct_raw_sha256"]) == 2
    # a failed host is never "agree", even when the others match
    assert summarize("x", "m", [a], [], [{"host": "node", "error": "boom"}])["agree"] is False
    assert summarize("x", "m", [], [], [])["agree"] is False


@needs_node
@pytest.mark.slow
def test_hosts_check_exits_non_zero_when_two_hosts_disagree() -> None:
    code, out, _ = _cli(
        "hosts", "check", "--only", "wasmtime", "node", "--image-for", f"node={CHELSEA}", "--json"
    )
    rep = json.loads(out)
    assert code == 1
    assert rep["agree"] is False
    node = next(h for h in rep["hosts"] if h["host"] == "node")
    assert Path(node["image"]).name == "chelsea.png"
    assert len(rep["distinct_raw_sha256"]) == 2
    code, out, _ = _cli(
        "hosts", "check", "--only", "wasmtime", "node", "--image-for", f"node={CHELSEA}"
    )
    assert code == 1 and "DISAGREE" in out


@needs_node
def test_hosts_check_reports_a_failing_host_and_exits_non_zero(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code, out, _ = _cli("hosts", "check", "--only", "node", "--image-for", f"node={bad}", "--json")
    rep = json.loads(out)
    assert code == 1 and rep["agree"] is False
    assert rep["failed"][0]["host"] == "node"
    assert "refused" in rep["failed"][0]["error"]


def test_hosts_check_bad_arguments_get_one_line(tmp_path: Path) -> None:
    code, out, err = _cli("hosts", "check", str(tmp_path / "nope.jpg"))
    assert code == 1 and out == ""
    assert "nope.jpg" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(io.StringIO()) as e:
        main(["hosts", "check", "--image-for", "safari=x.jpg"])
    assert exc.value.code == 2 and "HOST=IMAGE" in e.getvalue()


def test_compare_raw_is_a_byte_comparison() -> None:
    x = np.linspace(0, 1, 1000, dtype="<f4")
    same = compare_raw(x.tobytes(), x.copy().tobytes())
    assert same["identical"] and same["max_abs_diff"] == 0.0
    assert same["sha256"] == same["other_sha256"]
    y = x.copy()
    y[7] = np.nextafter(y[7], np.float32(2))  # one ulp: equal to 1e-7, not byte-identical
    diff = compare_raw(x.tobytes(), y.tobytes())
    assert not diff["identical"]
    assert 0 < diff["max_abs_diff"] < 1e-6
    short = compare_raw(x.tobytes(), x.tobytes()[:-4])
    assert not short["identical"] and short["max_abs_diff"] is None


# --------------------------------------------------------------------------- the widget


@pytest.fixture(scope="module")
def widget():
    from wasi_lab.browser_host import BrowserHost

    return BrowserHost()


def test_widget_kernel_side_compares_with_wasmtime(widget, wasmtime_ref) -> None:
    raw, _ = wasmtime_ref
    image = grace_hopper().read_bytes()
    assert widget.image == image and widget.image_name == "grace_hopper.jpg"
    assert widget.wasm[:4] == b"\0asm" and len(widget.model_bytes) > 1_000_000
    assert len(widget.labels) == 1000 and "chelsea.png" in widget.sample_names
    verdict = widget.receive({"seq": 1, "name": "grace_hopper.jpg"}, raw, image)
    assert verdict["identical"] and verdict["sha256"] == raw_sha256(raw)
    assert widget.comparison == verdict and widget.latest() == verdict
    assert verdict["wasmtime_timings_ms"]["infer"] > 0
    off = bytearray(raw)
    off[0] ^= 1
    verdict = widget.receive({"seq": 2, "name": "grace_hopper.jpg"}, bytes(off), image)
    assert not verdict["identical"] and verdict["max_abs_diff"] > 0
    verdict = widget.receive({"seq": 3, "name": "junk"}, raw, b"not an image")
    assert "error" in verdict and verdict["seq"] == 3
    widget.image_name = "chelsea.png"
    assert widget.image == CHELSEA.read_bytes()
    widget.image_name = "grace_hopper.jpg"


#: A stand-in for anywidget's model in a plain page: state, change events, and what was sent.
_FAKE_WIDGET_JS = """
async ({ labels, outputName, mode, samples }) => {
  const get = async (p) => new Uint8Array(await (await fetch(p)).arrayBuffer());
  const [wasm, model, image] = await Promise.all(
    [get('/guest.wasm'), get('/model.pb'), get('/image')]);
  const dv = (u) => new DataView(u.buffer, u.byteOffset, u.byteLength);
  const state = { wasm: dv(wasm), model_bytes: dv(model), output_name: outputName, mode,
                  labels, sample_names: samples, image_name: 'grace_hopper.jpg',
                  image: dv(image), comparison: {} };
  const handlers = {};
  window.sent = [];
  window.fakeModel = {
    get: (k) => state[k],
    set: (k, v) => { state[k] = v; },
    save_changes: () => {},
    on: (ev, fn) => { (handlers[ev] ??= []).push(fn); },
    send: (content, _cb, buffers) => window.sent.push({ content,
      buffers: buffers.map((b) => Array.from(new Uint8Array(b.buffer ?? b))) }),
    fire: (k, v) => { state[k] = v; for (const fn of handlers[`change:${k}`] ?? []) fn(); },
  };
  await window.wasiLabHost.default.render({ model: window.fakeModel,
                                            el: document.getElementById('widget') });
}
"""


@needs_chromium
@pytest.mark.browser
@pytest.mark.slow
def test_widget_view_classifies_in_chromium_and_matches_wasmtime(widget, wasmtime_ref) -> None:
    from wasi_lab.paths import default_module

    raw_ref, top_ref = wasmtime_ref
    spec = widget.classifier.spec
    with ChromiumHost(default_module(), widget.classifier.model_path) as chromium:
        chromium.files.routes["/image"] = grace_hopper()
        page = chromium.page
        # the shim provides exactly the guest's imports, no more, no fewer
        from wasi_lab.inspect import inspect_module

        wanted = sorted(i["name"] for i in inspect_module(default_module()).to_dict()["imports"])
        shim = page.evaluate(
            "() => Object.keys(window.wasiLabHost.makeWasi(() => null)"
            ".wasi_snapshot_preview1).sort()"
        )
        assert shim == wanted
        page.evaluate(
            _FAKE_WIDGET_JS,
            {
                "labels": list(widget.labels),
                "outputName": spec.output,
                "mode": widget.mode,
                "samples": list(widget.sample_names),
            },
        )
        page.wait_for_function("() => window.sent.length >= 1")
        sent = page.evaluate("() => window.sent[0]")
        raw, image = bytes(sent["buffers"][0]), bytes(sent["buffers"][1])
        assert image == grace_hopper().read_bytes()
        assert raw == raw_ref, compare_raw(raw, raw_ref)
        items = page.locator(".wasi-browser-top5 li").all_inner_texts()
        assert len(items) == 5 and items[0].startswith("military uniform")
        assert f"({top_ref[1]})" in items[1]
        status = page.locator(".wasi-browser-status").inner_text()
        assert "grace_hopper.jpg → military uniform" in status
        # one page map per stage, each drawn from this tab's memory.buffer
        stages = page.eval_on_selector_all(
            "canvas.wasi-browser-pagemap", "cs => cs.map(c => [c.dataset.stage, c.height])"
        )
        assert [s for s, _ in stages] == ["model loaded", "image written", "inferred"]
        assert all(h > 0 for _, h in stages)
        times = sent["content"]["timings_ms"]
        assert {"compile", "instantiate", "load_model", "infer"} <= set(times)
        assert sent["content"]["pages"] > 18  # grew past the module's initial 18 pages
        # the kernel's verdict, shown in the tab
        verdict = widget.receive(sent["content"], raw, image)
        assert verdict["identical"]
        page.evaluate("(v) => window.fakeModel.fire('comparison', v)", verdict)
        text = page.locator(".wasi-browser-verdict").inner_text()
        assert "identical" in text and verdict["sha256"][:16] in text
        timing_rows = page.locator(".wasi-browser-timings tr").all_inner_texts()
        assert any(r.startswith("inference") and "…" not in r for r in timing_rows)
        # an upload is classified in the tab too, and compared again
        page.set_input_files("input.wasi-browser-upload", str(CHELSEA))
        page.wait_for_function("() => window.sent.length >= 2")
        sent2 = page.evaluate("() => window.sent[1]")
        assert bytes(sent2["buffers"][1]) == CHELSEA.read_bytes()
        verdict2 = widget.receive(
            sent2["content"], bytes(sent2["buffers"][0]), bytes(sent2["buffers"][1])
        )
        assert verdict2["identical"] and verdict2["sha256"] != verdict["sha256"]
        assert "chelsea.png →" in page.locator(".wasi-browser-status").inner_text()
        live_after_ok = page.eval_on_selector_all(
            ".wasi-browser-status", "e => e[0].dataset.liveBlocks"
        )
        assert live_after_ok is not None
        # a file that is not an image: the guest's own message, nothing sent, nothing lost
        junk = Path(chromium.files.routes["/model.pb"]).parent / "junk.png"
        page.set_input_files(
            "input.wasi-browser-upload",
            files=[
                {
                    "name": junk.name,
                    "mimeType": "image/png",
                    "buffer": b"\x89PNG\r\n\x1a\n not a png",
                }
            ],
        )
        page.wait_for_function(
            "() => document.querySelector('.wasi-browser-status')"
            ".innerText.includes('junk.png: decode_image')"
        )
        assert page.locator(".wasi-browser-top5 li").count() == 0
        live = page.eval_on_selector_all(".wasi-browser-status", "e => e[0].dataset.liveBlocks")
        assert live == live_after_ok, "a refused image left blocks behind in the guest"
        page.set_input_files("input.wasi-browser-upload", str(grace_hopper()))
        page.wait_for_function("() => window.sent.length >= 3")
        assert page.evaluate("() => window.sent.length") == 3
        again = page.evaluate("() => window.sent[2]")
        assert bytes(again["buffers"][0]) == raw_ref
        with pytest.raises(HostError, match="decode_image"):
            chromium.classify(b"GIF89a not supported", spec.output, widget.mode)


# --------------------------------------------------------------------------- in JupyterLab
# The fixture of tests/test_browser.py (shared in tests/jupyterlab.py): JupyterLab on a free
# loopback port, rooted at a copy of notebook 08, driven by Debian's Chromium.

ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    nbdir = tmp_path_factory.mktemp("lab") / "notebooks"
    nbdir.mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / "08_browser_host.ipynb", nbdir)
    with jupyterlab_server(nbdir) as base:
        yield base


@needs_chromium
@pytest.mark.browser
@pytest.mark.slow
def test_notebook_08_widget_classifies_in_jupyterlab(lab: str, wasmtime_ref) -> None:
    """Run All on notebook 08: the tab classifies, the kernel says the bytes are wasmtime's;
    picking another sample sends it from the kernel and the verdict holds again."""
    from playwright.sync_api import sync_playwright

    from wasi_lab.browser.chromium import CHROMIUM_ARGS

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    raw, _ = wasmtime_ref
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = open_and_run_all(browser, lab, "08_browser_host.ipynb")
            page.wait_for_selector(".wasi-browser-top5 li", timeout=240_000)
            assert "military uniform" in page.locator(".wasi-browser-top5 li").first.inner_text()
            verdict = page.locator(".wasi-browser-verdict").first
            page.wait_for_function(
                "() => document.querySelector('.wasi-browser-verdict').dataset.identical"
                " === 'true'",
                timeout=240_000,
            )
            assert raw_sha256(raw)[:16] in verdict.inner_text()
            assert page.locator("canvas.wasi-browser-pagemap").count() == 3
            page.locator(".wasi-browser-host").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "08-grace_hopper.png"))
            page.locator("select.wasi-browser-sample").first.select_option("chelsea.png")
            page.wait_for_function(
                "() => document.querySelector('.wasi-browser-status').innerText"
                ".includes('chelsea.png →')",
                timeout=120_000,
            )
            page.wait_for_function(
                "() => document.querySelector('.wasi-browser-verdict').dataset.identical"
                " === 'true'",
                timeout=120_000,
            )
            assert raw_sha256(raw)[:16] not in verdict.inner_text()  # a new image, new bytes
            page.screenshot(path=str(ARTIFACTS / "08-chelsea.png"))
        finally:
            browser.close()
