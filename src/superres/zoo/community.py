"""Community model files: any network spandrel recognises, read safely, run as a superres model.

People keep folders of `.pth`/`.pt`/`.ckpt`/`.safetensors` files (ESRGAN and Real-ESRGAN, Compact,
SwinIR, HAT, DAT, OmniSR, SPAN, DRUNet, ...). spandrel (chaiNNer's loader, the `community` extra)
tells the architecture and its hyperparameters from the tensors alone; this module reads the file,
hands spandrel the tensors and wraps what it builds as a model of the superres contract
(`CommunityModel`: `.scale`, `.info`, `.model_kwargs`), so tiling, batches, video, evaluate,
compare and export take it as they take a registered network.

Safety. Nothing in a file runs: a `.safetensors` header is checked (offsets inside the file, sizes
that match the shapes) before its tensors are read; a `.pth`/`.pt`/`.ckpt` goes through torch's
allow-list unpickler (`superres.zoo.torch_files`, memory-mapped), so a pickle that names any
function or class is refused with one line before anything in it is called. A TorchScript archive
(code) is refused the same way. Files larger than `MAX_FILE_BYTES` are refused before reading, and
NaN or infinite weights after.

The card. spandrel's descriptor says the scale, the channels, the size requirements (a minimum, a
multiple: the input is reflect-padded to them at the bottom and right, as spandrel's own call does,
and the output cropped), whether float16 and bfloat16 are safe and a tiling hint. It does not say
how far the network sees, so that is measured once per file (`measure`) and cached under its SHA-256
(`cache_path`): a random strip is run, then again with a band in its middle changed, and the
farthest output pixel that moved is the reach. The reach at which nothing moves at all (exact
tiling) is used when it is under `REACH_LIMIT`; otherwise the reach beyond which changes stay under
`EFFECTIVE_TOLERANCE`, otherwise (global attention or pooling) `REACH_LIMIT`, and the card says that
tiles then only approximate a whole-image run. Shifting the strip tells whether the network anchors
a grid at the corner (window attention, a U-Net's downsampling) and its period, which becomes the
card's `tile_alignment`. The peak memory of that run gives the activation count that sizes tiles.

Without spandrel installed, loading such a file is one `ModelError` line saying what to install.
spandrel imports torchvision for two architectures that are no super-resolution networks (LaMa's
inpainting rotation, RestoreFormer's input normalisation); superres installs it without torchvision
(whose wheels pull a CUDA torch) and gives those two imports a stand-in while spandrel loads
(`import_spandrel`).
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import json
import logging
import math
import os
import struct
import sys
import threading
import time
import types
import warnings
import weakref
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
import torch.utils._pytree
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from superres.atomic import atomic_write_bytes
from superres.errors import CheckpointError, ConfigError, ModelError
from superres.models.blocks import ModelInfo

logger = logging.getLogger(__name__)

#: File names this loader reads (a `.safetensors` file only when superres did not write it).
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt")
SUFFIXES = (*TORCH_SUFFIXES, ".safetensors")
#: What a missing spandrel (or einops, which it imports) tells the user.
INSTALL_HINT = (
    "community model files need spandrel: pip install 'superres[community]' && "
    "pip install --no-deps spandrel==0.4.2 (make install does both; spandrel's torchvision is not needed)"
)
#: The largest model file read: above every published SR model (the largest are ~1 GB).
MAX_FILE_BYTES = 4 * 1024**3
#: A safetensors header longer than this is damage or an attack, not a model's tensor list.
MAX_HEADER_BYTES = 64 * 1024**2
#: The farthest reach measured, in LR pixels each side: beyond it the network counts as global.
REACH_LIMIT = 64
#: Output changes below this (on [0, 1]) count as none for the effective reach.
EFFECTIVE_TOLERANCE = 1e-5
#: How close a shifted strip's output must come to count as the same (grid period search).
EQUIVARIANCE_TOLERANCE = 1e-4
#: The largest grid period looked for (a power of two: window sizes and downsampling factors).
MAX_ALIGNMENT = 64
#: Bumped when `measure` changes what it stores: older cache entries are measured again.
MEASUREMENT_VERSION = 1
CACHE_FILE = "community-models.json"
#: Activation values per LR pixel assumed when the run's memory cannot be measured.
FALLBACK_VALUES_PER_PIXEL = 4096.0
#: The descriptor purposes that map an image to an image of the same content.
SUPPORTED_PURPOSES = ("SR", "Restoration")

_IMPORT_LOCK = threading.Lock()
_CACHE_LOCK = threading.Lock()

_SAFETENSORS_DTYPES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}


# --------------------------------------------------------------------------- spandrel


def _torchvision_stand_in() -> dict[str, types.ModuleType]:
    """The three torchvision names spandrel imports: `normalize` computed as torchvision does,
    `rotate` (LaMa's learnable rotation, an inpainting network) refused if ever called."""
    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    def normalize(tensor: torch.Tensor, mean: Any, std: Any, inplace: bool = False) -> torch.Tensor:
        mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub_(mean_t).div_(std_t) if inplace else (tensor - mean_t) / std_t

    def rotate(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise ModelError("this network rotates images with torchvision, which superres does not install")

    functional.InterpolationMode = InterpolationMode  # type: ignore[attr-defined]
    functional.normalize = normalize  # type: ignore[attr-defined]
    functional.rotate = rotate  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    package.transforms = transforms  # type: ignore[attr-defined]
    return {module.__name__: module for module in (package, transforms, functional)}


def import_spandrel() -> types.ModuleType:
    """spandrel, imported (with a torchvision stand-in where torchvision is absent), or `ModelError`
    with `INSTALL_HINT`."""
    loaded = sys.modules.get("spandrel")
    if loaded is not None:
        return loaded
    with _IMPORT_LOCK:
        stand_in: dict[str, types.ModuleType] = {}
        if importlib.util.find_spec("torchvision") is None:
            stand_in = _torchvision_stand_in()
            sys.modules.update(stand_in)
        try:
            return importlib.import_module("spandrel")
        except ImportError as error:
            missing = getattr(error, "name", None) or "spandrel"
            raise ModelError(f"{INSTALL_HINT} ({missing} is not installed)") from None
        finally:
            for name, module in stand_in.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]


def spandrel_version() -> str:
    """The installed spandrel's version, or "" when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("spandrel")
    except metadata.PackageNotFoundError:
        return ""


# --------------------------------------------------------------------------- reading files


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size, or `ModelError`."""
    size = path.stat().st_size
    with open(path, "rb") as stream:
        head = stream.read(8)
        if len(head) < 8:
            raise ModelError(f"{path}: too short for a safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise ModelError(f"{path}: not a safetensors file (its header claims {length:,} bytes)")
        try:
            header = json.loads(stream.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: not a safetensors file (its header is not a JSON object)")
    body = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            itemsize = _SAFETENSORS_DTYPES[entry["dtype"]]
            start, stop = (int(offset) for offset in entry["data_offsets"])
            count = math.prod(int(extent) for extent in entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path}: tensor '{name}' has a malformed entry in the header") from None
        if not 0 <= start <= stop <= body or stop - start != count * itemsize:
            raise ModelError(f"{path}: tensor '{name}' does not fit the file (truncated or damaged)")
    return header


def is_superres_checkpoint(path: Path) -> bool:
    """Whether `path` is a safetensors file that superres wrote (its header names `superres`)."""
    from superres.zoo.checkpoint import METADATA_KEY

    try:
        header = _safetensors_header(path)
    except (ModelError, OSError):
        return False
    return METADATA_KEY in (header.get("__metadata__") or {})


def is_community_file(path: str | Path) -> bool:
    """Whether a model path goes to this loader: a `.pth`/`.pt`/`.ckpt`, or a `.safetensors`
    that is not a superres checkpoint."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return True
    return suffix == ".safetensors" and path.is_file() and not is_superres_checkpoint(path)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a community model file, unwrapped from the containers training code saves
    them in (`{"params_ema": {...}}`, `{"state_dict": {...}}`, a `module.` prefix), nothing run."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    if size > MAX_FILE_BYTES:
        raise ModelError(f"{path}: {size / 1024**3:.1f} GiB, larger than any model file read here")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        _safetensors_header(path)
        try:
            loaded: Any = load_file(str(path), device="cpu")
        except Exception as error:  # safetensors raises its own error types for every kind of damage
            raise ModelError(f"{path}: a damaged safetensors file ({error})") from None
    else:
        try:
            loaded = _read_torch_file(path)
        except ConfigError as error:
            raise ModelError(str(error)) from None
    if not isinstance(loaded, Mapping):
        raise ModelError(f"{path}: holds a {type(loaded).__name__}, not a model's state dict")
    spandrel = import_spandrel()
    state = spandrel.canonicalize_state_dict(dict(loaded))
    tensors = {str(name): value for name, value in state.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ModelError(f"{path}: holds no tensors a model could be built from")
    try:
        from superres.zoo.checkpoint import check_finite

        check_finite(tensors, path)
    except CheckpointError as error:
        raise ModelError(str(error)) from None
    return tensors


def _read_torch_file(path: Path) -> Any:
    """A `.pth`/`.pt`/`.ckpt` through the allow-list unpickler; a TorchScript archive refused."""
    import zipfile

    from superres.zoo.torch_files import read_torch_object

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist()):
                raise ModelError(
                    f"{path}: a TorchScript archive (code, not weights); refused without running it"
                )
    return read_torch_object(path, mmap=True)


# --------------------------------------------------------------------------- the model


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad_to(lr: torch.Tensor, minimum: int, multiple: int, square: bool) -> torch.Tensor:
    """`lr` reflect-padded at the bottom and right to the size requirements (replicate where the
    image is too small to reflect), as spandrel's own call pads."""
    height, width = lr.shape[-2:]
    new_height = _round_up(max(minimum, height), multiple)
    new_width = _round_up(max(minimum, width), multiple)
    if square:
        new_height = new_width = max(new_height, new_width)
    pad_h, pad_w = new_height - height, new_width - width
    if not pad_h and not pad_w:
        return lr
    reflect_h, reflect_w = min(pad_h, height - 1), min(pad_w, width - 1)
    if reflect_h or reflect_w:
        lr = F.pad(lr, (0, reflect_w, 0, reflect_h), mode="reflect")
    if pad_h > reflect_h or pad_w > reflect_w:
        lr = F.pad(lr, (0, pad_w - reflect_w, 0, pad_h - reflect_h), mode="replicate")
    return lr


def _crop_to(sr: torch.Tensor, lr: torch.Tensor, scale: int) -> torch.Tensor:
    return sr[..., : scale * lr.shape[-2], : scale * lr.shape[-1]]


class _Runner(nn.Module):
    """spandrel's network and its call function: `network(lr)`, or the architecture's own call
    image by image (some build inputs for one image only: DRUNet's noise map)."""

    def __init__(self, network: nn.Module, call: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None):
        super().__init__()
        self.network = network
        self.call = call

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if self.call is None:
            return self.network(lr)
        if lr.shape[0] == 1:
            return self.call(self.network, lr)
        return torch.cat([self.call(self.network, one) for one in lr.split(1)])


def _run_network(runner: _Runner, lr: torch.Tensor) -> torch.Tensor:
    return runner(lr)


# torch.fx (the fast CPU path's fusion) sees these as single calls. It must not trace into
# spandrel's networks: some change their own state in forward (SPAN re-folds its branches and
# stores the input mean on every call), which a traced graph turns into wrong code.
torch.fx.wrap("_pad_to")
torch.fx.wrap("_crop_to")
torch.fx.wrap("_run_network")


class CommunityModel(nn.Module):
    """A network spandrel built from a model file, with the superres model contract.

    Maps LR (N, C, h, w) in [0, 1] to (N, C, scale*h, scale*w) in [0, 1], exactly as spandrel's own
    call does (padding to the size requirements, its call function, the crop and the clamp).
    `network` is spandrel's module; `description` what `superres models --inspect` prints.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        scale: int,
        info: ModelInfo,
        call: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None,
        minimum: int,
        multiple_of: int,
        square: bool,
        description: dict[str, Any],
    ) -> None:
        super().__init__()
        self.runner = _Runner(network, call)
        self.scale = int(scale)
        self.info = info
        self.model_kwargs: dict[str, Any] = {}
        self.minimum, self.multiple_of, self.square = int(minimum), int(multiple_of), bool(square)
        self.pads = self.minimum > 0 or self.multiple_of > 1 or self.square
        self.description = description

    @property
    def network(self) -> nn.Module:
        """The module spandrel built."""
        return self.runner.network

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        padded = _pad_to(lr, self.minimum, self.multiple_of, self.square) if self.pads else lr
        sr = _run_network(self.runner, padded)
        if self.pads:
            sr = _crop_to(sr, lr, self.scale)
        return sr.clamp(0.0, 1.0)


# --------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measurement:
    """What `measure` found about a network (LR pixels; None: not found within the limits).

    `reach_exact`: beyond it a change moves no output value at all. `reach_effective`: beyond it
    no output moves by more than `EFFECTIVE_TOLERANCE`. `alignment`: the grid period (1: none).
    `values_per_lr_pixel`: peak live float32 values per LR input pixel.
    """

    reach_exact: int | None
    reach_effective: int | None
    alignment: int | None
    values_per_lr_pixel: float
    seconds: float

    @property
    def overlap(self) -> int:
        """The tile context the card gives: the exact reach, else the effective one, else the limit."""
        if self.reach_exact is not None:
            return self.reach_exact
        return self.reach_effective if self.reach_effective is not None else REACH_LIMIT

    @property
    def tiling(self) -> str:
        """How tiled output relates to a whole-image run."""
        if self.reach_exact is None and self.reach_effective is None:
            return f"approximate (the network sees farther than {REACH_LIMIT} pixels: global context)"
        if self.alignment is None:
            return "approximate (the network's grid was not found)"
        if self.reach_exact is not None:
            return "exact"
        return f"within {EFFECTIVE_TOLERANCE:g} of a whole-image run"


def _run(model: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(lr).float()


def _reach_along(
    model: Callable[[torch.Tensor], torch.Tensor],
    base: torch.Tensor,
    base_out: torch.Tensor,
    fresh: torch.Tensor,
    scale: int,
) -> tuple[int | None, int | None]:
    """(exact, effective) reach along the last axis. The band from `REACH_LIMIT` pixels after the
    start to `REACH_LIMIT + 3` before the end is redrawn (its two edges at different phases of any
    grid), and the farthest moved output column outside it is the reach; None when that is the
    strip's end (`REACH_LIMIT` or more). `base_out`: `model(base)`."""
    width = base.shape[-1]
    start, stop = REACH_LIMIT, width - REACH_LIMIT - 3
    changed = base.clone()
    changed[..., start:stop] = fresh[..., start:stop]
    change = (model(changed) - base_out).abs().amax(dim=(0, 1, 2)).view(-1, scale).amax(dim=1).cpu()
    distances = torch.cat([start - torch.arange(start), torch.arange(stop, width) - (stop - 1)]).float()
    outside = torch.cat([change[:start], change[stop:]])

    def reach(tolerance: float) -> int | None:
        moved = distances[outside > tolerance]
        farthest = int(moved.max()) if moved.numel() else 0
        return None if farthest >= REACH_LIMIT else farthest

    return reach(0.0), reach(EFFECTIVE_TOLERANCE)


def _alignment(
    model: Callable[[torch.Tensor], torch.Tensor],
    base: torch.Tensor,
    base_out: torch.Tensor,
    reach: int,
    scale: int,
) -> int | None:
    """The smallest shift (1, or a power of two up to `MAX_ALIGNMENT`) that moves the output with
    the input, away from the strip's ends: the period of a grid the network anchors at the corner.
    None when no shift up to `MAX_ALIGNMENT` does."""
    width = base.shape[-1]

    def follows(shift: int) -> bool:
        shifted = model(base[..., shift:])
        low, high = reach + 1, width - shift - reach - 1
        if high <= low:
            return False
        ours = shifted[..., scale * low : scale * high]
        theirs = base_out[..., scale * (low + shift) : scale * (high + shift)]
        return bool((ours - theirs).abs().max() <= EQUIVARIANCE_TOLERANCE)

    # The output follows a shift exactly when the grid's period divides it: the first power of two
    # that it follows is the period (window sizes and downsampling factors are powers of two).
    period = 1
    while period <= MAX_ALIGNMENT:
        if follows(period):
            return period
        period *= 2
    return None


class _PeakBytes(TorchDispatchMode):
    """Live tensor bytes through one forward pass, and their peak (tensors counted by storage,
    released when the last tensor object made for that storage here dies)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}
        self._refs: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for tensor in torch.utils._pytree.tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if not size or key in self._sizes:
            return
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        self._refs[key] = weakref.ref(tensor, lambda _, key=key: self._release(key))

    def _release(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)
        self._refs.pop(key, None)


def measure(model: CommunityModel, device: torch.device | str = "cpu") -> Measurement:
    """Reach (each axis, exact and effective), grid period and memory per pixel of `model`, from
    random strips `REACH_LIMIT * 4` LR pixels long (see the module docstring)."""
    began = time.perf_counter()
    channels = 1 if model.info.channels == "Y" else 3
    scale = model.scale
    device = torch.device(device)
    height = _round_up(max(16, model.minimum), model.multiple_of)
    width = _round_up(4 * REACH_LIMIT, max(model.multiple_of, MAX_ALIGNMENT))
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(1, channels, height, width, generator=generator).to(device)
    fresh = torch.rand(1, channels, height, width, generator=generator).to(device)

    def along_width(lr: torch.Tensor) -> torch.Tensor:
        return _run(model, lr)

    def along_height(lr: torch.Tensor) -> torch.Tensor:
        return _run(model, lr.transpose(-1, -2)).transpose(-1, -2)

    values = FALLBACK_VALUES_PER_PIXEL
    try:
        with _PeakBytes() as peak:
            base_w = along_width(base)
        if peak.peak:
            values = peak.peak / 4 / (height * width)
    except Exception as error:  # noqa: BLE001 - only the tile size estimate depends on it
        logger.debug("could not measure the memory of %s: %s", model.info.name, error)
        base_w = along_width(base)
    exact_w, effective_w = _reach_along(along_width, base, base_w, fresh, scale)
    exact_h, effective_h = _reach_along(along_height, base, along_height(base), fresh, scale)
    exact = None if exact_w is None or exact_h is None else max(exact_w, exact_h)
    effective = None if effective_w is None or effective_h is None else max(effective_w, effective_h)
    reach = exact if exact is not None else (effective if effective is not None else REACH_LIMIT)
    alignment = _alignment(along_width, base, base_w, reach, scale)
    return Measurement(exact, effective, alignment, float(values), time.perf_counter() - began)


# --------------------------------------------------------------------------- the cache


def cache_path() -> Path:
    """Where measurements are kept: `$SUPERRES_CACHE_DIR`, else `$XDG_CACHE_HOME/superres`, else
    `~/.cache/superres`; one JSON file keyed by the model files' SHA-256."""
    folder = os.environ.get("SUPERRES_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(base) / "superres")
    return Path(folder) / CACHE_FILE


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_cache() -> dict[str, Any]:
    try:
        entries = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _cached_measurement(digest: str) -> Measurement | None:
    entry = _read_cache().get(digest)
    if not isinstance(entry, dict) or entry.get("version") != MEASUREMENT_VERSION:
        return None
    try:
        def reach(key: str) -> int | None:  # a hand-edited cache must not ask for absurd tiles
            value = entry[key]
            if value is not None and not 0 <= int(value) <= max(REACH_LIMIT, MAX_ALIGNMENT):
                raise ValueError(f"{key} out of range")
            return None if value is None else int(value)

        return Measurement(
            reach("reach_exact"), reach("reach_effective"), reach("alignment"),
            float(entry["values_per_lr_pixel"]), float(entry["seconds"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _store_measurement(digest: str, name: str, measurement: Measurement) -> None:
    with _CACHE_LOCK:
        entries = _read_cache()
        entries[digest] = {"file": name, "version": MEASUREMENT_VERSION, **asdict(measurement)}
        try:
            path = cache_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, json.dumps(entries, indent=1, sort_keys=True).encode())
        except OSError as error:  # a read-only home: measured again next time, nothing lost
            logger.debug("could not write %s: %s", cache_path(), error)


# --------------------------------------------------------------------------- loading


def _descriptor(path: Path, tensors: dict[str, torch.Tensor]) -> Any:
    """spandrel's descriptor for the tensors, checked to be an image-to-image model superres runs."""
    spandrel = import_spandrel()
    try:
        with warnings.catch_warnings():  # torch's notes on the architectures' code (meshgrid, init)
            warnings.simplefilter("ignore", UserWarning)
            descriptor = spandrel.MAIN_REGISTRY.load(tensors)
    except spandrel.UnsupportedModelError:
        names = ", ".join(list(tensors)[:3])
        raise ModelError(
            f"{path}: no architecture spandrel {spandrel_version()} knows has these {len(tensors)} "
            f"tensors ({names}, ...)"
        ) from None
    except Exception as error:  # noqa: BLE001 - a file that matches an architecture but does not build
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise ModelError(f"{path}: looks like a spandrel model but does not load ({first})") from None
    architecture = descriptor.architecture.name
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelError(f"{path}: a {architecture} {descriptor.purpose} model (it needs a mask); "
                         "superres runs image-to-image models only")
    if descriptor.purpose not in SUPPORTED_PURPOSES:
        raise ModelError(f"{path}: a {architecture} face-restoration model, which expects aligned face "
                         "crops; superres runs super-resolution and restoration models only")
    channels = (descriptor.input_channels, descriptor.output_channels)
    if channels not in ((3, 3), (1, 1)):
        raise ModelError(f"{path}: a {architecture} model from {channels[0]} to {channels[1]} channels; "
                         "superres runs RGB to RGB or gray to gray")
    return descriptor


def _custom_call(descriptor: Any) -> Callable[[nn.Module, torch.Tensor], torch.Tensor] | None:
    """The architecture's own call function, or None where spandrel calls the network plainly."""
    spandrel = import_spandrel()
    call = getattr(descriptor, "_call_fn", None)
    probe = spandrel.ImageModelDescriptor.__init__.__code__  # its default: `lambda model, image: ...`
    if call is None or getattr(call, "__code__", None) is None:
        return call
    return None if call.__code__.co_filename == probe.co_filename and call.__name__ == "<lambda>" else call


def _card(path: Path, descriptor: Any, measurement: Measurement | None) -> ModelInfo:
    overlap = measurement.overlap if measurement is not None else REACH_LIMIT
    values = measurement.values_per_lr_pixel if measurement is not None else FALLBACK_VALUES_PER_PIXEL
    alignment = (measurement.alignment or 1) if measurement is not None else 1
    tiling = measurement.tiling if measurement is not None else "not measured"
    architecture = descriptor.architecture.name
    return ModelInfo(
        name=architecture,
        channels="RGB" if descriptor.input_channels == 3 else "Y",
        scales=(int(descriptor.scale),),
        pre_upsample=False,
        degradation="bicubic",
        paper=f"community model file {path.name} ({architecture}, detected by spandrel {spandrel_version()})",
        deviations=f"tiles: {tiling}; receptive field and memory measured on random input",
        default_kwargs={},
        receptive_field_function=lambda scale, kwargs: overlap,
        activation_function=lambda scale, kwargs: values,
        tile_alignment=alignment,
        # spandrel's own judgement per architecture: where fp16 overflows (attention logits,
        # unnormalised sums) the card refuses `--half` rather than let it write wrong images.
        half_safe=bool(descriptor.supports_half),
        # Likewise for bfloat16 (8 significant bits): unsafe ones refuse `--precision bf16`, and
        # `auto` keeps them at fp32.
        bf16_safe=bool(descriptor.supports_bfloat16),
    )


def load_community_model(
    path: str | Path, scale: int | None = None, device: str | torch.device = "cpu", *, measured: bool = True
) -> CommunityModel:
    """The network in a community model file, in eval mode on `device`; `scale` None accepts the
    file's own. `measured=False` skips the receptive-field measurement (the card then assumes
    `REACH_LIMIT`) where only the detection is wanted."""
    path = Path(path)
    tensors = read_weights(path)
    descriptor = _descriptor(path, tensors)
    del tensors
    if scale is not None and int(scale) != int(descriptor.scale):
        raise ModelError(f"{path} is a x{descriptor.scale} model, not x{scale}")
    network = descriptor.model.eval().requires_grad_(False)
    requirements = descriptor.size_requirements
    description = {
        "file": str(path),
        "architecture": descriptor.architecture.name,
        "tags": list(descriptor.tags),
        "purpose": descriptor.purpose,
        "scale": int(descriptor.scale),
        "channels": f"{descriptor.input_channels} -> {descriptor.output_channels}",
        "size requirements": (
            f"minimum {requirements.minimum}, multiple of {requirements.multiple_of}"
            + (", square" if requirements.square else "")
        ),
        "tiling hint": descriptor.tiling.name.lower(),
        "half precision": "fp16 " + ("safe" if descriptor.supports_half else "not safe")
        + ", bf16 " + ("safe" if descriptor.supports_bfloat16 else "not safe"),
        "parameters": sum(parameter.numel() for parameter in network.parameters()),
    }
    model = CommunityModel(
        network,
        scale=descriptor.scale,
        info=_card(path, descriptor, None),
        call=_custom_call(descriptor),
        minimum=requirements.minimum,
        multiple_of=requirements.multiple_of,
        square=requirements.square,
        description=description,
    ).to(device)
    if measured:
        digest = file_digest(path)
        measurement = _cached_measurement(digest)
        if measurement is None:
            logger.info("%s: measuring how far the %s network sees (once; cached in %s)",
                        path.name, descriptor.architecture.name, cache_path())
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    measurement = measure(model, device)
            except (RuntimeError, ValueError, TypeError, IndexError, AssertionError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                raise ModelError(
                    f"{path}: the {descriptor.architecture.name} network fails on a test image ({first})"
                ) from None
            _store_measurement(digest, path.name, measurement)
        model.info = _card(path, descriptor, measurement)
        description.update({
            "receptive field": _describe_reach(measurement),
            "tile alignment": "none (a plain conv net)" if measurement.alignment == 1
            else f"{measurement.alignment} pixels" if measurement.alignment else "not found",
            "tiling": measurement.tiling,
            "memory": f"{measurement.values_per_lr_pixel:,.0f} float32 values per LR pixel (peak)",
            "sha256": digest,
        })
    return model.eval()


def _describe_reach(measurement: Measurement) -> str:
    if measurement.reach_exact is not None:
        return f"{measurement.reach_exact} LR pixels each side (exact)"
    if measurement.reach_effective is not None:
        return (f"{measurement.reach_effective} LR pixels each side (changes from farther stay "
                f"under {EFFECTIVE_TOLERANCE:g})")
    return f"over {REACH_LIMIT} LR pixels (tiles get {REACH_LIMIT} pixels of context)"


def describe(model: CommunityModel) -> list[tuple[str, str]]:
    """(field, value) rows of what was detected and measured, for `superres models --inspect`."""
    rows = []
    for key, value in model.description.items():
        if key == "tags":
            value = ", ".join(value) or "-"
        elif key == "parameters":
            value = f"{value:,}"
        rows.append((key, str(value)))
    return rows
