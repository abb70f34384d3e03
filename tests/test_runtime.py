"""The memory ABI, for real: alloc, write, read, checked pointers, traps and recovery."""

from __future__ import annotations

import numpy as np
import pytest

from wasi_lab.pngs import decompression_bomb, make_png
from wasi_lab.runtime import (
    BadArgumentError,
    BadImageError,
    BadPointerError,
    Guest,
    GuestTrap,
    ImageTooLargeError,
    LengthMismatchError,
    compile_module,
)


def test_write_and_read_back_bytes(guest: Guest) -> None:
    data = bytes(range(256)) * 1000
    ptr = guest.write_bytes(data, "payload")
    assert ptr > 0
    assert guest.read_bytes(ptr, len(data)) == data
    assert guest.allocations[ptr].length == len(data)
    guest.dealloc(ptr, len(data))
    assert ptr not in guest.allocations


def test_numpy_arrays_are_written_with_one_copy(guest: Guest) -> None:
    arr = np.arange(1000, dtype=np.float32)
    ptr = guest.write_bytes(arr)
    np.testing.assert_array_equal(guest.read_f32(ptr, 1000), arr)


def test_memory_grows_for_a_large_block(guest: Guest) -> None:
    before = guest.pages
    guest.alloc(10 * 65536)
    assert guest.pages >= before + 10


def test_dealloc_refuses_foreign_pointer_and_wrong_length(guest: Guest) -> None:
    ptr = guest.alloc(100)
    with pytest.raises(LengthMismatchError, match="holds 100 bytes"):
        guest.dealloc(ptr, 99)
    with pytest.raises(BadPointerError):
        guest.dealloc(ptr + 4, 96)
    guest.dealloc(ptr, 100)
    with pytest.raises(BadPointerError, match="freed"):  # double free
        guest.dealloc(ptr, 100)
    assert guest.call("live_allocations") == 0


def test_alloc_zero_is_a_clear_error(guest: Guest) -> None:
    with pytest.raises(BadArgumentError):
        guest.alloc(0)


def test_decode_image_gives_the_224_tensor(guest: Guest, grace_hopper_bytes: bytes) -> None:
    w, h, tensor = guest.decode_image(grace_hopper_bytes, mode=0)
    assert (w, h) == (512, 600)
    assert tensor.shape == (1, 224, 224, 3)
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0  # article mode: x/255
    _, _, model = guest.decode_image(grace_hopper_bytes, mode=1)
    assert model.min() >= -1.0 and model.max() <= 1.0 and model.min() < 0


def test_decode_png_matches_its_pixels(guest: Guest) -> None:
    pixels = bytes([200, 100, 50]) * (224 * 224)
    w, h, tensor = guest.decode_image(make_png(224, 224, pixels), mode=0)
    assert (w, h) == (224, 224)
    np.testing.assert_allclose(tensor[0, 10, 10], [200 / 255, 100 / 255, 50 / 255], atol=1e-6)


@pytest.mark.parametrize("bad", [b"", b"hello, not an image", bytes(range(256)) * 4])
def test_garbage_and_empty_images_are_refused(guest: Guest, bad: bytes) -> None:
    if not bad:
        with pytest.raises(BadArgumentError):
            guest.alloc(len(bad))
        return
    with pytest.raises(BadImageError):
        guest.decode_image(bad)
    assert guest.call("live_allocations") == 0  # nothing leaked on the error path


def test_truncated_png_is_refused(guest: Guest, small_png: bytes) -> None:
    with pytest.raises(BadImageError):
        guest.decode_image(small_png[: len(small_png) // 2])


def test_decompression_bomb_is_refused_before_decoding(guest: Guest) -> None:
    bomb = make_png(20000, 20000)
    assert bomb == decompression_bomb()
    assert len(bomb) < 200  # what notebook 06 and wasi_lab.pngs say of its size
    assert guest.image_size(bomb) == (20000, 20000)
    pages = guest.pages
    with pytest.raises(ImageTooLargeError, match="20000x20000"):
        guest.decode_image(bomb)
    # 1.2 GB of pixels were never allocated: only the 602 KB output block was.
    assert guest.pages - pages < 16


def test_unknown_mode_is_refused(guest: Guest, small_png: bytes) -> None:
    with pytest.raises(BadArgumentError, match="mode"):
        guest.decode_image(small_png, mode=7)


def test_pointer_outside_any_block_is_refused(guest: Guest) -> None:
    out = guest.alloc(guest.call("decoded_len"))
    with pytest.raises(BadPointerError):
        guest.call("decode_image", 8, 100, 0, out)  # 8 is in the data segment, not a block


def test_length_running_past_the_block_is_refused(guest: Guest, small_png: bytes) -> None:
    ptr = guest.write_bytes(small_png)
    out = guest.alloc(guest.call("decoded_len"))
    with pytest.raises(LengthMismatchError, match="run past the end"):
        guest.call("decode_image", ptr, len(small_png) + 1000, 0, out)
    guest.call("decode_image", ptr, len(small_png), 0, out)  # the same guest still works


def test_trap_poisons_the_instance_and_reset_recovers(guest: Guest, small_png: bytes) -> None:
    with pytest.raises(GuestTrap, match="trap_for_tests"):
        guest.call("trap_for_tests")
    with pytest.raises(GuestTrap, match="reset"):
        guest.alloc(10)
    guest.reset()
    assert guest.decode_image(small_png)[:2] == (40, 30)


def test_writes_outside_memory_are_refused_by_the_host(guest: Guest) -> None:
    with pytest.raises(IndexError):
        guest.write_into(guest.memory.data_len(guest.store) - 2, b"1234")


def test_snapshot_records_blocks_and_layout(guest: Guest) -> None:
    ptr = guest.write_bytes(b"model bytes" * 100, "model")
    snap = guest.snapshot("after model")
    assert snap.size == snap.pages * 65536
    assert snap.data[ptr : ptr + 11] == b"model bytes"
    assert 0 < snap.data_end <= snap.heap_base <= ptr
    assert [a.label for a in snap.allocations] == ["model"]


def test_compile_cache_is_used_the_second_time(module_path, tmp_path) -> None:
    copy = tmp_path / module_path.name
    copy.write_bytes(module_path.read_bytes())
    cold = compile_module(copy)
    warm = compile_module(copy)
    assert not cold.from_cache and warm.from_cache
    assert list((tmp_path / "__wasmcache__").glob("*.cwasm"))
    cold_again = compile_module(copy, use_cache=False)
    assert not cold_again.from_cache


def test_corrupt_cache_file_is_replaced(module_path, tmp_path) -> None:
    copy = tmp_path / module_path.name
    copy.write_bytes(module_path.read_bytes())
    compile_module(copy)
    (cached,) = (tmp_path / "__wasmcache__").glob("*.cwasm")
    cached.write_bytes(b"not a serialized module")
    again = compile_module(copy)
    assert not again.from_cache
    Guest(again).alloc(16)


def test_a_length_that_wraps_around_memory_is_refused(guest: Guest, small_png: bytes) -> None:
    ptr = guest.write_bytes(small_png)
    out = guest.alloc(guest.call("decoded_len"))
    # -16 is 0xFFFFFFF0 as the guest's usize: ptr + len wraps to just below ptr.
    with pytest.raises(LengthMismatchError):
        guest.call("decode_image", ptr, -16, 0, out)
    guest.call("decode_image", ptr, len(small_png), 0, out)


def test_command_guest_gets_its_argv(tmp_path) -> None:
    from wasi_lab.build import PREBUILT_COMMAND

    g = Guest(PREBUILT_COMMAND, argv=["wasi-lab-classify", "--help"])
    assert g.argv == ["wasi-lab-classify", "--help"]


def test_image_too_big_for_a_capped_guest_is_a_clean_error(module_path) -> None:
    from wasi_lab.runtime import GuestOutOfMemoryError

    capped = Guest(module_path, memory_limit=48 << 20)
    big = make_png(4000, 4000, bytes(4000 * 4000 * 3))  # 16 MP: 48 MiB of pixels alone
    with pytest.raises(GuestOutOfMemoryError, match="4000x4000"):
        capped.decode_image(big)
    assert capped.decode_image(make_png(64, 48))[:2] == (64, 48)  # still usable, no trap
