"""The host/guest contract, read from the guest's Rust sources, and every copy checked against it.

Two things cross the language boundary by number: the preprocessing modes (the `mode`
argument of `decode_image` and `classify`) and the negative error codes every entry point
returns. The guest owns both: `ErrorCode` in `guest/src/abi.rs`, `Mode::from_i32` in
`guest/src/preprocess.rs`. Python, JavaScript and the guest's own command-line tool each
need them under names, so they are written again there; nothing generated ties the copies
together, this module checks them instead. It only reads files (a checker, not a
generator), so `wasi-lab` keeps working from a wheel where there is no guest source.

    python -m wasi_lab.contract      # prints each copy that drifted; exit 1 if any

A mode's name is its Rust variant in lower case (`Mode::EfficientNet` is "efficientnet");
an error's name is its variant (`ErrorCode::BadPointer`, Python's `BadPointerError`).
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wasi_lab.paths import REPO_ROOT

ABI_RS = "guest/src/abi.rs"
PREPROCESS_RS = "guest/src/preprocess.rs"
CLASSIFY_RS = "guest/src/bin/classify.rs"
CLASSIFY_MJS = "hosts/node/classify.mjs"
RUNTIME_PY = "wasi_lab/runtime.py"

#: The Python copies of the mode names that must exist: file -> where (an assignment's
#: name, a function's name, or an argparse option). A copy that disappears is reported
#: too, so a rename cannot switch the check off; copies elsewhere are found and checked
#: all the same.
PYTHON_MODE_COPIES = {
    "wasi_lab/predict.py": "MODE_IDS",
    "wasi_lab/models/preprocess.py": "MODES",
    "wasi_lab/hosts.py": "_mode_name",
    "wasi_lab/cli.py": "--mode choices",
}
#: Where prose quotes a code ("`LengthMismatch` (code -2)"): checked as well.
PROSE = ("README.md", "hosts/node/README.md", "docs/*.md", "notebooks/*.ipynb")
#: The one mode name a host accepts beyond the guest's: the model's own preprocessing.
HOST_ALIAS = "model"


class ContractError(ValueError):
    """The guest's sources no longer hold the definitions in a form this reader knows."""


@dataclass(frozen=True)
class Contract:
    #: Rust variant -> code, in declaration order: {"BadPointer": -1, ...}.
    error_codes: dict[str, int]
    #: Mode name -> ABI number, in ABI order: {"article": 0, "efficientnet": 1, ...}.
    modes: dict[str, int]
    #: Mode name -> its Rust variant: {"efficientnet": "EfficientNet", ...}.
    mode_variants: dict[str, str]


@dataclass(frozen=True)
class Drift:
    """One copy that disagrees with the guest: which file, which name, what is wrong."""

    file: str
    name: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.name}: {self.problem}"


# ------------------------------------------------------------------------- the owner
def _rust_block(text: str, header: str, path: str) -> str:
    """The body of the first `{ ... }` after `header` (no nested braces expected)."""
    m = re.search(re.escape(header) + r"[^{]*\{(?P<body>[^}]*)\}", text)
    if not m:
        raise ContractError(f"{path}: no `{header}` found")
    return re.sub(r"//[^\n]*", "", m.group("body"))


def read_contract(root: Path = REPO_ROOT) -> Contract:
    """The contract as the guest's Rust sources define it."""
    if not (root / ABI_RS).is_file() or not (root / PREPROCESS_RS).is_file():
        raise ContractError(
            f"no guest sources under {root} ({ABI_RS}, {PREPROCESS_RS}): "
            "the contract is read in a checkout of wasi-lab"
        )
    abi = (root / ABI_RS).read_text(encoding="utf-8")
    body = _rust_block(abi, "pub enum ErrorCode", ABI_RS)
    codes = {name: int(value) for name, value in re.findall(r"(\w+)\s*=\s*(-?\d+)", body)}
    if not codes or len(codes) != len(re.findall(r"\w+\s*(?:=[^,]*)?,", body)):
        raise ContractError(f"{ABI_RS}: every ErrorCode variant needs an explicit value")
    if len(set(codes.values())) != len(codes):
        raise ContractError(f"{ABI_RS}: two ErrorCode variants share a value: {codes}")
    pre = (root / PREPROCESS_RS).read_text(encoding="utf-8")
    variants = re.findall(r"(\w+)\s*,", _rust_block(pre, "pub enum Mode", PREPROCESS_RS))
    m = re.search(r"fn from_i32\b.*?match mode \{(?P<arms>.*?)other\s*=>", pre, re.S)
    if not m:
        raise ContractError(f"{PREPROCESS_RS}: no `Mode::from_i32` match found")
    arms = {v: int(n) for n, v in re.findall(r"(\d+)\s*=>\s*Ok\(Mode::(\w+)\)", m["arms"])}
    if sorted(arms) != sorted(variants):
        raise ContractError(
            f"{PREPROCESS_RS}: Mode has {variants} but from_i32 maps {sorted(arms)}"
        )
    order = sorted(variants, key=arms.__getitem__)
    return Contract(
        error_codes=codes,
        modes={v.lower(): arms[v] for v in order},
        mode_variants={v.lower(): v for v in order},
    )


# ------------------------------------------------------------------------- the copies
def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _where(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    """A name for where a literal sits: its assignment, argparse option or function."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            return node.targets[0].id
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return node.target.id
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_argument"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            return f"{node.args[0].value} choices"
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return node.name
    return "<module>"


def _strs(node: ast.AST) -> list[str] | None:
    """The strings of a literal tuple, list, set or dict (its keys); None for other nodes."""
    elts = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
    if not isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict) or elts is None:
        return None
    return [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def _int(node: ast.AST | None) -> int | None:
    try:
        value = ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None
    return value if isinstance(value, int) else None


def python_mode_copies(rel: str, text: str, c: Contract) -> Iterator[tuple[str, Drift | None]]:
    """Every literal in a Python file naming two or more modes, as (where, drift or None).

    A tuple, list or set must hold exactly the guest's modes (plus "model" where a host
    takes the model's own); a dict from mode to number must match the guest's numbers."""
    modes = set(c.modes)
    if sum(f'"{m}"' in text or f"'{m}'" in text for m in modes) < 2:
        return  # no literal can name two modes: skip the parse
    tree = ast.parse(text, rel)
    parents: dict[ast.AST, ast.AST] | None = None
    for node in ast.walk(tree):
        names = _strs(node)
        if names is None or len(modes & set(names)) < 2:
            continue
        parents = parents or _parents(tree)
        where = _where(node, parents)
        label = f"{where} (line {node.lineno})"
        extra, missing = set(names) - modes - {HOST_ALIAS}, modes - set(names)
        if extra or missing:
            yield (
                where,
                Drift(
                    rel,
                    label,
                    f"modes {sorted(names)}; the guest has "
                    f"{sorted(modes)} (unknown {sorted(extra)}, missing "
                    f"{sorted(missing)})",
                ),
            )
            continue
        if isinstance(node, ast.Dict):
            got = {
                k.value: _int(v)
                for k, v in zip(node.keys, node.values, strict=True)
                if isinstance(k, ast.Constant)
            }
            want = {k: c.modes[k] for k in got if k in c.modes}
            if {k: got[k] for k in want} != want:
                yield where, Drift(rel, label, f"mode numbers {got}; the guest has {c.modes}")
                continue
        yield where, None


def runtime_error_copies(text: str, c: Contract) -> Iterator[Drift]:
    """`ERROR_CLASSES` maps each code to the class named for it, and every
    `SomeError(function, <code>, message)` written by hand uses that class's code."""
    tree = ast.parse(text, RUNTIME_PY)
    table = next(
        (
            n.value
            for n in ast.walk(tree)
            if isinstance(n, ast.AnnAssign | ast.Assign)
            and isinstance(n.value, ast.Dict)
            and "ERROR_CLASSES"
            in ast.unparse(n.target if isinstance(n, ast.AnnAssign) else n.targets[0])
        ),
        None,
    )
    if table is None:
        yield Drift(RUNTIME_PY, "ERROR_CLASSES", "not found (the code -> exception table)")
        return
    by_code = {v: k for k, v in c.error_codes.items()}
    seen: dict[str, int] = {}
    for k, v in zip(table.keys, table.values, strict=True):
        code, cls = _int(k), getattr(v, "id", "?")
        seen[cls] = code if code is not None else 0
        variant = by_code.get(code) if code is not None else None
        if variant is None:
            yield Drift(
                RUNTIME_PY,
                f"ERROR_CLASSES[{code}]",
                f"{cls}: the guest has no code {code} (ErrorCode is {c.error_codes})",
            )
        elif cls not in (f"{variant}Error", f"Guest{variant}Error"):
            yield Drift(
                RUNTIME_PY,
                f"ERROR_CLASSES[{code}]",
                f"is {cls}, but code {code} is ErrorCode::{variant} ({variant}Error)",
            )
    for variant, code in c.error_codes.items():
        if code not in {_int(k) for k in table.keys}:
            yield Drift(
                RUNTIME_PY, "ERROR_CLASSES", f"has no entry for ErrorCode::{variant} ({code})"
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in seen
            and len(node.args) >= 2
            and (code := _int(node.args[1])) is not None
            and code != seen[node.func.id]
        ):
            yield Drift(
                RUNTIME_PY,
                f"{node.func.id}(..., {code}, ...) (line {node.lineno})",
                f"{node.func.id} is code {seen[node.func.id]}",
            )


def js_copies(text: str, c: Contract) -> Iterator[Drift]:
    """`MODES` and `ERRORS` in the Node host."""
    m = re.search(r"const MODES\s*=\s*\{([^}]*)\}", text)
    got = {k: int(v) for k, v in re.findall(r"(\w+)\s*:\s*(-?\d+)", m[1])} if m else None
    if got != c.modes:
        yield Drift(CLASSIFY_MJS, "MODES", f"{got}; the guest has {c.modes}")
    m = re.search(r"const ERRORS\s*=\s*\{([^}]*)\}", text)
    errs = {int(k): v for k, v in re.findall(r"'(-?\d+)'\s*:\s*'(\w+)'", m[1])} if m else None
    want = {v: k for k, v in c.error_codes.items()}
    if errs != want:
        yield Drift(CLASSIFY_MJS, "ERRORS", f"{errs}; the guest has {want}")


def rust_copies(root: Path, c: Contract) -> Iterator[Drift]:
    """The guest's command-line tool parses mode names; both Rust files spell them in
    their messages."""
    text = (root / CLASSIFY_RS).read_text(encoding="utf-8")
    arms = dict(re.findall(r'"(\w+)"\s*=>\s*Mode::(\w+)', text))
    if arms != c.mode_variants:
        yield Drift(CLASSIFY_RS, "--mode parser", f"{arms}; the guest has {c.mode_variants}")
    spelled = "|".join(c.modes)
    for i, usage in enumerate(re.findall(r"--mode (\w+(?:\|\w+)+)", text)):
        if usage != spelled:
            yield Drift(CLASSIFY_RS, f"usage text #{i + 1}", f"--mode {usage}, not {spelled}")
    m = re.search(r"unknown mode '\{\}' \(([^)]*)\)", text)
    if m and m[1] != ", ".join(c.modes):
        yield Drift(CLASSIFY_RS, "unknown-mode message", f"({m[1]}), not ({', '.join(c.modes)})")
    pre = (root / PREPROCESS_RS).read_text(encoding="utf-8")
    m = re.search(r"unknown preprocessing mode \{\} \(([^)]*)\)", pre)
    want = ", ".join(f"{n} {name}" for name, n in c.modes.items())
    if m is None or m[1] != want:
        yield Drift(PREPROCESS_RS, "from_i32 message", f"({m[1] if m else '?'}), not ({want})")


def prose_copies(root: Path, c: Contract) -> Iterator[Drift]:
    """Docs and notebooks quoting an error with its code: "`LengthMismatch` (code -2)"."""
    pattern = re.compile(
        r"`(?:Guest)?(\w+?)(?:Error)?`,?\s*\(?(?:guest error |error )?"
        r"code (-\d+)"
    )
    for glob in PROSE:
        for path in sorted(root.glob(glob)):
            for m in pattern.finditer(path.read_text(encoding="utf-8")):
                name, code = m[1], int(m[2])
                if name in c.error_codes and c.error_codes[name] != code:
                    yield Drift(
                        str(path.relative_to(root)),
                        f"`{name}` code {code}",
                        f"ErrorCode::{name} is {c.error_codes[name]}",
                    )


def check_copies(root: Path = REPO_ROOT, contract: Contract | None = None) -> list[Drift]:
    """Every copy of the contract that disagrees with the guest's sources (empty: all agree)."""
    c = contract or read_contract(root)
    drifts: list[Drift] = []
    found: dict[str, set[str]] = {}
    for path in sorted((root / "wasi_lab").rglob("*.py")):
        rel = str(path.relative_to(root))
        for where, drift in python_mode_copies(rel, path.read_text(encoding="utf-8"), c):
            found.setdefault(rel, set()).add(where)
            if drift:
                drifts.append(drift)
    for rel, where in PYTHON_MODE_COPIES.items():
        if where not in found.get(rel, set()):
            drifts.append(
                Drift(
                    rel,
                    where,
                    "no literal copy of the mode names here any more: "
                    "if it moved or is now derived from another copy, update "
                    "contract.PYTHON_MODE_COPIES",
                )
            )
    drifts += runtime_error_copies((root / RUNTIME_PY).read_text(encoding="utf-8"), c)
    drifts += js_copies((root / CLASSIFY_MJS).read_text(encoding="utf-8"), c)
    drifts += rust_copies(root, c)
    drifts += prose_copies(root, c)
    return drifts


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else REPO_ROOT
    try:
        c = read_contract(root)
    except ContractError as exc:
        print(f"wasi_lab.contract: {exc}", file=sys.stderr)
        return 2
    drifts = check_copies(root, c)
    for d in drifts:
        print(d)
    print(
        f"{len(c.error_codes)} error codes, {len(c.modes)} modes: "
        f"{'all copies agree' if not drifts else f'{len(drifts)} drifted'}"
    )
    return 1 if drifts else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
