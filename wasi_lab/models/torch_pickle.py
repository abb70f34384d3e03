"""Read a PyTorch ``state_dict`` saved in torch's *legacy* (non-zip) format, without torch.

Why not just ``torch.load``? Torch is a 700 MB dependency for what is, on disk, a
few pickles followed by raw little-endian arrays — and ``torch.load`` on an
untrusted file can execute arbitrary code. This reader is the teaching version:
a :class:`pickle.Unpickler` whose ``find_class`` only knows the handful of names a
state_dict needs and refuses everything else.

Layout of a legacy ``.pth`` file (``torch/serialization.py``, ``_legacy_save``)::

    pickle(MAGIC_NUMBER)            # 0x1950a86a20f9469cfc6c
    pickle(PROTOCOL_VERSION)        # 1001
    pickle(sys_info)                # {"little_endian": True, "type_sizes": {...}, ...}
    pickle(state_dict)              # tensors reference storages by *persistent id*:
                                    #   ("storage", StorageType, key, location, numel, view)
    pickle([storage keys...])       # the order in which raw storages follow
    for each key: int64 numel, then numel * itemsize raw bytes
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TorchPickleError", "load_state_dict", "MAGIC_NUMBER", "PROTOCOL_VERSION"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class TorchPickleError(ValueError):
    """The file is not a legacy torch state_dict we can (or are willing to) read."""


@dataclass(frozen=True)
class _StorageType:
    """Stands in for ``torch.FloatStorage`` & co.: only the element dtype matters."""

    name: str
    dtype: np.dtype


_STORAGE_TYPES = {
    name: _StorageType(name, np.dtype(dt))
    for name, dt in {
        "FloatStorage": "<f4",
        "DoubleStorage": "<f8",
        "HalfStorage": "<f2",
        "LongStorage": "<i8",
        "IntStorage": "<i4",
        "ShortStorage": "<i2",
        "CharStorage": "i1",
        "ByteStorage": "u1",
        "BoolStorage": "?",
    }.items()
}


class _Storage:
    """A storage announced by the pickle whose bytes come later in the file."""

    def __init__(self, stype: _StorageType, key: str, numel: int) -> None:
        self.stype, self.key, self.numel = stype, key, numel
        self.data: np.ndarray | None = None


@dataclass
class _LazyTensor:
    """What ``_rebuild_tensor_v2`` returns: a view description, materialised at the end."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        data = self.storage.data
        if data is None:
            raise TorchPickleError(f"storage {self.storage.key!r} has no data in the file")
        if not self.size:
            return data[self.offset : self.offset + 1].reshape(()).copy()
        last = self.offset + sum((s - 1) * st for s, st in zip(self.size, self.stride, strict=True))
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, data.dtype)
        if self.offset < 0 or last >= data.size or min(self.stride) < 0:
            raise TorchPickleError(
                f"tensor view {self.size} / {self.stride} @ {self.offset} "
                f"exceeds its storage of {data.size} elements"
            )
        item = data.itemsize
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.array(view)  # copy: detach from the shared storage


def _rebuild_tensor_v2(
    storage: _Storage,
    offset: int,
    size: tuple,
    stride: tuple,
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _LazyTensor:
    if not isinstance(storage, _Storage):
        raise TorchPickleError("tensor rebuilt from something that is not a storage")
    return _LazyTensor(
        storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride)
    )


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple) -> _LazyTensor:
    return _rebuild_tensor_v2(storage, offset, size, stride)


def _rebuild_parameter(
    data: _LazyTensor, requires_grad: bool = False, backward_hooks: Any = None
) -> _LazyTensor:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): st for name, st in _STORAGE_TYPES.items()},
}


class _SafeUnpickler(pickle.Unpickler):
    """Only resolves the names in ``_ALLOWED``; storages become :class:`_Storage`."""

    def __init__(self, file: io.BytesIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise TorchPickleError(
                f"refusing to load {module}.{name}: not part of a plain state_dict"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise TorchPickleError(f"unexpected persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid[:5]
        if not isinstance(stype, _StorageType):
            raise TorchPickleError(f"unknown storage type {stype!r:.80}")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(stype, key, int(numel))
        return self.storages[key]


def _load_one(stream: io.BytesIO, storages: dict[str, _Storage], what: str) -> Any:
    try:
        return _SafeUnpickler(stream, storages).load()
    except TorchPickleError:
        raise
    except Exception as exc:  # pickle raises many types on garbage: normalise them
        raise TorchPickleError(f"cannot unpickle the {what}: {exc}") from exc


def _materialise(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialise()
    if isinstance(obj, dict):
        return {k: _materialise(v) for k, v in obj.items()}
    return obj


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Read a legacy-format torch ``state_dict`` into ``{name: ndarray}`` (in file order)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"PK":
        raise TorchPickleError(
            f"{path}: a zip-format torch file; only the legacy format is supported"
        )
    stream = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}
    magic = _load_one(stream, storages, "magic number")
    if magic != MAGIC_NUMBER:
        raise TorchPickleError(f"{path}: not a torch file (bad magic number)")
    version = _load_one(stream, storages, "protocol version")
    if version != PROTOCOL_VERSION:
        raise TorchPickleError(f"{path}: unsupported torch protocol version {version!r}")
    sys_info = _load_one(stream, storages, "sys_info")
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise TorchPickleError(f"{path}: only little-endian files are supported")
    state = _load_one(stream, storages, "state_dict")
    if not isinstance(state, dict):
        raise TorchPickleError(
            f"{path}: top-level object is {type(state).__name__}, not a state_dict"
        )
    keys = _load_one(stream, storages, "storage key list")
    if not isinstance(keys, list):
        raise TorchPickleError(f"{path}: malformed storage key list")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise TorchPickleError(f"{path}: storage key {key!r} was never referenced")
        header = stream.read(8)
        if len(header) != 8:
            raise TorchPickleError(f"{path}: truncated before storage {key!r}")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise TorchPickleError(
                f"{path}: storage {key!r} has {numel} elements, "
                f"the pickle announced {storage.numel}"
            )
        nbytes = numel * storage.stype.dtype.itemsize
        body = stream.read(nbytes)
        if len(body) != nbytes:
            raise TorchPickleError(f"{path}: truncated inside storage {key!r}")
        storage.data = np.frombuffer(body, storage.stype.dtype)
    result = _materialise(state)
    out: dict[str, np.ndarray] = {}
    for name, value in result.items():
        if isinstance(value, np.ndarray):
            out[str(name)] = value
    return out
