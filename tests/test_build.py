"""The prebuilt module is what the sources build to (when a toolchain is here)."""

from __future__ import annotations

import numpy as np
import pytest

from wasi_lab.build import BuildError, build_guest
from wasi_lab.inspect import inspect_module
from wasi_lab.runtime import Guest
from wasi_lab.toolchain import ToolchainError, find_toolchain


@pytest.fixture(scope="module")
def rebuilt():
    try:
        tc = find_toolchain(check_network=False)
    except ToolchainError as exc:
        pytest.skip(f"no wasm toolchain: {exc}")
    return build_guest(toolchain=tc, progress=False)


def test_rebuilt_module_has_the_prebuilt_exports(rebuilt, module_path) -> None:
    ours = {(e.name, e.signature) for e in inspect_module(rebuilt.module).exports}
    shipped = {(e.name, e.signature) for e in inspect_module(module_path).exports}
    assert ours == shipped


def test_rebuilt_module_gives_the_same_outputs(rebuilt, module_path, grace_hopper_bytes) -> None:
    a = Guest(rebuilt.module).decode_image(grace_hopper_bytes, mode=1)
    b = Guest(module_path).decode_image(grace_hopper_bytes, mode=1)
    assert a[:2] == b[:2]
    np.testing.assert_array_equal(a[2], b[2])


def test_second_build_is_a_no_op(rebuilt) -> None:
    again = build_guest(toolchain=rebuilt.toolchain, progress=False)
    assert again.up_to_date and again.module == rebuilt.module


def test_only_the_default_release_build_may_replace_prebuilt(rebuilt) -> None:
    with pytest.raises(BuildError, match="only the default release build"):
        build_guest(
            toolchain=rebuilt.toolchain, release=False, progress=False, update_prebuilt=True
        )
