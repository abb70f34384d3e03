"""Source listings read from the files themselves, so a notebook never shows a stale copy.

Where the prose speaks of code, the notebook shows the code: a Rust function of the guest, a
JavaScript function of the Node host, a line of ``Cargo.toml``, a Python function of this
package. Each listing is cut out of the file at the moment the cell runs; if the source
changes, the listing changes with it, and a name that is no longer there is an error a test
sees.

The article's own versions live in one place, ``wasi_lab/article_code/``: short quotations
of the 2020 article's listings, kept so that ours can stand beside them.
"""

from __future__ import annotations

import html
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .paths import KIT_ROOT

ARTICLE_CODE_DIR = Path(__file__).resolve().parent / "article_code"

_LANG = {
    ".rs": "rust",
    ".js": "javascript",
    ".mjs": "javascript",
    ".py": "python",
    ".toml": "toml",
    ".wat": "wat",
}


@dataclass(frozen=True)
class Listing:
    """A piece of a source file: where it came from and its text."""

    title: str
    text: str
    language: str
    path: Path | None = None
    first_line: int = 1

    def _repr_html_(self) -> str:
        return _html_block(self)

    def __str__(self) -> str:
        return self.text


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(KIT_ROOT))
    except ValueError:
        return path.name


def _find_block(lines: list[str], start: int) -> int:
    """Index of the line that closes the ``{`` block opened at or after ``lines[start]``."""
    depth = 0
    opened = False
    for i in range(start, len(lines)):
        code = re.sub(r"//.*", "", lines[i])  # a brace in a line comment does not count
        code = re.sub(r'"(\\.|[^"\\])*"', '""', code)  # nor one inside a string literal
        for ch in code:
            if ch == "{":
                depth += 1
                opened = True
            elif ch == "}":
                depth -= 1
                if opened and depth == 0:
                    return i
    raise ValueError(f"no closing brace after line {start + 1}")


def _with_leading_comments(lines: list[str], start: int, markers: tuple[str, ...]) -> int:
    """Move ``start`` up over the doc comments and attributes right above a definition."""
    while start > 0 and lines[start - 1].strip().startswith(markers):
        start -= 1
    return start


def _definition(
    path: Path | str,
    pattern: str,
    name: str,
    kind: str,
    language: str,
    comments: tuple[str, ...],
    title: str | None,
) -> Listing:
    """The first block whose opening line matches ``pattern``, with the comments above it."""
    path = Path(path)
    lines = path.read_text().splitlines()
    opening = re.compile(pattern)
    for i, line in enumerate(lines):
        if opening.match(line):
            start = _with_leading_comments(lines, i, comments)
            end = _find_block(lines, i)
            return Listing(
                title or f"{_relative(path)}: {name}",
                "\n".join(lines[start : end + 1]),
                language,
                path,
                start + 1,
            )
    raise LookupError(f"no {kind} {name} in {path}")


def rust_fn(path: Path | str, name: str, title: str | None = None) -> Listing:
    """A Rust function (with its doc comments and attributes) from ``path``."""
    pattern = (
        rf"^\s*(pub(\([a-z]+\))?\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?"
        rf"fn\s+{name}\b"
    )
    return _definition(path, pattern, name, "fn", "rust", ("///", "#[", "//"), title)


def js_function(path: Path | str, name: str, title: str | None = None) -> Listing:
    """A JavaScript ``function name(...) {...}`` (with the comments above it) from ``path``."""
    pattern = rf"^\s*(export\s+)?(async\s+)?function\s+{name}\s*\("
    return _definition(path, pattern, name, "function", "javascript", ("//", "/*", "*"), title)


def lines_matching(
    path: Path | str, pattern: str, context: int = 0, title: str | None = None
) -> Listing:
    """The lines of ``path`` that match ``pattern`` (a regex), each with ``context`` lines after."""
    path = Path(path)
    lines = path.read_text().splitlines()
    keep: list[int] = []
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            keep.extend(range(i, min(i + 1 + context, len(lines))))
    if not keep:
        raise LookupError(f"no line matching {pattern!r} in {path}")
    keep = sorted(set(keep))
    text = "\n".join(lines[i] for i in keep)
    return Listing(
        title or _relative(path), text, _LANG.get(path.suffix, "text"), path, keep[0] + 1
    )


def python_def(obj: Callable | type, title: str | None = None) -> Listing:
    """A Python function or class of this package, as it stands in its file."""
    source, first = inspect.getsourcelines(obj)
    path = Path(inspect.getsourcefile(obj) or "")
    return Listing(
        title or f"{_relative(path)}: {obj.__qualname__}",
        "".join(source).rstrip(),
        "python",
        path,
        first,
    )


def article(name: str, title: str | None = None) -> Listing:
    """One of the article's listings, from ``wasi_lab/article_code/`` (quoted, not ours)."""
    path = ARTICLE_CODE_DIR / name
    return Listing(
        title or f"the article's {path.stem}",
        path.read_text().rstrip(),
        _LANG.get(path.suffix, "text"),
        path,
    )


def _highlight(listing: Listing) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import get_lexer_by_name
    except ImportError:  # pygments comes with JupyterLab; plain text is the fallback
        return f"<pre>{html.escape(listing.text)}</pre>"
    try:
        lexer = get_lexer_by_name(listing.language)
    except Exception:
        lexer = get_lexer_by_name("text")
    formatter = HtmlFormatter(noclasses=True, nowrap=False, style="default")
    return highlight(listing.text, lexer, formatter)


def _html_block(listing: Listing) -> str:
    where = ""
    if listing.path is not None:
        where = f" <span style='color:#777'>(line {listing.first_line})</span>"
    # Listings scroll sideways instead of wrapping: wrapped code is unreadable code.
    return (
        f"<div style='min-width:0; flex:1'><b>{html.escape(listing.title)}</b>{where}"
        f"<div style='overflow-x:auto; font-size:12px; white-space:pre'>"
        f"{_highlight(listing)}</div></div>"
    )


class SideBySide:
    """Two or more listings next to each other, e.g. the article's version beside ours."""

    def __init__(self, *listings: Listing) -> None:
        self.listings = listings

    def _repr_html_(self) -> str:
        cols = "".join(_html_block(listing) for listing in self.listings)
        return f"<div style='display:flex; gap:1.5em; align-items:flex-start'>{cols}</div>"

    def __str__(self) -> str:
        return "\n\n".join(f"--- {x.title}\n{x.text}" for x in self.listings)


def side_by_side(*listings: Listing) -> SideBySide:
    """Show listings in columns (the notebook renders the HTML; ``print`` gives text)."""
    return SideBySide(*listings)
