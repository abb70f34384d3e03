"""Notebook 03's host-code checks: right answers pass, each kind of wrong answer fails."""

from __future__ import annotations

import pytest
import wasmtime

from wasi_lab import host_exercises
from wasi_lab.models.registry import ensure_model
from wasi_lab.paths import default_module


@pytest.fixture(scope="module")
def plain():
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, str(default_module()))
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    return engine, linker, module


@pytest.fixture(scope="module")
def model() -> bytes:
    return ensure_model("efficientnet-lite0", progress=False).read_bytes()


def right(store, instance, data):
    ex = instance.exports(store)
    ptr = ex["alloc"](store, len(data))
    ex["memory"].write(store, data, ptr)
    return ptr


def test_check_writer(
    plain, model: bytes, grace_hopper_bytes: bytes, capsys: pytest.CaptureFixture
) -> None:
    engine, linker, module = plain
    store, instance = host_exercises.fresh_instance(engine, linker, module)
    mptr, iptr = right(store, instance, model), right(store, instance, grace_hopper_bytes)
    cls = instance.exports(store)["infer_from_ptrs"](
        store, mptr, len(model), iptr, len(grace_hopper_bytes)
    )
    args = (engine, linker, module, model, grace_hopper_bytes)

    def no_copy(store, instance, data):
        return instance.exports(store)["alloc"](store, len(data))

    def unwritten(store, instance, data): ...

    assert host_exercises.check_writer(right, *args, expected_class=cls)
    assert not host_exercises.check_writer(None, *args, expected_class=cls)
    assert not host_exercises.check_writer(unwritten, *args, expected_class=cls)
    assert not host_exercises.check_writer(no_copy, *args, expected_class=cls)
    assert not host_exercises.check_writer(lambda s, i, d: "0x10", *args, expected_class=cls)
    assert not host_exercises.check_writer(right, *args, expected_class=cls + 1)
    lines = capsys.readouterr().out.splitlines()
    assert [line[0] for line in lines] == ["✓", "✗", "✗", "✗", "✗", "✗"]
    assert "returned None for the model" in lines[2]
    assert "are not the model's bytes" in lines[3]
    assert "not an offset" in lines[4]
    assert f"returned {cls}" in lines[5]


def test_check_jpeg_page(plain, grace_hopper_bytes: bytes, capsys: pytest.CaptureFixture) -> None:
    engine, linker, module = plain
    store, instance = host_exercises.fresh_instance(engine, linker, module)
    ex = instance.exports(store)
    ex["alloc"](store, 200_000)  # push the image off page 0
    iptr = right(store, instance, grace_hopper_bytes)
    page = iptr // 65536
    assert host_exercises.check_jpeg_page(page, store, ex["memory"], iptr)
    assert not host_exercises.check_jpeg_page(None, store, ex["memory"], iptr)
    assert not host_exercises.check_jpeg_page(page + 1, store, ex["memory"], iptr)
    assert not host_exercises.check_jpeg_page(str(page), store, ex["memory"], iptr)
    ex["memory"].write(store, b"\0\0\0", iptr)  # no magic there any more: the right page fails
    assert not host_exercises.check_jpeg_page(page, store, ex["memory"], iptr)
    assert [line[0] for line in capsys.readouterr().out.splitlines()] == ["✓", "✗", "✗", "✗", "✗"]
