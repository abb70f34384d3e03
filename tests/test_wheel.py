"""The kit outside its checkout: where data lives, and a built wheel run from elsewhere.

The fast tests cover `wasi_lab.paths` (checkout or user data directory) and the notebook
copy of `wasi-lab lab`. The slow ones build the wheel from a copy of the sources, install
it into a fresh venv and run `wasi-lab setup`, `predict`, `serve` and `lab` from a folder
outside the checkout, with the data directory in a tmp folder ($WASI_LAB_HOME).

The fresh venv gets the dependencies of the running venv by a .pth line naming its
site-packages: a plain path is put on sys.path but not processed as a site directory, so
the editable install of the checkout that lives there (a .pth hook) is not loaded, and the
wheel's own copy, earlier on sys.path, is what `import wasi_lab` finds (asserted below).
Installing the dependencies from PyPI instead would take minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.jupyterlab import free_port
from wasi_lab import paths
from wasi_lab.setup import copy_notebooks, missing_test_packages, run_lab, run_setup

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ where data lives (fast)
def test_a_checkout_is_recognised_by_its_pyproject_and_guest(tmp_path: Path) -> None:
    pkg = tmp_path / "clone" / "wasi_lab"
    pkg.mkdir(parents=True)
    assert paths.checkout_root(pkg) is None  # site-packages looks like this
    (tmp_path / "clone" / "pyproject.toml").touch()
    assert paths.checkout_root(pkg) is None  # some other project's pyproject
    (tmp_path / "clone" / "guest").mkdir()
    assert paths.checkout_root(pkg) == tmp_path / "clone"
    assert paths.data_root(pkg, env={}) == tmp_path / "clone"
    # This test runs from a checkout: the kit's data and guest are the checkout's.
    assert paths.CHECKOUT == REPO and paths.MODELS_DIR == REPO / "models"
    assert paths.PREBUILT_MODULE == REPO / "guest" / "prebuilt" / paths.LIB_NAME


def test_outside_a_checkout_data_goes_to_the_user_data_dir(tmp_path: Path) -> None:
    pkg = tmp_path / "site-packages" / "wasi_lab"
    pkg.mkdir(parents=True)
    home = tmp_path / "me"
    assert paths.data_root(pkg, env={"WASI_LAB_HOME": str(tmp_path / "kit")}) == tmp_path / "kit"
    assert paths.user_data_dir({}, "linux", home) == home / ".local" / "share" / "wasi-lab"
    assert paths.user_data_dir({"XDG_DATA_HOME": "/xdg"}, "linux", home) == Path("/xdg/wasi-lab")
    # A relative XDG_DATA_HOME is invalid by the XDG spec: ignored, as platformdirs does.
    assert paths.user_data_dir({"XDG_DATA_HOME": "rel"}, "linux", home) == (
        home / ".local" / "share" / "wasi-lab"
    )
    assert paths.user_data_dir({}, "darwin", home) == (
        home / "Library" / "Application Support" / "wasi-lab"
    )
    assert paths.user_data_dir({"LOCALAPPDATA": str(tmp_path / "L")}, "win32", home) == (
        tmp_path / "L" / "wasi-lab"
    )
    assert paths.user_data_dir({}, "win32", home) == home / "AppData" / "Local" / "wasi-lab"
    assert paths.user_data_dir({"WASI_LAB_HOME": "~/k"}, "darwin", home) == (
        Path.home() / "k"
    )  # the variable wins everywhere, ~ expanded
    assert paths.user_data_dir({"WASI_LAB_HOME": "rel"}, "linux", home) == Path.cwd() / "rel"
    assert paths.user_data_dir({"WASI_LAB_HOME": ""}, "linux", home) == (
        home / ".local" / "share" / "wasi-lab"
    )  # set but empty: as if unset


def test_notebooks_are_copied_once_and_a_learners_copy_is_never_overwritten(tmp_path: Path) -> None:
    src, work = tmp_path / "shipped", tmp_path / "work"
    src.mkdir()
    for name in ("01.ipynb", "02.ipynb"):
        (src / name).write_text(f'{{"shipped": "{name}"}}')
    (src / "notes.txt").write_text("not a notebook")
    assert copy_notebooks(src, work) == (["01.ipynb", "02.ipynb"], [])
    assert sorted(p.name for p in work.iterdir()) == ["01.ipynb", "02.ipynb"]
    (work / "01.ipynb").write_text('{"mine": true}')  # the learner's edit
    (work / "02.ipynb").unlink()  # ... and a deleted notebook
    (src / "03.ipynb").write_text("{}")  # a newer kit adds one
    assert copy_notebooks(src, work) == (["02.ipynb", "03.ipynb"], ["01.ipynb"])
    assert (work / "01.ipynb").read_text() == '{"mine": true}'
    assert (work / "02.ipynb").read_text() == '{"shipped": "02.ipynb"}'
    assert not list(work.glob(".*.tmp"))


def test_lab_dry_run_outside_the_course_names_the_copy(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_lab(dry_run=True, log=lines.append, notebooks=tmp_path / "nb") == 0
    assert lines[0] == f"copy the notebooks missing in {tmp_path / 'nb'} from {REPO / 'notebooks'}"
    assert f"--notebook-dir={tmp_path / 'nb'}" in lines[-1]
    assert not (tmp_path / "nb").exists()  # a dry run copies nothing
    lines.clear()
    assert run_lab(dry_run=True, log=lines.append, source=tmp_path / "none") == 1
    assert "no notebooks at" in lines[0]


def test_setup_outside_a_checkout_skips_the_build_and_names_the_module(monkeypatch) -> None:
    from wasi_lab import setup

    monkeypatch.setattr(
        setup,
        "ensure_toolchain_and_build",
        lambda build: pytest.fail("no toolchain step outside a checkout"),
    )
    lines: list[str] = []
    assert run_setup(lines.append, checkout=None) == 0
    assert lines[0].startswith("[setup] guest: installed kit, running the packaged ")
    assert [line.split(":")[0] for line in lines[1:]] == ["[setup] models", "[setup] images"]
    monkeypatch.setattr(setup, "PREBUILT_MODULE", Path("/nonexistent/guest.wasm"))
    lines.clear()
    assert run_setup(lines.append, checkout=None) == 1
    assert "is missing: reinstall wasi-lab" in lines[1]


def test_make_test_installs_rustfmt_for_the_format_check() -> None:
    """`make lint`'s `cargo fmt --check` needs rustfmt, which Debian's rustc does not bring."""
    assert missing_test_packages(lambda c: None) == ["chromium", "chromium-driver", "rustfmt"]
    assert missing_test_packages(lambda c: None if c == "cargo-fmt" else c) == ["rustfmt"]
    assert missing_test_packages(lambda c: c) == []


# ------------------------------------------------------------------- a wheel, elsewhere (slow)
#: What an sdist holds (MANIFEST.in and setuptools' defaults): the wheel is built from a copy
#: of these, so a stale build/ in the checkout can never leak into it.
SOURCES = (
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "LICENSE",
    "wasi_lab",
    "guest/Cargo.toml",
    "guest/src",
    "guest/prebuilt",
    "hosts/node",
    "notebooks",
    "docs/build-results",
)
IGNORE = shutil.ignore_patterns(
    "__pycache__", "__wasmcache__", ".ipynb_checkpoints", "*.pyc", "node_modules"
)


@dataclass
class Kit:
    venv: Path
    wheel: Path
    home: Path  # $WASI_LAB_HOME
    work: Path  # the current directory, outside the checkout
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.venv / "bin" / "wasi-lab"), *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        with log.open("w") as out:
            return subprocess.Popen(
                [str(self.venv / "bin" / "wasi-lab"), *args],
                cwd=self.work,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for rel in SOURCES:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_dir():
            shutil.copytree(REPO / rel, src / rel, ignore=IGNORE)
        else:
            shutil.copy2(REPO / rel, src / rel)
    # Build isolation fetches the build backend pyproject asks for (setuptools>=77) from PyPI.
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(root / "dist"),
            str(src),
        ]
    )
    (wheel,) = (root / "dist").glob("wasi_lab-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    fresh = Path(
        _run(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ]
        ).stdout.strip()
    )
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (fresh / "_wasi_lab_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ]
    )
    home, work = root / "home", root / "work"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "WASI_LAB_MODULE", "VIRTUAL_ENV")
    }
    env.update(
        WASI_LAB_HOME=str(home),
        PYTHONUNBUFFERED="1",
        JUPYTER_CONFIG_DIR=str(root / "jupyter" / "cfg"),
        JUPYTER_DATA_DIR=str(root / "jupyter" / "data"),
        JUPYTER_RUNTIME_DIR=str(root / "jupyter" / "rt"),
    )
    return Kit(venv=venv, wheel=wheel, home=home, work=work, env=env)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


#: The checkout's files an installed kit reads, shipped under wasi_lab/kit/ in the same layout.
SHIPPED = (
    "guest/prebuilt/*.wasm",
    "guest/Cargo.toml",
    "guest/src/**/*.rs",
    "hosts/node/*.mjs",
    "notebooks/*.ipynb",
    "docs/build-results/build-results.json",
)


@pytest.mark.slow
def test_the_wheel_carries_the_guest_the_node_host_and_the_notebooks(kit: Kit) -> None:
    with zipfile.ZipFile(kit.wheel) as zf:
        names = set(zf.namelist())
        for pattern in SHIPPED:
            files = sorted(REPO.glob(pattern))
            assert files, pattern
            for f in files:
                member = f"wasi_lab/kit/{f.relative_to(REPO).as_posix()}"
                assert member in names, member
                assert _sha(zf.read(member)) == _sha(f.read_bytes()), member
        assert {
            "wasi_lab/kit/guest/src/abi.rs",
            "wasi_lab/kit/guest/src/engine/plan.rs",
            "wasi_lab/kit/guest/prebuilt/wasi_lab_guest.wasm",
        } <= names
        assert not [n for n in names if "__pycache__" in n or "__wasmcache__" in n]


@pytest.mark.slow
def test_the_installed_kit_is_the_wheels_not_the_checkout(kit: Kit) -> None:
    out = _run(
        [
            str(kit.venv / "bin" / "python"),
            "-c",
            "import json, wasi_lab, wasi_lab.paths as p; print(json.dumps({"
            "'file': wasi_lab.__file__, 'checkout': str(p.CHECKOUT), "
            "'module': str(p.PREBUILT_MODULE), 'models': str(p.MODELS_DIR)}))",
        ],
        cwd=kit.work,
        env=kit.env,
    )
    where = json.loads(out.stdout)
    assert Path(where["file"]).is_relative_to(kit.venv), where
    assert where["checkout"] == "None"
    assert Path(where["module"]).is_relative_to(kit.venv) and Path(where["module"]).is_file()
    assert where["models"] == str(kit.home / "models")
    out = kit.run("build")  # nothing to build into: a clear refusal, not a cargo error
    assert out.returncode == 1 and "building the guest needs a checkout" in out.stderr, out


@pytest.mark.slow
def test_setup_then_predict_from_outside_the_checkout(kit: Kit) -> None:
    out = kit.run("setup")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "installed kit, running the packaged" in out.stdout
    assert (kit.home / "models" / "efficientnet-lite0.pb").is_file()
    image = kit.home / "images" / "grace_hopper.jpg"
    assert image.is_file()
    out = kit.run("predict", str(image), "--top", "1", "--json")
    assert out.returncode == 0, out.stderr
    (pred,) = json.loads(out.stdout)
    assert pred["top"][0]["label"] == "military uniform" and pred["top"][0]["index"] == 652
    assert not list(kit.work.iterdir())  # nothing written into the current directory
    # The compiled-module cache is not written into the installed package (pip would not
    # remove it on uninstall).
    assert not list(kit.venv.rglob("__wasmcache__"))


def _wait(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            r = httpx.get(url, timeout=2, trust_env=False)
            if r.status_code == 200:
                return r
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer in {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_serve_answers_a_prediction_from_outside_the_checkout(
    kit: Kit, tmp_path: Path, grace_hopper_bytes: bytes
) -> None:
    port, log = free_port(), tmp_path / "serve.log"
    proc = kit.popen("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", log=log)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/healthz", proc, log)
        r = httpx.post(f"{base}/predict", content=grace_hopper_bytes, timeout=60, trust_env=False)
        assert r.status_code == 200, r.text
        assert r.json()["top"][0]["label"] == "military uniform"
    finally:
        _stop(proc)


@pytest.mark.slow
def test_lab_copies_the_notebooks_then_starts_jupyterlab(kit: Kit, tmp_path: Path) -> None:
    nbdir = kit.home / "notebooks"
    nbdir.mkdir(parents=True, exist_ok=True)
    mine = nbdir / "04_predictions.ipynb"
    mine.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    port, log = free_port(), tmp_path / "lab.log"
    proc = kit.popen("lab", "--no-browser", "--port", str(port), log=log)
    try:
        status = _wait(f"http://127.0.0.1:{port}/api", proc, log)
        assert "version" in status.json()
    finally:
        _stop(proc)
    text = log.read_text()
    shipped = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert f"notebooks in {nbdir}: {len(shipped) - 1} copied, 1 kept" in text, text[-3000:]
    assert sorted(p.name for p in nbdir.glob("*.ipynb")) == [p.name for p in shipped]
    for nb in shipped:
        if nb.name != mine.name:
            assert (nbdir / nb.name).read_bytes() == nb.read_bytes(), nb.name
    assert mine.read_text().startswith('{"cells": []')  # the learner's copy, untouched
    assert f"--notebook-dir={nbdir}" in text or str(nbdir) in text


#: Run by the fresh venv's Python: the notebook in a kernel of that venv, from its folder,
#: plus one cell that reports which wasi_lab the kernel imported.
_EXECUTE = """
import json, sys
from pathlib import Path
import nbformat
from nbclient import NotebookClient
path = Path(sys.argv[1])
nb = nbformat.read(path, as_version=4)
nb.cells.append(nbformat.v4.new_code_cell("import wasi_lab; print(wasi_lab.__file__)"))
NotebookClient(nb, timeout=300, kernel_name="python3",
               resources={"metadata": {"path": str(path.parent)}}).execute()
print(json.dumps(["".join(o.get("text", "") for o in c.get("outputs", [])
                          if o.get("name") == "stdout") for c in nb.cells]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["01_compile_the_guest.ipynb", "02_inspect_the_exports.ipynb", "05_hosts_and_timing.ipynb"],
)
def test_a_copied_notebook_runs_in_the_installed_kit(kit: Kit, name: str, tmp_path: Path) -> None:
    """The stored build record and the command guest (01), listings of the guest's sources
    (02) and the Node host (05), all from the wheel's files, in a learner's working copy.
    (00, 03, 04 and 06-09 passed too when run by hand this way; 5 to 27 s each.)"""
    assert kit.run("setup").returncode == 0
    nbdir = tmp_path / "notebooks"  # not the lab test's folder, which holds a learner's edit
    _run(
        [
            str(kit.venv / "bin" / "python"),
            "-c",
            "from wasi_lab.paths import NOTEBOOKS_SOURCE as s; from wasi_lab.setup import "
            f"copy_notebooks; copy_notebooks(s, __import__('pathlib').Path({str(nbdir)!r}))",
        ],
        cwd=kit.work,
        env=kit.env,
    )
    out = _run(
        [str(kit.venv / "bin" / "python"), "-c", _EXECUTE, str(nbdir / name)],
        cwd=kit.work,
        env=kit.env,
    )
    printed = json.loads(out.stdout.splitlines()[-1])
    assert Path(printed[-1].strip()).is_relative_to(kit.venv), printed[-1]
    assert any(text.strip() for text in printed[:-1])  # the course's cells printed
