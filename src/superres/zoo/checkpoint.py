"""Checkpoints: model weights and training state in one safetensors file, metadata as JSON.

A checkpoint is a plain safetensors file (never pickle): the model's `state_dict()` under its own
names, optional extra tensors under the prefix `_extra.`, and one header metadata key `superres`
holding `json.dumps(metadata)`. `metadata` always names `model`, `scale`, `model_kwargs` and
`channels`, so `load_model` can rebuild the network with `create_model` alone.

The trainer also stores its resumable state here: the optimizer's tensors flattened to
`_extra.optim.<param_index>.<key>` (its other parts in the JSON), RNG states as uint8 tensors.
Writes are atomic (temporary file in the same folder, then `os.replace`), so a crash or a full disk
never leaves a half-written checkpoint under the real name, and the previous one survives; a
failed write is a one-line CheckpointError.

A checkpoint is untrusted input: its metadata is checked against the model's card (registered
name, supported scale, known kwargs of the card's types, within `MAX_KWARG_INT`) before anything is
built, the network is then built on the "meta" device (no memory) and its tensor names and shapes
compared with the file's, and weights that are NaN or infinite are refused.

Damage after the write (a flipped bit, a copy cut short) is caught by a content hash: the
metadata's `content_sha256` is the SHA-256 of every tensor's name, dtype, shape and bytes, in name
order (`content_hash`), and reading a file whose tensors do not match it is a CheckpointError.
Files written before the hash existed (the shipped weights among them) have none and are read as
they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superres.atomic import atomic_write_bytes, describe_os_error
from superres.errors import CheckpointError, ModelError
from superres.models import create_model, get_model_info

logger = logging.getLogger(__name__)

METADATA_KEY = "superres"
EXTRA_PREFIX = "_extra."
OPTIMIZER_PREFIX = "optim."
FORMAT_VERSION = 1
#: The metadata key of the tensors' SHA-256 (`content_hash`), checked by `load_checkpoint`.
CONTENT_HASH_KEY = "content_sha256"
REQUIRED_METADATA = ("model", "scale", "model_kwargs", "channels")
#: The largest whole number a model kwarg may hold in a checkpoint (layers, features, kernel
#: sizes): ten times what any registered network uses, far below what would exhaust memory.
MAX_KWARG_INT = 4096


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    metadata: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write `model`'s weights, `extra_tensors` and `metadata` (JSON) to `path`, atomically."""
    from safetensors.torch import save

    path = Path(path)
    missing = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {', '.join(missing)}")
    tensors = {name: _storable(tensor) for name, tensor in model.state_dict().items()}
    for name, tensor in (extra_tensors or {}).items():
        tensors[EXTRA_PREFIX + name] = _storable(tensor)
    metadata = {"format_version": FORMAT_VERSION, **metadata, CONTENT_HASH_KEY: content_hash(tensors)}
    header = {METADATA_KEY: json.dumps(metadata, allow_nan=True)}
    try:
        atomic_write_bytes(path, save(tensors, metadata=header))
    except OSError as error:
        kept = "; the previous checkpoint is kept" if path.is_file() else ""
        raise CheckpointError(
            f"cannot write checkpoint {path} ({describe_os_error(error)}){kept}"
        ) from error


def content_hash(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes, in name order (hex)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _storable(tensor: torch.Tensor) -> torch.Tensor:
    # safetensors refuses shared or strided storage; a private contiguous CPU copy always works.
    return tensor.detach().to("cpu", copy=True).contiguous()


def load_checkpoint(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
    """Read a checkpoint: (model state_dict, metadata, extra tensors without their prefix)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            header = reader.metadata() or {}
            tensors = {name: reader.get_tensor(name) for name in reader.keys()}
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises its own error types for every kind of damage
        if not _looks_like_safetensors(path):
            raise CheckpointError(
                f"{path}: not a safetensors checkpoint (a PyTorch .pth/.pt or ONNX file? this reader "
                "never loads pickles; `--model FILE.pth` reads a community model file safely)"
            ) from None
        raise CheckpointError(f"{path}: a damaged or truncated safetensors file ({error})") from None
    if METADATA_KEY not in header:
        raise CheckpointError(f"{path}: a safetensors file, but not a superres checkpoint")
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its superres metadata is not valid JSON") from None
    if not isinstance(metadata, dict) or any(key not in metadata for key in REQUIRED_METADATA):
        raise CheckpointError(f"{path}: superres metadata lacks one of {', '.join(REQUIRED_METADATA)}")
    validate_metadata(path, metadata)
    saved_hash = metadata.pop(CONTENT_HASH_KEY, None)
    if saved_hash is not None and saved_hash != content_hash(tensors):
        raise CheckpointError(f"{path}: damaged (its tensors do not match the hash written with them)")
    state_dict = {name: t for name, t in tensors.items() if not name.startswith(EXTRA_PREFIX)}
    extra = {name[len(EXTRA_PREFIX):]: t for name, t in tensors.items() if name.startswith(EXTRA_PREFIX)}
    return state_dict, metadata, extra


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    expect_model: str | None = None,
    expect_scale: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a checkpoint describes and load its weights strictly.

    `expect_model` / `expect_scale` turn "this is a checkpoint of something else" into a clear
    CheckpointError instead of a shape mismatch deep inside PyTorch.
    """
    state_dict, metadata, _ = load_checkpoint(path)
    check_checkpoint_matches(path, metadata, expect_model, expect_scale)
    with torch.device("meta"):  # shapes only: a file claiming a huge network costs nothing here
        skeleton = create_model(metadata["model"], metadata["scale"], **metadata["model_kwargs"])
    check_state_matches(skeleton, state_dict, path)
    check_finite(state_dict, path)
    model = create_model(metadata["model"], metadata["scale"], **metadata["model_kwargs"])
    load_state_strictly(model, state_dict, path)
    model.to(device)
    model.eval()
    return model, metadata


def check_checkpoint_matches(
    path: str | Path, metadata: dict[str, Any], expect_model: str | None, expect_scale: int | None
) -> None:
    """Raise CheckpointError when a checkpoint holds another model or scale than expected."""
    if expect_model is not None and metadata["model"] != expect_model:
        raise CheckpointError(
            f"{path} holds a '{metadata['model']}' model, not the expected '{expect_model}'"
        )
    if expect_scale is not None and int(metadata["scale"]) != int(expect_scale):
        raise CheckpointError(
            f"{path} holds a x{metadata['scale']} model, not the expected x{expect_scale}"
        )


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file opens with a little-endian u64 header length and a JSON object (a file
    cut short still does: it is a damaged checkpoint, not another format)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    (header_length,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and header_length < 2**30


def _kind_error(value: Any, default: Any) -> str | None:
    """Why `value` cannot stand for a kwarg whose card default is `default`, or None if it can."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, numbers.Integral):
        integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not integral or not 0 <= value <= MAX_KWARG_INT:
            return f"a whole number from 0 to {MAX_KWARG_INT}"
        return None
    if isinstance(default, numbers.Real):
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return None if real and abs(value) <= MAX_KWARG_INT else "a number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "a string"
    if isinstance(default, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(default):
            return f"a list of {len(default)} items"
        reasons = [_kind_error(item, default[0]) for item in value] if default else []
        first = next((reason for reason in reasons if reason), None)
        return None if first is None else f"a list of {len(default)} items, each {first}"
    return None


def validate_metadata(path: str | Path, metadata: Mapping[str, Any]) -> None:
    """CheckpointError unless `model`, `scale` and `model_kwargs` fit the registered card."""
    name = metadata["model"]
    try:
        info = get_model_info(name)
        info.check_scale(metadata["scale"])
    except ModelError as error:
        raise CheckpointError(f"{path}: bad metadata: {error}") from None
    kwargs = metadata["model_kwargs"]
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(f"{path}: bad metadata: model_kwargs must be an object, got {kwargs!r}")
    for key, value in kwargs.items():
        if key not in info.default_kwargs:
            accepted = ", ".join(sorted(info.default_kwargs)) or "none"
            raise CheckpointError(
                f"{path}: bad metadata: '{name}' has no argument {key!r} (accepted: {accepted})"
            )
        reason = _kind_error(value, info.default_kwargs[key])
        if reason is not None:
            raise CheckpointError(
                f"{path}: bad metadata: {name} {key} must be {reason}, got {value!r}"
            )


def check_finite(state_dict: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """CheckpointError if a floating-point weight is NaN or infinite (a diverged or damaged file)."""
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: weight '{name}' holds NaN or infinite values")


def check_state_matches(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | Path
) -> None:
    """ModelError unless `state_dict` has exactly `model`'s tensor names and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"{path} does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name, tensor in expected.items():
        if tuple(state_dict[name].shape) != tuple(tensor.shape):
            raise ModelError(
                f"{path} does not match the model: '{name}' has shape "
                f"{tuple(state_dict[name].shape)}, the model expects {tuple(tensor.shape)}"
            )


def load_state_strictly(model: nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """`model.load_state_dict(strict=True)` with a one-line ModelError instead of a long dump."""
    check_state_matches(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True)


# --- optimizer state: tensors into the safetensors body, everything else into the JSON ----------


def optimizer_state_to_storage(
    optimizer: torch.optim.Optimizer, prefix: str = OPTIMIZER_PREFIX
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (`<prefix><index>.<key>`) and JSON-able parts.

    A second optimizer in the same checkpoint (a GAN's discriminator) takes another `prefix`.
    """
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for index, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}{index}.{key}"] = value
            else:
                plain_state.setdefault(str(index), {})[key] = value
    json_part = {"param_groups": state_dict["param_groups"], "plain_state": plain_state}
    return tensors, json_part


def optimizer_state_from_storage(
    extra: dict[str, torch.Tensor], json_part: dict[str, Any], prefix: str = OPTIMIZER_PREFIX
) -> dict[str, Any]:
    """Rebuild the dict `optimizer.load_state_dict` expects from `optimizer_state_to_storage`'s parts."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in extra.items():
        if not name.startswith(prefix):
            continue
        index, key = name[len(prefix):].split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, plain in json_part.get("plain_state", {}).items():
        state.setdefault(int(index), {}).update(plain)
    param_groups = [dict(group) for group in json_part["param_groups"]]
    for group in param_groups:
        # JSON turns tuples into lists; Adam's betas read the same either way, but keep the type.
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": param_groups}
