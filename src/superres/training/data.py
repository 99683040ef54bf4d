"""Training data: HR images in memory, aligned LR/HR patch pairs, packed and prepared npz files.

Three kinds of source feed the trainer:

* folders of HR images (searched recursively; anything `superres.images.read_image` reads);
* a packed `.npz` made by `superres pack` (`pack_images`): the same HR images, already converted
  to the training colour (Y or RGB) as uint8, in one compressed file that loads in a second;
* a prepared `.npz` of fixed patch pairs made by `superres prepare` (`prepare_patches`), read by
  `PatchFileDataset`.

`PairedPatchSampler` makes the LR image of every HR image once, with the MATLAB-exact `imresize`
on uint8 (what the benchmark LR files are), and then cuts aligned random crops: LR top-left
(y, x), HR top-left (scale*y, scale*x), optionally with one of the 8 flips/rotations applied to
both. Every random number of a batch comes from one `rng.random((n, 4))` call, so drawing n pairs
at once or in several chunks gives the same pairs: this is what makes `prepare` (which draws in
chunks) equal to sampling on the fly with the same seed.

For training, `DeviceBatches` keeps the whole training set on the training device (uint8) and
cuts each batch there with one gather per image kind, from the same `draw` as the numpy sampler:
the host only draws 4 random numbers per pair, so a fast GPU is not left waiting for Python.

All npz files are written atomically (temporary file in the same folder, then `os.replace`) and
read with `allow_pickle=False`.
"""

from __future__ import annotations

import json
import logging
import math
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from superres.atomic import atomic_write
from superres.errors import ConfigError
from superres.images import IMAGE_EXTENSIONS, read_image
from superres.ops.color import rgb_to_y
from superres.ops.degradations import RealDegradation, degrade_batch
from superres.ops.resize import imresize, modcrop
from superres.training.config import missing_path_message

logger = logging.getLogger(__name__)

IMAGE_KEY_PREFIX = "img_"
META_KEY = "meta"
KIND_HR_IMAGES = "hr_images"
KIND_PATCHES = "patches"
NUM_TRANSFORMS = 8  # the dihedral group of the square: identity, flips, rotations, transposes
PREPARE_CHUNK = 4096  # pairs drawn per call while preparing: bounds memory, not the result


# --- files ----------------------------------------------------------------------------------


def atomic_savez(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez_compressed` to `path`, atomically (the name never holds a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda stream: np.savez_compressed(stream, **arrays))


def _meta_array(meta: dict[str, Any]) -> np.ndarray:
    # A 0-d unicode array: readable with allow_pickle=False, unlike an object array.
    return np.array(json.dumps(meta))


def open_npz(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Open a superres npz (never unpickling anything); bad or foreign files -> ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ConfigError(f"{path}: not a readable npz file ({error})") from None
    if not hasattr(archive, "files") or META_KEY not in archive.files:
        raise ConfigError(f"{path}: not made by `superres pack` or `superres prepare` (no meta)")
    try:
        meta = json.loads(str(archive[META_KEY]))
    except (ValueError, zipfile.BadZipFile, OSError) as error:
        raise ConfigError(f"{path}: its meta record is damaged ({error})") from None
    return archive, meta


def _read_npz_array(archive: Any, key: str, path: Path) -> np.ndarray:
    try:
        return archive[key]
    except (ValueError, zipfile.BadZipFile, OSError, KeyError) as error:
        raise ConfigError(f"{path}: array '{key}' is damaged or missing ({error})") from None


# --- HR images ------------------------------------------------------------------------------


def _image_suffixes() -> set[str]:
    return {ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in IMAGE_EXTENSIONS}


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, sorted by path; hidden files and folders skipped."""
    suffixes = _image_suffixes()
    found = []
    for path in sorted(folder.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.suffix.lower() in suffixes and path.is_file():
            found.append(path)
    return found


def to_training_channels(pixels: np.ndarray, channels: str) -> np.ndarray:
    """HWC (or HW) uint8/uint16 pixels -> contiguous uint8 HWC in the training colour.

    Y: `round(255 * rgb_to_y(rgb / 255))` from RGB; a single-channel gray image is used as Y
    directly (as the evaluation protocol does). RGB: kept; gray is repeated. Alpha is dropped.
    """
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[2] in (2, 4):
        pixels = pixels[..., :-1]  # alpha does not take part in super-resolution training
    if pixels.dtype == np.uint16:
        pixels = np.floor(pixels / 257.0 + 0.5).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ConfigError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    if channels == "Y" and pixels.shape[2] == 3:
        y = rgb_to_y(pixels.astype(np.float64) / 255.0) * 255.0
        pixels = np.floor(y + 0.5).astype(np.uint8)[..., None]
    elif channels == "RGB" and pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    elif channels not in ("Y", "RGB"):
        raise ConfigError(f"channels must be Y or RGB, got {channels!r}")
    return np.ascontiguousarray(pixels)


def read_packed_images(path: str | Path, channels: str) -> tuple[list[np.ndarray], list[str]]:
    """The HR images of a `superres pack` file; a file packed in other channels -> ConfigError."""
    path = Path(path)
    archive, meta = open_npz(path)
    with archive:
        if meta.get("kind") != KIND_HR_IMAGES:
            raise ConfigError(f"{path}: holds {meta.get('kind')!r}, not packed HR images")
        if meta.get("channels") != channels:
            raise ConfigError(f"{path}: packed as {meta.get('channels')}, training needs {channels}")
        keys = sorted(key for key in archive.files if key.startswith(IMAGE_KEY_PREFIX))
        images = [_read_npz_array(archive, key, path) for key in keys]
    names = list(meta.get("names", keys))
    return images, [f"{path.name}:{name}" for name in names]


def load_hr_images(
    sources: Sequence[str | Path], channels: str
) -> tuple[list[np.ndarray], list[str]]:
    """HR images (uint8 HWC in `channels`) and their names from folders, image files or packs."""
    images: list[np.ndarray] = []
    names: list[str] = []
    for source in map(Path, sources):
        if source.is_dir():
            paths = find_images(source)
            if not paths:
                raise ConfigError(f"no images found in {source}")
            for path in paths:
                images.append(to_training_channels(read_image(path).pixels, channels))
                names.append(str(path))
        elif source.is_file() and source.suffix.lower() == ".npz":
            packed, packed_names = read_packed_images(source, channels)
            images.extend(packed)
            names.extend(packed_names)
        elif source.is_file() and source.suffix.lower() in _image_suffixes():
            images.append(to_training_channels(read_image(source).pixels, channels))
            names.append(str(source))
        elif source.exists():
            raise ConfigError(f"not an image folder, image or .npz file: {source}")
        else:
            raise ConfigError(missing_path_message("training data", source))
    if not images:
        raise ConfigError("no training images given")
    return images, names


def check_downscale_factors(factors: Sequence[float]) -> None:
    """A factor outside (0, 1) -> ConfigError (checked before any image is read)."""
    for factor in factors:
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"downscale factors lie strictly between 0 and 1, got {factor:g}")


def _add_downscaled_copies(
    images: list[np.ndarray], names: list[str], factors: Sequence[float]
) -> tuple[list[np.ndarray], list[str]]:
    """The images followed by a copy of each at every factor in `factors` (MATLAB bicubic).

    This is the scale augmentation of VDSR and FSRCNN: a downscaled HR image is another plausible
    HR image (sharper per pixel), so a small set such as the 291 images offers more distinct
    patches. Copies are named `name@factor`; the LR patches are later made from each copy as from
    any HR image.
    """
    out_images, out_names = list(images), list(names)
    for factor in factors:
        for image, name in zip(images, names):
            out_images.append(imresize(image, factor))
            out_names.append(f"{name}@{factor:g}")
    return out_images, out_names


def pack_images(
    folders: Sequence[str | Path],
    out_path: str | Path,
    channels: str = "Y",
    downscales: Sequence[float] = (),
) -> dict[str, Any]:
    """Read every HR image of `folders`, convert to `channels`, store them in one compressed npz.

    With `downscales` (factors below 1) a downscaled copy of every image is stored too
    (`_add_downscaled_copies`). Keys `img_00000`, ... hold uint8 HWC arrays; `meta` is a JSON
    string with the channels, the factors and the image names. Returns the meta record.
    """
    check_downscale_factors(downscales)
    images, names = load_hr_images(folders, channels)
    images, names = _add_downscaled_copies(images, names, downscales)
    meta = {
        "kind": KIND_HR_IMAGES,
        "channels": channels,
        "count": len(images),
        "names": names,
        "sources": [str(folder) for folder in folders],
        "downscales": [float(factor) for factor in downscales],
    }
    arrays = {f"{IMAGE_KEY_PREFIX}{index:05d}": image for index, image in enumerate(images)}
    arrays[META_KEY] = _meta_array(meta)
    atomic_savez(out_path, arrays)
    logger.info("packed %d images (%s) into %s", len(images), channels, out_path)
    return meta


# --- patch pairs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchDraw:
    """Where a batch's pairs come from: image index, LR top-left corner and transform, per pair."""

    image_index: np.ndarray
    lr_y: np.ndarray
    lr_x: np.ndarray
    transform: np.ndarray  # bit 0: mirror left-right, bit 1: upside down, bit 2: transpose


def apply_transform(patch: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 flips/rotations of an HWC patch (a view): transpose, then mirror, then flip."""
    if transform & 4:
        patch = patch.transpose(1, 0, 2)
    if transform & 1:
        patch = patch[:, ::-1]
    if transform & 2:
        patch = patch[::-1]
    return patch


class PairedPatchSampler:
    """Aligned random LR/HR crops from in-memory HR images, LR made once per image.

    Images are chosen with probability proportional to their number of possible crop positions,
    so every LR patch position of the whole set is equally likely (small images are not
    over-sampled). `patch_size` is in LR pixels; HR patches are `scale * patch_size`.
    """

    def __init__(
        self,
        hr_images: list[np.ndarray],
        scale: int,
        patch_size: int,
        *,
        degradation: str = "bicubic",
        degradation_options: dict[str, Any] | None = None,
        augment: bool = True,
        names: Sequence[str] | None = None,
    ) -> None:
        self.scale = int(scale)
        self.lr_patch_size = int(patch_size)
        self.hr_patch_size = self.scale * self.lr_patch_size
        self.augment = augment
        self.degradation = degradation
        # "real": every HR crop gets its own random chain at sampling time; no LR image is kept.
        self.real = RealDegradation.from_options(degradation_options) if degradation == "real" else None
        names = list(names) if names is not None else [f"image {i}" for i in range(len(hr_images))]
        self.hr_images: list[np.ndarray] = []
        self.lr_images: list[np.ndarray] = []
        self.names: list[str] = []
        too_small: list[str] = []
        for image, name in zip(hr_images, names):
            hr = modcrop(image if image.ndim == 3 else image[..., None], self.scale)
            if min(hr.shape[:2]) < self.hr_patch_size:
                too_small.append(f"{name} ({hr.shape[1]}x{hr.shape[0]})")
                continue
            self.hr_images.append(np.ascontiguousarray(hr))
            if self.real is None:
                lr = imresize(hr, 1.0 / self.scale, kernel=degradation)
                self.lr_images.append(np.ascontiguousarray(lr.reshape(lr.shape[0], lr.shape[1], -1)))
            self.names.append(name)
        if too_small and self.hr_images:
            # One line, not one per image: a scale-augmented pack can hold hundreds of small copies.
            shown = ", ".join(too_small[:3]) + (", ..." if len(too_small) > 3 else "")
            logger.warning(
                "skipping %d of %d training images smaller than the %d px HR patch: %s",
                len(too_small), len(names), self.hr_patch_size, shown,
            )
        if not self.hr_images:
            raise ConfigError(
                f"all {len(names)} training images are smaller than the HR patch of "
                f"{self.hr_patch_size} px (patch_size {self.lr_patch_size} x scale {self.scale})"
            )
        self.num_channels = self.hr_images[0].shape[2]
        # LR sizes are HR / scale exactly (HR is modcropped), whether or not the LR is kept.
        lr_shapes = [(hr.shape[0] // self.scale, hr.shape[1] // self.scale) for hr in self.hr_images]
        self._positions_y = np.array([height - patch_size + 1 for height, _ in lr_shapes])
        self._positions_x = np.array([width - patch_size + 1 for _, width in lr_shapes])
        positions = (self._positions_y * self._positions_x).astype(np.float64)
        self._cumulative = np.cumsum(positions) / positions.sum()
        self.total_lr_pixels = int(sum(height * width for height, width in lr_shapes))

    def __len__(self) -> int:
        return len(self.hr_images)

    def steps_per_epoch(self, global_batch: int) -> int:
        """Steps that draw as many LR pixels as the training set holds."""
        per_step = self.lr_patch_size**2 * global_batch
        return max(1, math.ceil(self.total_lr_pixels / per_step))

    def draw(self, count: int, rng: np.random.Generator) -> PatchDraw:
        """Pick `count` pairs: one `rng.random((count, 4))` call, so chunked draws concatenate."""
        uniform = rng.random((count, 4))
        image_index = np.searchsorted(self._cumulative, uniform[:, 0], side="right")
        image_index = np.minimum(image_index, len(self.hr_images) - 1)
        lr_y = (uniform[:, 1] * self._positions_y[image_index]).astype(np.int64)
        lr_x = (uniform[:, 2] * self._positions_x[image_index]).astype(np.int64)
        if self.augment:
            transform = (uniform[:, 3] * NUM_TRANSFORMS).astype(np.int64)
        else:
            transform = np.zeros(count, dtype=np.int64)
        return PatchDraw(image_index, lr_y, lr_x, transform)

    def crop(self, draw: PatchDraw) -> tuple[np.ndarray, np.ndarray]:
        """The pairs a draw describes: (lr (B, p, p, C), hr (B, s*p, s*p, C)) uint8 (kept LR only)."""
        if self.real is not None:
            raise ValueError("a real-world sampler makes LR at sampling time: use sample()")
        count = len(draw.image_index)
        p, hp, s = self.lr_patch_size, self.hr_patch_size, self.scale
        lr_batch = np.empty((count, p, p, self.num_channels), dtype=np.uint8)
        hr_batch = np.empty((count, hp, hp, self.num_channels), dtype=np.uint8)
        for i, (index, y, x, transform) in enumerate(
            zip(draw.image_index.tolist(), draw.lr_y.tolist(), draw.lr_x.tolist(), draw.transform.tolist())
        ):
            lr_batch[i] = apply_transform(self.lr_images[index][y : y + p, x : x + p], transform)
            hr_batch[i] = apply_transform(
                self.hr_images[index][s * y : s * y + hp, s * x : s * x + hp], transform
            )
        return lr_batch, hr_batch

    def crop_hr(self, draw: PatchDraw) -> np.ndarray:
        """The HR patches (B, s*p, s*p, C) uint8 a draw describes."""
        hp, s = self.hr_patch_size, self.scale
        return np.stack([
            apply_transform(self.hr_images[index][s * y : s * y + hp, s * x : s * x + hp], transform)
            for index, y, x, transform in zip(
                draw.image_index.tolist(), draw.lr_y.tolist(), draw.lr_x.tolist(), draw.transform.tolist()
            )
        ])

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`batch_size` random aligned pairs (uint8 NHWC), reproducible from `rng`'s state.

        With the real-world chain the HR patch is cut first and degraded after, with random numbers
        drawn from `rng` after the crop positions (so the positions match a bicubic run's)."""
        draw = self.draw(batch_size, rng)
        if self.real is None:
            return self.crop(draw)
        hr = self.crop_hr(draw)
        return degrade_batch(hr, self.scale, rng, self.real), hr


class PatchFileDataset:
    """Fixed pairs from a `superres prepare` file; batches are drawn uniformly with replacement."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        archive, meta = open_npz(path)
        with archive:
            if meta.get("kind") != KIND_PATCHES:
                raise ConfigError(f"{path}: holds {meta.get('kind')!r}, not prepared patch pairs")
            self.lr = _read_npz_array(archive, "lr", path)
            self.hr = _read_npz_array(archive, "hr", path)
        self.path = path
        self.meta = meta
        self.scale = int(meta["scale"])
        self.lr_patch_size = int(self.lr.shape[1])
        self.hr_patch_size = int(self.hr.shape[1])
        self.num_channels = int(self.lr.shape[3])
        self.channels = str(meta["channels"])
        self.degradation = str(meta["degradation"])
        if len(self.lr) == 0 or len(self.lr) != len(self.hr):
            raise ConfigError(f"{path}: holds {len(self.lr)} LR and {len(self.hr)} HR patches")

    def __len__(self) -> int:
        return len(self.lr)

    def steps_per_epoch(self, global_batch: int) -> int:
        return max(1, math.ceil(len(self.lr) / global_batch))

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        index = rng.integers(0, len(self.lr), size=batch_size)
        return self.lr[index], self.hr[index]


def prepare_patches(
    sources: Sequence[str | Path],
    out_path: str | Path,
    *,
    scale: int,
    patch_size: int,
    count: int,
    degradation: str = "bicubic",
    channels: str = "Y",
    seed: int = 0,
    augment: bool = True,
) -> dict[str, Any]:
    """Write `count` aligned pairs drawn by `PairedPatchSampler` with `default_rng(seed)`.

    The file holds `lr` (N, p, p, C) and `hr` (N, s*p, s*p, C) uint8 and a `meta` JSON string.
    The pairs are exactly `PairedPatchSampler(...).sample(count, np.random.default_rng(seed))`.
    """
    if count <= 0:
        raise ConfigError(f"count must be a positive number of pairs, got {count}")
    images, names = load_hr_images(sources, channels)
    sampler = PairedPatchSampler(
        images, scale, patch_size, degradation=degradation, augment=augment, names=names
    )
    rng = np.random.default_rng(seed)
    lr_chunks, hr_chunks = [], []
    for start in range(0, count, PREPARE_CHUNK):
        lr, hr = sampler.sample(min(PREPARE_CHUNK, count - start), rng)
        lr_chunks.append(lr)
        hr_chunks.append(hr)
    meta = {
        "kind": KIND_PATCHES,
        "scale": int(scale),
        "patch_size": int(patch_size),
        "count": int(count),
        "degradation": degradation,
        "channels": channels,
        "seed": int(seed),
        "augment": bool(augment),
        "sources": [str(source) for source in sources],
        "images_used": len(sampler),
    }
    atomic_savez(
        out_path,
        {"lr": np.concatenate(lr_chunks), "hr": np.concatenate(hr_chunks), META_KEY: _meta_array(meta)},
    )
    logger.info("wrote %d patch pairs (%s, x%d) to %s", count, channels, scale, out_path)
    return meta


def is_patch_file(path: str | Path) -> bool:
    """True for a `superres prepare` file (checked by its meta record, not its name)."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() == ".npz"):
        return False
    archive, meta = open_npz(path)
    archive.close()
    return meta.get("kind") == KIND_PATCHES


def open_patch_source(
    train_data: Iterable[str | Path],
    *,
    scale: int,
    patch_size: int,
    degradation: str,
    channels: str,
    augment: bool = True,
    degradation_options: dict[str, Any] | None = None,
) -> PairedPatchSampler | PatchFileDataset:
    """The trainer's source of pairs: one prepared patch file, or HR images sampled on the fly."""
    sources = [Path(path) for path in train_data]
    if not sources:
        raise ConfigError("no training data given")
    patch_files = [path for path in sources if is_patch_file(path)]
    if not patch_files:
        images, names = load_hr_images(sources, channels)
        return PairedPatchSampler(
            images, scale, patch_size, degradation=degradation, degradation_options=degradation_options,
            augment=augment, names=names,
        )
    if len(sources) > 1:
        raise ConfigError(f"a prepared patch file ({patch_files[0]}) must be the only training data")
    dataset = PatchFileDataset(patch_files[0])
    expected = {"scale": scale, "patch_size": patch_size, "channels": channels, "degradation": degradation}
    found = {
        "scale": dataset.scale,
        "patch_size": dataset.lr_patch_size,
        "channels": dataset.channels,
        "degradation": dataset.degradation,
    }
    for key, value in expected.items():
        if found[key] != value:
            raise ConfigError(f"{dataset.path} was prepared with {key} {found[key]}, training uses {value}")
    return dataset


# --- tensors --------------------------------------------------------------------------------


def to_batch(
    lr_uint8: np.ndarray,
    hr_uint8: np.ndarray,
    device: str | torch.device,
    *,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC arrays -> float32 NCHW tensors in [0, 1] on `device`.

    The uint8 bytes travel (4x fewer than float32), through pinned memory and without blocking
    on CUDA; the conversion runs on the device. With `channels_last` the NHWC layout is kept
    (a permuted view is already channels-last), else the result is made contiguous NCHW.
    """
    device = torch.device(device)
    return (
        _to_device_float(lr_uint8, device, channels_last),
        _to_device_float(hr_uint8, device, channels_last),
    )


def _to_device_float(array: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        tensor = tensor.to(device)
    tensor = tensor.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    return tensor if channels_last else tensor.contiguous()


# --- batches cut on the training device -----------------------------------------------------


class _FlatImages:
    """Images of different sizes in one flat uint8 tensor on a device, for gathering crops."""

    def __init__(self, images: Sequence[np.ndarray], device: torch.device) -> None:
        self.channels = int(images[0].shape[2])
        sizes = [image.size for image in images]
        flat = np.concatenate([image.reshape(-1) for image in images])
        self.pixels = torch.from_numpy(flat).to(device)
        self.offsets = torch.tensor(np.cumsum([0, *sizes[:-1]]), dtype=torch.int64, device=device)
        self.widths = torch.tensor([image.shape[1] for image in images], dtype=torch.int64, device=device)
        self.channel_index = torch.arange(self.channels, device=device)

    def crop(
        self, image_index: torch.Tensor, y: torch.Tensor, x: torch.Tensor, transform: torch.Tensor, size: int
    ) -> torch.Tensor:
        """(B, size, size, C) uint8 crops at (y, x), transformed as `apply_transform` does."""
        grid = torch.arange(size, device=self.pixels.device)
        rows, cols = grid.view(1, size, 1), grid.view(1, 1, size)
        flip = (transform & 2).bool().view(-1, 1, 1)
        mirror = (transform & 1).bool().view(-1, 1, 1)
        transpose = (transform & 4).bool().view(-1, 1, 1)
        # Output pixel (i, j) reads the crop at (i', j') after undoing flip and mirror, swapped
        # when transposed: the inverse of apply_transform's transpose -> mirror -> flip.
        source_rows = torch.where(flip, size - 1 - rows, rows)  # (B, size, 1)
        source_cols = torch.where(mirror, size - 1 - cols, cols)  # (B, 1, size)
        dy = torch.where(transpose, source_cols, source_rows)  # (B, size, size)
        dx = torch.where(transpose, source_rows, source_cols)
        pixel = (y.view(-1, 1, 1) + dy) * self.widths[image_index].view(-1, 1, 1) + x.view(-1, 1, 1) + dx
        flat_index = self.offsets[image_index].view(-1, 1, 1, 1) + pixel.unsqueeze(-1) * self.channels
        return self.pixels[flat_index + self.channel_index]


def _to_unit_float(patches: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, C, H, W) in [0, 1]; NHWC memory kept for channels-last."""
    tensor = patches.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    return tensor if channels_last else tensor.contiguous()


def _host_to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


class DeviceBatches:
    """Training batches as float tensors, cut on `device` from a device-resident copy of the data.

    `sample(batch_size, rng)` gives exactly `to_batch(*source.sample(batch_size, rng), device)`:
    the same random draw, the same pixels, but no per-pair Python work and only a (B, 4) array
    of crop parameters crossing to the GPU.
    """

    def __init__(
        self,
        source: PairedPatchSampler | PatchFileDataset,
        device: str | torch.device,
        *,
        channels_last: bool = False,
        teacher_images: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.source = source
        self.device = torch.device(device)
        self.channels_last = channels_last
        self._teacher_images = None
        # The real-world chain runs on the host, per patch: its batches cross to the device whole.
        self._on_host = isinstance(source, PairedPatchSampler) and source.real is not None
        self._host_seconds = 0.0
        if self._on_host:
            if teacher_images is not None:
                raise ConfigError(
                    "a teacher needs fixed LR images; degradation \"real\" makes new ones each step"
                )
        elif isinstance(source, PairedPatchSampler):
            self._lr_images = _FlatImages(source.lr_images, self.device)
            self._hr_images = _FlatImages(source.hr_images, self.device)
            if teacher_images is not None:
                self._teacher_images = _FlatImages(teacher_images, self.device)
        else:  # a prepared patch file has no images to run a teacher on (train refuses the pair)
            self._lr_pairs = torch.from_numpy(source.lr).to(self.device)
            self._hr_pairs = torch.from_numpy(source.hr).to(self.device)

    @property
    def has_teacher(self) -> bool:
        return self._teacher_images is not None

    @property
    def on_host(self) -> bool:
        """Whether batches are made on the host (the real-world chain), timed by `take_host_seconds`."""
        return self._on_host

    def take_host_seconds(self) -> float:
        """Seconds spent making batches on the host since the last call."""
        seconds, self._host_seconds = self._host_seconds, 0.0
        return seconds

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self._on_host:
            started = time.perf_counter()
            lr, hr = self.source.sample(batch_size, rng)
            batch = to_batch(lr, hr, self.device, channels_last=self.channels_last)
            self._host_seconds += time.perf_counter() - started
            return batch
        if isinstance(self.source, PairedPatchSampler):
            lr, hr = self._crop_images(batch_size, rng)[:2]
        else:
            index = _host_to_device(rng.integers(0, len(self.source), size=batch_size), self.device)
            lr, hr = self._lr_pairs[index], self._hr_pairs[index]
        return _to_unit_float(lr, self.channels_last), _to_unit_float(hr, self.channels_last)

    def sample_taught(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`sample`'s (lr, hr) and the teacher's output cut where hr is (needs teacher_images)."""
        lr, hr, taught = self._crop_images(batch_size, rng)
        return tuple(_to_unit_float(patches, self.channels_last) for patches in (lr, hr, taught))

    def _crop_images(self, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """(lr, hr) uint8 crops of one draw, and the teacher's crop when there is a teacher."""
        sampler = self.source
        draw = sampler.draw(batch_size, rng)
        params = np.stack([draw.image_index, draw.lr_y, draw.lr_x, draw.transform], axis=1)
        image_index, y, x, transform = _host_to_device(params, self.device).unbind(1)
        scale = sampler.scale
        lr = self._lr_images.crop(image_index, y, x, transform, sampler.lr_patch_size)
        hr_crops = [
            images.crop(image_index, y * scale, x * scale, transform, sampler.hr_patch_size)
            for images in (self._hr_images, self._teacher_images)
            if images is not None
        ]
        return (lr, *hr_crops)
