"""The exercise convention and the source listings the notebooks are built on."""

from __future__ import annotations

import pytest

from tests.nbrun import solution_code
from wasi_lab import exercises, listings
from wasi_lab.paths import GUEST_DIR, REPO_ROOT


def test_check_value_prints_one_line_and_never_raises(capsys: pytest.CaptureFixture) -> None:
    assert not exercises.check_value("pages", None, 3, "count them")
    assert exercises.check_value("pages", 3, 3, "count them")
    assert not exercises.check_value("pages", 2, 3, "count them")
    weird = object()
    assert not exercises.check_value(
        "pages", weird, 3, "hint", equal=lambda a, b: a.bit_length() == b
    )
    lines = capsys.readouterr().out.splitlines()
    assert [line[0] for line in lines] == ["✗", "✓", "✗", "✗"]
    assert "not answered" in lines[0] and "the run says 3" in lines[2]


def test_check_call_survives_whatever_the_learner_wrote(capsys: pytest.CaptureFixture) -> None:
    def raises(x: int) -> int:
        raise ValueError("boom")

    def unwritten(x: int) -> None: ...

    verify = lambda r: None if r == 4 else f"expected 4, got {r}"  # noqa: E731
    assert not exercises.check_call("f", None, (2,), verify, "hint")
    assert not exercises.check_call("f", raises, (2,), verify, "hint")
    assert not exercises.check_call("f", unwritten, (2,), verify, "hint")
    assert not exercises.check_call("f", lambda x: x + 1, (2,), verify, "hint")
    assert exercises.check_call("f", lambda x: x * 2, (2,), verify, "hint")
    lines = capsys.readouterr().out.splitlines()
    assert [line[0] for line in lines] == ["✗", "✗", "✗", "✗", "✓"]
    assert "ValueError: boom" in lines[1]


def test_solution_code_is_the_first_python_fence() -> None:
    md = "<details><summary>Solution</summary>\n\n```python\nx = 1\n```\n</details>"
    assert solution_code(md) == "x = 1\n"
    assert solution_code("no code") is None


def test_listings_come_from_the_files() -> None:
    alloc = listings.rust_fn(GUEST_DIR / "src" / "abi.rs", "alloc")
    assert alloc.text.splitlines()[-1] == "}"
    assert 'pub extern "C" fn alloc(len: usize)' in alloc.text
    assert alloc.text in (GUEST_DIR / "src" / "abi.rs").read_text()
    js = listings.js_function(REPO_ROOT / "hosts" / "node" / "classify.mjs", "writeGuestMemory")
    assert "bytes.byteOffset" in js.text and js.text.rstrip().endswith("}")
    dep = listings.lines_matching(GUEST_DIR / "Cargo.toml", r"^image\s*=")
    assert "default-features = false" in dep.text
    assert "mem::forget" in listings.article("alloc.rs").text
    html = listings.side_by_side(listings.article("alloc.rs"), alloc)._repr_html_()
    assert "overflow-x:auto" in html
    with pytest.raises(LookupError):
        listings.rust_fn(GUEST_DIR / "src" / "abi.rs", "no_such_function")


def test_python_def_listing() -> None:
    listing = listings.python_def(exercises.report)
    assert listing.text.startswith("def report(")
