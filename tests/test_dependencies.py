"""Declared dependencies match the imports, and a workshop install works without the extras.

`make lab` installs pyproject's `dependencies` only; the benchmark's peers (`bench`) and
the test tools (`dev`) are extras. So every package the kit or a notebook imports must be
declared, in the base unless every import of it sits inside a function (a lazy import the
caller survives without); nothing is declared that nobody imports (but the programs
JupyterLab and the kernel); and the package imports with the extras blocked. scikit-image
is a dev dependency only: the kit finds it with `importlib.util.find_spec`, never imports it.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

from wasi_lab.paths import REPO_ROOT

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
#: Installed for the programs they run, not imported: JupyterLab, the kernel, the linter
#: and pytest's timeout plugin.
PROGRAMS = {"jupyterlab", "ipykernel", "ruff", "pytest-timeout"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(requirements: list[str]) -> set[str]:
    """Distribution names of requirement strings; the self-reference `wasi-lab[...]` left out."""
    out = {_norm(re.match(r"[A-Za-z0-9._-]+", r)[0]) for r in requirements}
    return out - {"wasi-lab"}


BASE = _names(PROJECT["dependencies"])
BENCH = _names(PROJECT["optional-dependencies"]["bench"])
#: Extras the kit imports lazily and runs without (the benchmark's peers, headless Chromium,
#: the TensorFlow oracle).
OPTIONAL = (
    BENCH
    | _names(PROJECT["optional-dependencies"]["browser"])
    | _names(PROJECT["optional-dependencies"]["oracle"])
)
DEV = _names(PROJECT["optional-dependencies"]["dev"]) | OPTIONAL


def _sources(*folders: str) -> list[tuple[str, str]]:
    """(name, Python source) of every module under `folders` and every notebook code cell
    (IPython's `%magics` and `!shell` lines dropped)."""
    out = []
    for folder in folders:
        for f in sorted((REPO_ROOT / folder).rglob("*.py")):
            out.append((str(f.relative_to(REPO_ROOT)), f.read_text(encoding="utf-8")))
        for f in sorted((REPO_ROOT / folder).glob("*.ipynb")):
            for i, cell in enumerate(json.loads(f.read_text(encoding="utf-8"))["cells"]):
                if cell["cell_type"] == "code":
                    lines = "".join(cell["source"]).splitlines()
                    code = "\n".join(ln for ln in lines if not ln.lstrip().startswith(("%", "!")))
                    out.append((f"{f.relative_to(REPO_ROOT)} cell {i}", code))
    return out


def third_party_imports(*folders: str) -> dict[str, dict[str, bool]]:
    """Distribution -> {where: imported at module level?} for every import that is neither
    the standard library nor the kit itself."""
    dists = packages_distributions()
    local = {"wasi_lab", "tests", "benchmarks"}
    found: dict[str, dict[str, bool]] = {}
    for where, source in _sources(*folders):
        tree = ast.parse(source, where)
        lazy = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(f)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top in local:
                    continue
                dist = _norm(dists.get(top, [f"<{top}: not installed>"])[0])
                entry = found.setdefault(dist, {})
                entry[where] = entry.get(where, False) or id(node) not in lazy
    return found


def test_every_import_of_the_kit_and_the_notebooks_is_declared() -> None:
    problems = []
    for dist, uses in sorted(third_party_imports("wasi_lab", "notebooks").items()):
        eager = sorted(w for w, top_level in uses.items() if top_level)
        if dist in BASE:
            continue
        if dist in OPTIONAL and not eager:
            continue  # a lazy import of a benchmark peer: the caller runs without it
        problems.append(
            f"{dist}: imported by {eager or sorted(uses)} but "
            + ("only in an extra" if dist in DEV else "not declared")
        )
    assert not problems, "\n".join(problems)


#: Heavy and kept out of the workshop venv (issue 14): scikit-image (with SciPy ~200 MB)
#: only for four sample photographs, which wasi_lab.images takes from its wheel instead.
NOT_IN_THE_WORKSHOP = {"scikit-image", "scipy"}


def test_scikit_image_is_a_dev_dependency_the_kit_never_imports() -> None:
    assert not NOT_IN_THE_WORKSHOP & BASE
    assert "scikit-image" in DEV  # tests/test_models_efficientnet.py reads skimage.data
    uses = third_party_imports("wasi_lab", "notebooks")
    assert not NOT_IN_THE_WORKSHOP & set(uses), {
        d: uses[d] for d in NOT_IN_THE_WORKSHOP & set(uses)
    }


def test_every_base_dependency_is_used() -> None:
    imported = set(third_party_imports("wasi_lab", "notebooks"))
    unused = BASE - imported - PROGRAMS
    assert not unused, f"declared in [project] dependencies but imported nowhere: {unused}"


def test_tests_and_benchmarks_import_only_what_make_test_installs() -> None:
    missing = {
        d: sorted(u)
        for d, u in third_party_imports("tests", "benchmarks").items()
        if d not in BASE | DEV
    }
    assert not missing, f"not in the base or the dev extra: {missing}"
    unused = DEV - OPTIONAL - set(third_party_imports("tests", "benchmarks")) - PROGRAMS
    assert not unused, f"declared in dev but imported by no test: {unused}"


#: Import names of the extras, as their distributions provide them.
EXTRA_MODULES = sorted(
    {
        top
        for top, ds in packages_distributions().items()
        if any(_norm(d) in DEV - BASE for d in ds) and not top.startswith("_")
    }
)

BLOCKED_IMPORT = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Block())
import wasi_lab
names = [m.name for m in pkgutil.walk_packages(wasi_lab.__path__, "wasi_lab.")
         if m.name != "wasi_lab.__main__"]  # that one runs the CLI
for name in names:
    importlib.import_module(name)
from wasi_lab.cli import build_parser
from wasi_lab.models.registry import _onnx_available
build_parser()
assert not _onnx_available()
print(len(names), "modules")
"""


def test_the_package_imports_without_the_extras() -> None:
    """What a `make lab` venv has: every module imports, the CLI builds its parser, and the
    model step knows not to export ONNX."""
    assert {"onnx", "onnxruntime", "tract", "pytest", "playwright"} <= set(EXTRA_MODULES)
    out = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, ",".join(EXTRA_MODULES)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[0]) > 30


def test_the_blocker_blocks() -> None:
    """The check above can fail: a blocked package does not import."""
    script = BLOCKED_IMPORT.replace("import wasi_lab\n", "import tract\n")
    out = subprocess.run(
        [sys.executable, "-c", script, "tract"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode != 0 and "(blocked)" in out.stderr
