"""State dicts in PyTorch's own file formats (`.pth`, `.pt`, `.ckpt`), read without running any code.

`torch.load(..., weights_only=True)` unpickles with an allow-list of tensors, containers and
numbers: a file whose pickle names anything else (a function to call, a class to build) is
refused before it runs. It reads both the zip format and the legacy one the LPIPS wheel ships
its linear layers in. Every failure becomes one `ConfigError` line naming the file.

`read_state_dict` wants a flat `{name: tensor}`; `read_torch_object` returns whatever allowed
containers the file holds (community model files nest their weights, `{"params_ema": {...}}`),
with the tensors of a zip-format file memory-mapped rather than read: a file's size costs address
space, not memory, until a tensor is used.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from superres.errors import ConfigError


def read_torch_object(path: str | Path, *, mmap: bool = False) -> Any:
    """What a `torch.save`d file at `path` holds (tensors on the CPU, in dicts, lists, numbers and
    strings), nothing in it executed. `mmap`: map a zip-format file's tensors instead of reading
    them (a legacy-format file, which cannot be mapped, is read)."""
    path = Path(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as error:
            if not mmap or "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except pickle.UnpicklingError as error:
        # torch's message is a page long; its one telling line names the refused global.
        # (Or, for a module torch blocks outright such as os/posix: "unsupported GLOBAL posix.system".)
        refused = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(error))
        what = (
            f"refers to {refused.group(1)}, which a weights file has no need of"
            if refused
            else "is not a plain state dict"
        )
        raise ConfigError(f"{path}: {what}; refused without running it") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, ValueError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{path}: not a readable (or a truncated) torch file ({first_line})") from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a `torch.save`d state dict at `path`, on the CPU, nothing in it executed."""
    path = Path(path)
    loaded = read_torch_object(path)
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ConfigError(f"{path}: holds a {type(loaded).__name__}, not a flat state dict of tensors")
    return dict(loaded)
