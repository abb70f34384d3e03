"""One source for the cross-language contract: the guest's Rust, and every copy checked.

The modes and error codes are read from `guest/src` (`wasi_lab.contract`); the parsed
contract is tied to the prebuilt module's behaviour, every copy in Python, JavaScript,
the guest's own CLI and the prose must agree with it, and editing any one copy (in a
scratch copy of the tree) makes the check name that file and that name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from wasi_lab.contract import (
    ABI_RS,
    ContractError,
    check_copies,
    read_contract,
)
from wasi_lab.paths import REPO_ROOT
from wasi_lab.runtime import Guest


def test_the_contract_is_read_from_the_guest() -> None:
    c = read_contract()
    assert len(c.error_codes) >= 9 and "LengthMismatch" in c.error_codes
    assert all(v < 0 for v in c.error_codes.values())
    assert sorted(c.modes.values()) == list(range(len(c.modes)))
    assert {"article", "efficientnet", "inception"} <= set(c.modes)
    assert c.mode_variants["efficientnet"] == "EfficientNet"


def test_the_prebuilt_guest_answers_with_the_parsed_codes(
    module_path: Path, grace_hopper_bytes: bytes
) -> None:
    """The parsed numbers are the ones the compiled guest uses: every mode decodes, the next
    number is refused as a bad argument, garbage as a bad image, a foreign pointer and a
    wrong length as what they are."""
    c = read_contract()
    g = Guest(module_path)
    out_len = g.call("decoded_len")
    img = g.write_bytes(grace_hopper_bytes, "image")
    out = g.alloc(out_len, "decoded")
    for mode in c.modes.values():
        assert g.raw_call("decode_image", img, len(grace_hopper_bytes), mode, out) >= 0
    assert (
        g.raw_call("decode_image", img, len(grace_hopper_bytes), len(c.modes), out)
        == c.error_codes["BadArgument"]
    )
    junk = g.write_bytes(b"not an image at all", "junk")
    assert g.raw_call("decode_image", junk, 19, 0, out) == c.error_codes["BadImage"]
    assert g.raw_call("dealloc", junk, 18) == c.error_codes["LengthMismatch"]
    assert g.raw_call("dealloc", junk + 1, 19) == c.error_codes["BadPointer"]


def test_every_copy_agrees_with_the_guest() -> None:
    drifts = check_copies()
    assert not drifts, "copies of the guest's contract drifted:\n" + "\n".join(map(str, drifts))


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A scratch copy of the files that hold the contract or a copy of it."""
    root = tmp_path / "repo"
    for rel in ("wasi_lab", "guest/src", "hosts/node", "notebooks", "docs"):
        if (REPO_ROOT / rel).is_dir():
            shutil.copytree(
                REPO_ROOT / rel,
                root / rel,
                ignore=shutil.ignore_patterns(
                    "__pycache__", "*.wasm", "node_modules", ".ipynb_checkpoints", "article_code"
                ),
            )
    shutil.copy(REPO_ROOT / "README.md", root / "README.md")
    assert check_copies(root) == []
    return root


# (file, text in it, replacement, the name the failure must give)
EDITS = [
    ("wasi_lab/predict.py", '"inception": 2}', '"inception": 3}', "MODE_IDS"),
    (
        "wasi_lab/models/preprocess.py",
        'MODES = ("article", "efficientnet", "inception")',
        'MODES = ("article", "efficientnet")',
        "MODES",
    ),
    (
        "wasi_lab/hosts.py",
        '("article", "efficientnet", "inception")',
        '("article", "efficientnet", "inceptionv3")',
        "_mode_name",
    ),
    ("wasi_lab/hosts.py", "def _mode_name(", "def _preprocessing_name(", "_mode_name"),
    ("wasi_lab/cli.py", '"efficientnet", "inception"]', '"efficientnet"]', "--mode choices"),
    ("wasi_lab/runtime.py", "-9: InferenceError,", "-9: BadModelError,", "ERROR_CLASSES[-9]"),
    (
        "wasi_lab/runtime.py",
        'BadArgumentError("alloc", -7,',
        'BadArgumentError("alloc", -8,',
        "BadArgumentError(..., -8, ...)",
    ),
    ("hosts/node/classify.mjs", "inception: 2 }", "inception: 3 }", "MODES"),
    ("hosts/node/classify.mjs", "'-9': 'Inference'", "'-9': 'InferenceFailed'", "ERRORS"),
    (
        "guest/src/bin/classify.rs",
        '"inception" => Mode::Inception',
        '"inception" => Mode::EfficientNet',
        "--mode parser",
    ),
    (
        "guest/src/bin/classify.rs",
        "[--mode article|efficientnet|inception] [--top K]\n  def",
        "[--mode article|efficientnet] [--top K]\n  def",
        "usage text #2",
    ),
    (
        "guest/src/preprocess.rs",
        "(0 article, 1 efficientnet, 2 inception)",
        "(0 article, 1 efficientnet)",
        "from_i32 message",
    ),
    (
        "hosts/node/README.md",
        "`LengthMismatch`, code -2",
        "`LengthMismatch`, code -3",
        "`LengthMismatch` code -3",
    ),
]


@pytest.mark.parametrize(
    ("rel", "old", "new", "name"), EDITS, ids=[f"{e[0].rsplit('/', 1)[-1]}:{e[3]}" for e in EDITS]
)
def test_editing_a_copy_is_caught(tree: Path, rel: str, old: str, new: str, name: str) -> None:
    path = tree / rel
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{rel} no longer holds {old!r}: update EDITS"
    path.write_text(text.replace(old, new), encoding="utf-8")
    drifts = check_copies(tree)
    assert len(drifts) == 1, drifts
    assert drifts[0].file == rel and drifts[0].name.startswith(name), drifts[0]


def test_changing_the_owner_shows_every_copy_to_update(tree: Path) -> None:
    """A new code in the guest: each copy that lists the codes says it lacks it."""
    abi = tree / ABI_RS
    abi.write_text(abi.read_text().replace("Inference = -9,", "Inference = -9,\n    Busy = -10,"))
    assert read_contract(tree).error_codes["Busy"] == -10
    where = {(d.file, d.name) for d in check_copies(tree)}
    assert where == {
        ("wasi_lab/runtime.py", "ERROR_CLASSES"),
        ("hosts/node/classify.mjs", "ERRORS"),
    }


def test_an_unreadable_owner_is_an_error_not_an_empty_contract(tree: Path) -> None:
    abi = tree / ABI_RS
    abi.write_text(abi.read_text().replace("BadPointer = -1,", "BadPointer,"))
    with pytest.raises(ContractError, match="explicit value"):
        read_contract(tree)
    abi.write_text(abi.read_text().replace("pub enum ErrorCode", "pub enum Code"))
    with pytest.raises(ContractError, match="no `pub enum ErrorCode`"):
        read_contract(tree)
    with pytest.raises(ContractError, match="no guest sources"):
        read_contract(tree / "wasi_lab")  # a wheel: the package without the guest
