"""Tensors of a state dict saved by `torch.save` in its legacy (non-zip) format, read without
unpickling: the LPIPS package ships its linear layers this way (`lpips/weights/v0.1/vgg.pth`).

The legacy format is five pickles and the raw storages: a magic number, the protocol version,
system info, the object (tensors as persistent ids of storages), the list of storage keys, then
per key an int64 element count and the little-endian data. `read_legacy_state_dict` walks the
object's pickle opcodes with `pickletools` on a small stack machine that knows only containers,
numbers, strings and three names (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
`torch.<Type>Storage`): nothing is imported or called, and any other name or opcode is refused.
"""

from __future__ import annotations

import io
import pickletools
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from superres.errors import ConfigError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8,
}
_MARK = object()


@dataclass(frozen=True)
class _Name:
    """A GLOBAL the reader knows, kept as its name: never imported."""

    module: str
    name: str


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: Any
    size: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _allowed(module: str, name: str) -> bool:
    return (module, name) in {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2")} or (
        module == "torch" and name in STORAGE_DTYPES
    )


def _run_pickle(stream: io.BytesIO, path: Path) -> Any:
    """The value of the next pickle in `stream`, by the restricted stack machine."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[int, Any] = {}

    def pop_mark() -> list[Any]:
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    for opcode, arg, _ in pickletools.genops(stream):
        op = opcode.name
        if op in ("PROTO", "FRAME"):
            continue
        if op == "STOP":
            return stack.pop()
        if op == "MARK":
            marks.append(len(stack))
        elif op in ("BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT",
                    "BINUNICODE", "SHORT_BINUNICODE", "BINSTRING", "SHORT_BINSTRING"):
            stack.append(arg)
        elif op in ("NONE", "NEWTRUE", "NEWFALSE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[op])
        elif op in ("EMPTY_DICT", "EMPTY_LIST"):
            stack.append({} if op == "EMPTY_DICT" else [])
        elif op in ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3"):
            count = ("EMPTY_TUPLE", "TUPLE1", "TUPLE2", "TUPLE3").index(op)
            items = stack[len(stack) - count:] if count else []
            del stack[len(stack) - count:]
            stack.append(tuple(items))
        elif op == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif op == "APPEND":
            item = stack.pop()
            stack[-1].append(item)
        elif op == "APPENDS":
            items = pop_mark()
            stack[-1].extend(items)
        elif op in ("SETITEM", "SETITEMS"):
            items = [stack.pop(), stack.pop()][::-1] if op == "SETITEM" else pop_mark()
            for key, value in zip(items[::2], items[1::2]):
                stack[-1][key] = value
        elif op in ("BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif op == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif op in ("BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif op == "GLOBAL":
            module, name = arg.split(" ", 1)
            if not _allowed(module, name):
                raise ConfigError(f"{path}: refers to {module}.{name}, which a weights file has no need of")
            stack.append(_Name(module, name))
        elif op == "BINPERSID":
            pid = stack.pop()
            is_storage = isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
            if not (is_storage and isinstance(pid[1], _Name)):
                raise ConfigError(f"{path}: a persistent id that is not a storage")
            stack.append(_StorageRef(str(pid[2]), STORAGE_DTYPES[pid[1].name], int(pid[4])))
        elif op == "REDUCE":
            args = stack.pop()
            function = stack.pop()
            if function == _Name("collections", "OrderedDict"):
                stack.append(dict(args[0]) if args else {})  # OrderedDict([[key, value], ...])
            elif function == _Name("torch._utils", "_rebuild_tensor_v2"):
                storage, offset, size, stride = args[:4]
                stack.append(_TensorRef(storage, int(offset), tuple(size), tuple(stride)))
            else:
                raise ConfigError(f"{path}: calls {function}, which a weights file has no need of")
        elif op == "BUILD":
            stack.pop()  # an OrderedDict's attributes (`_metadata`): not needed
        else:
            raise ConfigError(f"{path}: pickle opcode {op} is not part of a plain state dict")
    raise ConfigError(f"{path}: a pickle without its end")


def read_legacy_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """name -> tensor of a legacy `torch.save` state dict; one ConfigError for anything else."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    stream = io.BytesIO(data)
    try:
        if _run_pickle(stream, path) != LEGACY_MAGIC:
            raise ConfigError(f"{path} is not a legacy torch.save file (zip-format files are not read)")
        _run_pickle(stream, path)  # protocol version
        _run_pickle(stream, path)  # system info
        state = _run_pickle(stream, path)
        keys = _run_pickle(stream, path)
        storages: dict[str, np.ndarray] = {}
        refs = {value.storage.key: value.storage for value in state.values() if isinstance(value, _TensorRef)}
        for key in keys:
            (count,) = struct.unpack("<q", stream.read(8))
            dtype = np.dtype(refs[key].dtype) if key in refs else np.dtype(np.float32)
            raw = stream.read(count * dtype.itemsize)
            if len(raw) != count * dtype.itemsize:
                raise ConfigError(f"{path} is truncated")
            storages[key] = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, struct.error) as error:
        reason = f"{type(error).__name__}: {error}"
        raise ConfigError(f"{path}: not a legacy torch state dict ({reason})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: holds no state dict")
    tensors = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise ConfigError(f"{path}: '{name}' is not a tensor")
        storage = storages.get(ref.storage.key)
        if storage is None:
            raise ConfigError(f"{path}: the storage of '{name}' is missing")
        view = np.lib.stride_tricks.as_strided(
            storage[ref.offset:], shape=ref.size, strides=[s * storage.itemsize for s in ref.stride]
        )
        tensors[str(name)] = torch.from_numpy(np.array(view))
    return tensors
