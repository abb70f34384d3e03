"""Fixtures shared by the whole suite: the real guest module, sample images, a Guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasi_lab.paths import default_module
from wasi_lab.pngs import make_png
from wasi_lab.runtime import Guest


@pytest.fixture(scope="session")
def module_path() -> Path:
    path = default_module()
    assert path.exists(), f"{path} missing: run `make setup`"
    return path


@pytest.fixture()
def guest(module_path: Path) -> Guest:
    return Guest(module_path)


@pytest.fixture(scope="session")
def grace_hopper_bytes() -> bytes:
    import matplotlib.cbook as cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()


@pytest.fixture(scope="session")
def small_png() -> bytes:
    return make_png(40, 30)
