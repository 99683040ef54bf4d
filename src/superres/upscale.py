"""Upscaling real images: colour handling, alpha, 16-bit, tiling, and batches of files.

`upscale_image` takes HWC uint8/uint16 pixels (gray, gray+alpha, RGB, RGBA) and a model that
follows the `superres.models` contract, and returns the upscaled pixels in the same layout and
type. The whole per-pixel pipeline (colour conversion, the network, bicubic chroma and alpha,
clipping, quantisation) runs tile by tile, so only the input (as integers and as floats) and the
finished integer output exist at full size; with the tile overlap at the model's receptive field
the result equals an untiled run.

Colour: a Y model (`model.info.channels_for(model.model_kwargs) == "Y"`) sees the BT.601 Y of
RGB input while Cb and Cr are upscaled bicubically; gray input is its own Y. An RGB model sees
RGB; gray input is replicated to three channels and the result averaged back to one.

Alpha: colour and alpha are upscaled separately (colour by the model, alpha bicubically). The
colour of fully transparent pixels is meaningless (often black) and would bleed into the visible
edge as a dark fringe, so before upscaling it is replaced by a smooth extrapolation of the visible
colours (`fill_transparent`, a pull-push fill). Premultiplying instead would divide the network's
output by an interpolated alpha, which amplifies the network's errors where alpha is small.

`upscale_files` runs a batch of files, folders and globs with atomic writes, skips existing
outputs, never overwrites an input, and reports unreadable files, unreadable folders and entries
a glob reaches twice (through a symlink) without stopping the batch. It removes the temporary
files a killed earlier run left beside its outputs, and shows per-tile progress with an ETA
once an image takes more than a second. `plan_batch` pairs inputs with outputs, keeps one
`--shard` and sets aside what a journal (`superres.batch`) says an earlier run finished; the
`ImageBatchWorker` reads, upscales (several small images of one size per network call:
`upscale_images`) and writes, with decoding and encoding overlapped on their own threads
locally (`run_locally`) or as Dask tasks on a cluster (`superres.cluster`).
The network is called through a `superres.backends.Backend` (`(lr) -> sr` on one device): pass
a runtime name ("torch", "onnxruntime") or a ready `Backend`. Tile overlap and colour handling
come from the model's card alone (`receptive_field_for` with the model's own kwargs,
`channels_for`), so every registered network, pre- or post-upsampling, tiles exactly.
"""

from __future__ import annotations

import glob
import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from superres.backends import Backend, TensorFunction, make_backend, resolve_device
from superres.errors import ConfigError, ImageReadError, ModelError
from superres.tiling import auto_tile, tiled_forward

logger = logging.getLogger(__name__)

#: LR pixels each side that MATLAB's integer bicubic upscale (chroma, alpha) reads.
BICUBIC_CONTEXT = 2
#: Characters that make an input a glob pattern rather than a file name.
_GLOB_CHARACTERS = frozenset("*?[")
#: Seconds of work on one image before its tile progress bar appears.
PROGRESS_DELAY_S = 1.0


# --------------------------------------------------------------------------- alpha


def _sum_2x2(values: np.ndarray) -> np.ndarray:
    """Sum 2x2 blocks of an (H, W, ...) array, zero-padding odd sizes."""
    height, width = values.shape[:2]
    pad = [(0, height % 2), (0, width % 2)] + [(0, 0)] * (values.ndim - 2)
    padded = np.pad(values, pad)
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, *values.shape[2:])
    return blocks.sum(axis=(1, 3))


def fill_transparent(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`colour` (H, W, K) with every fully transparent pixel (alpha == 0) replaced by a smooth
    extrapolation of the visible pixels' colours; visible pixels are returned unchanged.

    Pull-push: build a pyramid of visibility-weighted colour sums by 2x2 summing, then walk back
    down, taking each pixel's own average where it saw visible pixels and its parent's otherwise.
    Linear in the pixel count; a transparent pixel takes the colour of the visible pixels
    nearest to it in the pyramid.
    """
    visible = alpha > 0
    if visible.all() or not visible.any():
        return colour
    weights = [visible.astype(np.float32)[..., None]]
    sums = [colour * weights[0]]
    while max(sums[-1].shape[:2]) > 1:
        sums.append(_sum_2x2(sums[-1]))
        weights.append(_sum_2x2(weights[-1]))

    filled = sums[-1] / weights[-1]  # the coarsest level sees every visible pixel, weight > 0
    for level_sums, level_weights in zip(reversed(sums[:-1]), reversed(weights[:-1])):
        height, width = level_sums.shape[:2]
        parent = np.repeat(np.repeat(filled, 2, axis=0), 2, axis=1)[:height, :width]
        own = level_sums / np.maximum(level_weights, 1e-12)
        filled = np.where(level_weights > 0, own, parent)
    return np.where(visible[..., None], colour, filled).astype(colour.dtype, copy=False)


# --------------------------------------------------------------------------- one image


def _max_value(dtype: np.dtype) -> int:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise TypeError(
        f"expected uint8 or uint16 pixels (HW or HWC, 1 to 4 channels), got {dtype}; "
        "convert floats in [0, 1] with superres.images.from_float"
    )


def _tile_overlap(model: nn.Module) -> int:
    """LR pixels of context each tile needs so that tiled output equals untiled output.

    The model's receptive field for its own scale and kwargs (a deeper network than the card's
    default needs more), and at least the bicubic taps that chroma and alpha are upscaled with.
    """
    receptive_field = model.info.receptive_field_for(model.scale, **model.model_kwargs)
    return max(int(receptive_field), BICUBIC_CONTEXT)


@dataclass(frozen=True)
class _TilePipeline:
    """LR tile in [0, 1] -> quantised SR tile on the CPU: colour, model, chroma, alpha.

    The work runs on the backend's device; only the finished integer tile comes back.
    """

    forward: TensorFunction
    device: torch.device
    model_channels: str  # "Y" or "RGB"
    scale: int
    colour_channels: int  # 1 (gray) or 3 (RGB)
    has_alpha: bool
    max_value: int

    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        lr = lr.to(self.device, non_blocking=True)
        colour = lr[:, : self.colour_channels]
        planes = [self._upscale_colour(colour)]
        if self.has_alpha:
            planes.append(self._bicubic(lr[:, self.colour_channels :]))
        sr = torch.cat(planes, dim=1) if len(planes) > 1 else planes[0]
        return self._quantise(sr).cpu()

    def _bicubic(self, planes: torch.Tensor) -> torch.Tensor:
        from superres.resize import imresize_tensor

        height, width = planes.shape[-2:]
        return imresize_tensor(planes, size=(self.scale * height, self.scale * width))

    def _upscale_colour(self, colour: torch.Tensor) -> torch.Tensor:
        if self.model_channels == "Y":
            return self._upscale_with_y_model(colour)
        if self.colour_channels == 1:
            # An RGB model on gray: feed it a neutral RGB image, average its answer back to gray.
            return self.forward(colour.expand(-1, 3, -1, -1)).mean(dim=1, keepdim=True)
        return self.forward(colour)

    def _upscale_with_y_model(self, colour: torch.Tensor) -> torch.Tensor:
        from superres.color import rgb_to_ycbcr_tensor, ycbcr_to_rgb_tensor

        if self.colour_channels == 1:
            return self.forward(colour)  # gray is its own luma
        ycbcr = rgb_to_ycbcr_tensor(colour)
        y_sr = self.forward(ycbcr[:, :1])
        chroma_sr = self._bicubic(ycbcr[:, 1:])
        return ycbcr_to_rgb_tensor(torch.cat([y_sr, chroma_sr], dim=1))

    def _quantise(self, sr: torch.Tensor) -> torch.Tensor:
        # Round half up after clipping; int32 holds uint16 values (torch's uint16 is partial).
        values = torch.floor(sr.clamp(0.0, 1.0) * self.max_value + 0.5)
        return values.to(torch.uint8 if self.max_value == 255 else torch.int32)


def _prepare_lr(pixels: np.ndarray, max_value: int, has_alpha: bool) -> torch.Tensor:
    """HWC integer pixels -> (1, C, H, W) float32 in [0, 1], transparent colours filled."""
    # Reorder while still integers (a quarter of the float size), then convert once.
    with warnings.catch_warnings():
        # A read-only array (a caller's, or np.broadcast_to) is only read: .float() below copies.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        planes = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()
    lr = planes.float().div_(max_value)
    del planes
    if has_alpha:
        colour = lr[:-1].permute(1, 2, 0).numpy()
        filled = fill_transparent(colour, lr[-1].numpy())
        lr[:-1] = torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1)
    return lr.unsqueeze(0)


def _resolve_tile(
    tile: str | int | None, model: nn.Module, channels: int, device: torch.device, half: bool
) -> int | None:
    if tile is None or isinstance(tile, int):
        if isinstance(tile, int) and tile < 1:
            raise ConfigError(f"tile must be a positive number of pixels or 'auto', got {tile}")
        return tile
    if tile != "auto":
        raise ConfigError(f"tile must be a positive number of pixels or 'auto', got {tile!r}")
    return auto_tile(
        model.info,
        channels,
        device,
        scale=model.scale,
        model_kwargs=getattr(model, "model_kwargs", None),
        bytes_per_value=2 if half else 4,
    )


def upscale_image(
    pixels: np.ndarray,
    model: nn.Module,
    *,
    tile: str | int | None = "auto",
    device: str | torch.device = "cpu",
    half: bool = False,
    backend: str | Backend = "torch",
    self_ensemble: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Upscale HWC (or HW) uint8/uint16 pixels by `model.scale`; same layout and type out.

    `tile`: "auto" (from a memory budget), a tile size in LR pixels, or None (whole image).
    `backend`: a runtime name for `superres.backends.make_backend`, or a ready `Backend` (then
    `device` and `self_ensemble` are its own; `half` still sizes the auto tile).
    `self_ensemble`: 8 passes averaged (`superres.ensemble`).
    `on_tile(done, total)` is called after each tile (progress reporting).
    """
    (result,) = upscale_images(
        [pixels], model, tile=tile, device=device, half=half, backend=backend,
        self_ensemble=self_ensemble, on_tile=on_tile,
    )
    return result


def upscale_images(
    images: Sequence[np.ndarray],
    model: nn.Module,
    *,
    tile: str | int | None = "auto",
    device: str | torch.device = "cpu",
    half: bool = False,
    backend: str | Backend = "torch",
    self_ensemble: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """`upscale_image` on several images of one shape and type, run as one batch (N > 1 in the
    network's calls); the same results as one by one. `tile` applies to the batch as a whole."""
    arrays = [np.asarray(pixels) for pixels in images]
    first = arrays[0]
    if any(array.shape != first.shape or array.dtype != first.dtype for array in arrays):
        raise ValueError("a batch of images must share one shape and dtype")
    squeeze = first.ndim == 2
    if squeeze:
        arrays = [array[:, :, None] for array in arrays]
    shape = arrays[0].shape
    if len(shape) != 3 or shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected HWC pixels with 1 to 4 channels, got shape {first.shape}")
    max_value = _max_value(first.dtype)
    channels = shape[2]
    has_alpha = channels in (2, 4)
    if isinstance(backend, Backend):
        runner = backend
    else:
        runner = make_backend(model, backend, device, half=half, self_ensemble=self_ensemble)

    pipeline = _TilePipeline(
        forward=runner.forward,
        device=runner.device,
        model_channels=model.info.channels_for(model.model_kwargs),
        scale=int(model.scale),
        colour_channels=channels - 1 if has_alpha else channels,
        has_alpha=has_alpha,
        max_value=max_value,
    )
    tile_size = _resolve_tile(tile, model, channels, runner.device, half)
    overlap = _tile_overlap(model)
    lr = torch.cat([_prepare_lr(array, max_value, has_alpha) for array in arrays])
    with torch.inference_mode():
        # Channels-last output: its HWC view below is the numpy result without another copy.
        sr = tiled_forward(
            pipeline,
            lr,
            pipeline.scale,
            tile=tile_size,
            overlap=overlap,
            memory_format=torch.channels_last,
            on_tile=on_tile,
        )
    del lr
    results = [np.ascontiguousarray(one.permute(1, 2, 0).numpy(), dtype=first.dtype) for one in sr]
    return [result[:, :, 0] for result in results] if squeeze else results


# --------------------------------------------------------------------------- batches of files


@dataclass
class BatchReport:
    """What `upscale_files` did: outputs written, (input, reason) skipped and failed."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 when every image was upscaled or deliberately skipped, 1 if any failed."""
        return 1 if self.failed else 0

    def extend(self, other: BatchReport) -> None:
        """Add `other`'s outcomes to these (images and videos of one command)."""
        self.written.extend(other.written)
        self.skipped.extend(other.skipped)
        self.failed.extend(other.failed)

    def summary(self) -> str:
        """`3 done, 1 skipped, 0 failed`: the batch's last line."""
        return f"{len(self.written)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"


def _is_glob(text: str) -> bool:
    return any(character in _GLOB_CHARACTERS for character in text)


def expand_inputs(
    inputs: Iterable[str | Path],
) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """Files, folders and globs -> (named files, files found in folders or globs, problems).

    Globs are expanded here so that shells that do not expand them (Windows) work too. A
    literal name that does not exist stays in the named files: reading it reports the failure.
    """
    from superres.images import READ_EXTENSIONS, list_images

    named: list[Path] = []
    found: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            try:
                found.extend(list_images(path))
            except ImageReadError as error:  # an empty or unreadable folder: say so, do the rest
                problems.append((path, str(error)))
        elif not path.exists() and _is_glob(str(item)):
            matches = sorted(Path(match) for match in glob.glob(str(item), recursive=True))
            images = [m for m in matches if m.is_file() and m.suffix.lower() in READ_EXTENSIONS]
            if not images:
                problems.append((path, f"no images match {item}"))
            found.extend(images)
        else:
            named.append(path)
    return named, _without_aliases(named, found), problems


def _without_aliases(named: Sequence[Path], found: Sequence[Path]) -> list[Path]:
    """`found` without the files already reached under another name (a symlinked folder)."""
    seen = {_resolved(path) for path in named}
    unique = []
    for path in found:
        real = _resolved(path)
        if real in seen:
            logger.info("not upscaling %s: the same file as another input", path)
            continue
        seen.add(real)
        unique.append(path)
    return unique


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the name is all there is
        return path.absolute()


def output_name(input_path: Path, scale: int, output_format: str | None = None) -> str:
    """`photo.jpg` -> `photo_x2.jpg`: the default output name keeps the extension (a GIF, which
    is not written, becomes a PNG); `output_format` ("webp", "png", ...) replaces it."""
    from superres.images import IMAGE_EXTENSIONS

    suffix = input_path.suffix if input_path.suffix.lower() in IMAGE_EXTENSIONS else ".png"
    if output_format is not None:
        suffix = "." + output_format.lower().lstrip(".")
        if suffix not in IMAGE_EXTENSIONS:
            raise ConfigError(f"cannot write {output_format} files; choose one of {' '.join(IMAGE_EXTENSIONS)}")
    return f"{input_path.stem}_x{scale}{suffix}"


def output_is_single_file(output: Path, count: int) -> bool:
    """Whether `-o output` names one output file; ConfigError when it names a file for several
    inputs, or a file of a format that is read but not written."""
    from superres.images import IMAGE_EXTENSIONS, READ_EXTENSIONS

    names_a_file = output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir()
    if names_a_file and count > 1:
        raise ConfigError(
            f"-o {output} names a file, but {count} images are being upscaled; give a folder"
        )
    if count == 1 and output.suffix.lower() in READ_EXTENSIONS and not names_a_file:
        if not output.is_dir():  # e.g. out.gif: a file the user wants, not a folder to create
            raise ConfigError(
                f"-o {output}: cannot write {output.suffix} files; "
                f"use one of {' '.join(IMAGE_EXTENSIONS)}"
            )
    return names_a_file


def plan_outputs(
    named: Sequence[Path],
    found: Sequence[Path],
    output: Path | None,
    scale: int,
    conflicts: list[tuple[Path, str]] | None = None,
    output_format: str | None = None,
) -> list[tuple[Path, Path]]:
    """(input, output) pairs. Folder and glob finds that are another input's output (a previous
    run's results lying beside the inputs) are dropped; writing over any input is a ConfigError.
    A second input bound for an output already claimed is left out and, with `conflicts` given,
    reported there (else a ConfigError)."""
    inputs = list(dict.fromkeys([*named, *found]))  # order kept, duplicates dropped
    single_file = output is not None and output_is_single_file(output, len(inputs))

    def target(path: Path) -> Path:
        if output is None:
            return path.with_name(output_name(path, scale, output_format))
        return output if single_file else output / output_name(path, scale, output_format)

    planned = {path: target(path) for path in inputs}
    outputs = {out.resolve() for out in planned.values()}
    named_set = set(named)
    jobs = []
    for path, out in planned.items():
        if path not in named_set and path.resolve() in outputs:
            logger.info("not upscaling %s: it is the output of another input", path)
            continue
        jobs.append((path, out))

    # Only what will actually be read must survive; a dropped previous output may be replaced.
    resolved_inputs = {path.resolve(): path for path, _ in jobs}
    claimed: dict[Path, Path] = {}
    for path, out in jobs:
        if out.resolve() in resolved_inputs:
            victim = resolved_inputs[out.resolve()]
            raise ConfigError(f"refusing to overwrite input {victim} with the output of {path}")
        if out.resolve() in claimed:
            message = f"{claimed[out.resolve()]} and {path} would both be written to {out}"
            if conflicts is None:
                raise ConfigError(message)
            conflicts.append((path, message))
            continue
        claimed[out.resolve()] = path
    return [(path, out) for path, out in jobs if claimed.get(out.resolve()) == path]


@contextmanager
def _tile_progress(label: str) -> Iterator[Callable[[int, int], None]]:
    """An `on_tile` callback drawing a bar with an ETA, shown only once the work takes a while."""
    from tqdm import tqdm

    bar = None

    def on_tile(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="tile", delay=PROGRESS_DELAY_S, leave=False)
        bar.update(done - bar.n)

    try:
        yield on_tile
    finally:
        if bar is not None:
            bar.close()


def _resolve_batch_model(
    model: str | nn.Module, scale: int | None, device: torch.device
) -> nn.Module:
    if isinstance(model, nn.Module):
        if scale is not None and int(model.scale) != int(scale):
            raise ModelError(f"model '{model.info.name}' is for x{model.scale}, not x{scale}")
        return model
    from superres.pretrained import resolve_model

    return resolve_model(model, scale, device=str(device))


#: Most images one network call takes at once (small images of one shape and type, see below).
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class BatchSettings:
    """How every image of a batch is upscaled: what the local and the cluster runners share."""

    model: str | nn.Module  # a name of `superres.parse_model`'s grammar, or a network
    scale: int | None
    tile: str | int | None = "auto"
    device: str = "cpu"
    backend: str = "torch"
    half: bool = False
    self_ensemble: bool = False
    max_pixels: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    background: tuple[int, int, int] = (255, 255, 255)  # under alpha, for formats without it
    output_format: str | None = None  # the outputs' extension ("webp"); None: each input's own
    quality: int = 95  # JPEG and WebP
    overwrite: bool = False  # without it an output is never written over, not even one that
    # another run of the same batch wrote while this one worked (no-clobber rename)

    def journal_key(self, network: nn.Module) -> dict:
        """What decides the output pixels: a journal written with another key is not resumed."""
        name = self.model if isinstance(self.model, str) else network.info.name
        return {
            "model": name,
            "model_kwargs": getattr(network, "model_kwargs", {}),
            "scale": self.scale,
            "self_ensemble": self.self_ensemble,
            "half": self.half,
        }


class ImageBatchWorker:
    """Reads, upscales and writes the images of a batch with one network and one runner.

    The local runner calls its parts from its reader, compute and writer threads; a cluster
    worker keeps one per process (`superres.cluster`), so the model is loaded once per worker.
    """

    def __init__(self, settings: BatchSettings, network: nn.Module | None = None) -> None:
        from superres.images import DEFAULT_MAX_PIXELS

        self.settings = settings
        device = resolve_device(settings.device)
        if network is None:
            network = _resolve_batch_model(settings.model, settings.scale, device)
        self.network = network
        self.runner = make_backend(
            self.network, settings.backend, device, half=settings.half, self_ensemble=settings.self_ensemble
        )
        self.max_pixels = DEFAULT_MAX_PIXELS if settings.max_pixels is None else settings.max_pixels

    def read(self, path: Path):  # -> superres.images.LoadedImage
        from superres.images import read_image

        return read_image(path, max_pixels=self.max_pixels)

    def can_join(self, first, image, count: int) -> bool:
        """Whether `image` may join a batch that holds `count` images like `first`: same shape and
        type, and the whole batch within one tile's pixels, so batching costs no extra memory."""
        pixels = first.pixels
        if count >= self.settings.batch_size or image.pixels.shape != pixels.shape:
            return False
        if image.pixels.dtype != pixels.dtype:
            return False
        settings = self.settings
        tile = _resolve_tile(settings.tile, self.network, pixels.shape[2], self.runner.device, settings.half)
        return tile is None or (count + 1) * pixels.shape[0] * pixels.shape[1] <= tile * tile

    def compute(self, images: Sequence) -> list[np.ndarray]:
        """The upscaled pixels of `images` (LoadedImage), as one batch when there are several."""
        if len(images) > 1:
            stacked = [image.pixels for image in images]
            return upscale_images(stacked, self.network, tile=None, backend=self.runner)
        with _tile_progress(images[0].path.name) as on_tile:
            sr = upscale_image(
                images[0].pixels, self.network, tile=self.settings.tile, half=self.settings.half,
                backend=self.runner, on_tile=on_tile,
            )
        return [sr]

    def write(self, output_path: Path, sr: np.ndarray, image) -> None:
        """`sr` to `output_path` atomically, with `image`'s colour profile (alpha flattened on the
        batch's background for a format without it); a killed earlier writer's temporary files
        beside it are removed first."""
        from superres.atomic import remove_stale_temporaries
        from superres.images import write_image

        output_path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(output_path)
        write_image(
            output_path, sr, icc_profile=image.icc_profile, background=self.settings.background,
            quality=self.settings.quality, replace=self.settings.overwrite,
        )

    def upscale_file(self, input_path: Path, output_path: Path) -> None:
        """One file from end to end (what a cluster task does)."""
        image = self.read(input_path)
        (sr,) = self.compute([image])
        self.write(output_path, sr, image)


@dataclass
class BatchPlan:
    """A batch after planning: the jobs left to run, the report so far, and the journal."""

    jobs: list[tuple[Path, Path]]
    report: BatchReport
    journal: object  # superres.batch.Journal

    def done(self, input_path: Path, output_path: Path, *, journaled: bool = False) -> None:
        """`output_path` was written; `journaled`: its journal line is written already."""
        logger.debug("wrote %s", output_path)
        self.report.written.append(output_path)
        if not journaled:
            self.journal.record(input_path, output_path)

    def failed(self, input_path: Path, reason: str) -> None:
        logger.warning("failed: %s", reason)
        self.report.failed.append((input_path, reason))


def plan_batch(
    inputs: Iterable[str | Path],
    output: str | Path | None,
    network: nn.Module,
    settings: BatchSettings,
    *,
    overwrite: bool = False,
    shard: object = None,
) -> BatchPlan:
    """Expand `inputs`, pair them with outputs, keep this shard's, and set aside what is done:
    outputs the journal records (even with `overwrite`) and, without it, existing outputs."""
    from superres.batch import Journal, Shard

    shard = Shard.parse(shard) if isinstance(shard, str) else (shard or Shard())
    named, found, problems = expand_inputs(inputs)
    output_path = Path(output) if output is not None else None
    planned = plan_outputs(
        named, found, output_path, int(network.scale), conflicts=problems, output_format=settings.output_format
    )
    jobs = shard.select(planned)
    journal = Journal.beside([out for _, out in jobs], settings.journal_key(network), shard)

    report = BatchReport()
    for path, reason in problems:
        logger.warning("%s", reason)
        report.failed.append((path, reason))
    remaining = []
    for input_path, output_path in jobs:
        if journal.is_done(input_path, output_path):
            reason = f"{output_path} was finished by an earlier run of this batch"
        elif output_path.exists() and not overwrite:
            reason = f"{output_path} exists (use --overwrite to replace it)"
        else:
            remaining.append((input_path, output_path))
            continue
        logger.info("skipping %s: %s", input_path, reason)
        report.skipped.append((input_path, reason))
    return BatchPlan(remaining, report, journal)


def run_locally(plan: BatchPlan, worker: ImageBatchWorker) -> None:
    """The plan's jobs on this process, decoding and encoding overlapped with the network."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from superres.batch import run_overlapped

    # Messages go through tqdm.write while the bar is drawn, so they do not tear it.
    with logging_redirect_tqdm(), tqdm(
        total=len(plan.jobs), unit="image", disable=len(plan.jobs) < 2, leave=False
    ) as bar:

        def write(item, sr: np.ndarray) -> None:
            # The journal line right after the file, on the writer thread: a kill between the
            # two costs at most this one image's redo.
            worker.write(item.output_path, sr, item.image)
            plan.journal.record(item.input_path, item.output_path)

        def on_done(item) -> None:
            plan.done(item.input_path, item.output_path, journaled=True)
            bar.update()

        def on_failed(item, reason: str) -> None:
            plan.failed(item.input_path, reason)
            bar.update()

        run_overlapped(
            plan.jobs,
            read=worker.read,
            compute=worker.compute,
            write=write,
            can_join=worker.can_join,
            on_done=on_done,
            on_failed=on_failed,
        )


def upscale_files(
    inputs: Iterable[str | Path],
    output: str | Path | None,
    *,
    scale: int | None,
    model: str | nn.Module,
    overwrite: bool = False,
    tile: str | int | None = "auto",
    device: str | torch.device = "auto",
    backend: str = "torch",
    half: bool = False,
    self_ensemble: bool = False,
    max_pixels: int | None = None,
    shard: str | object | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cluster: str | None = None,
    workers: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    output_format: str | None = None,
    quality: int = 95,
) -> BatchReport:
    """Upscale every image that `inputs` (files, folders, globs) names.

    Outputs go to `output` (a file for a single input, else a folder), or beside each input as
    `<stem>_x<scale><ext>`. Existing outputs are skipped unless `overwrite`; an unreadable or
    unwritable image is reported and skipped while the rest completes. User errors that concern
    the whole batch (unknown model, bad scale, an output over an input) raise SuperresError.
    `self_ensemble`: average each image over its 8 flips/rotations (8 times the work).
    `max_pixels`: the decompression-bomb limit per input (None: `superres.images.DEFAULT_MAX_PIXELS`).
    Resumable: a journal beside the outputs (`superres.batch`) lets the same call after a kill
    skip what was finished. `shard`: "i/N" or a `superres.batch.Shard`, this process's part.
    `batch_size`: most small images of one shape per network call. `cluster`: run on Dask
    (`superres.cluster`): "local" for a local cluster of `workers` processes, or a scheduler
    address. `background`: the 8-bit RGB colour an image with alpha is flattened onto when its
    output format has no alpha (JPEG, BMP). `output_format`: the outputs' extension (e.g. "webp")
    instead of each input's own; `quality` (1..100): JPEG and WebP quality.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    resolved_device = resolve_device(device)
    network = _resolve_batch_model(model, scale, resolved_device)
    settings = BatchSettings(
        model=model, scale=int(network.scale), tile=tile, device=str(resolved_device), backend=backend,
        half=half, self_ensemble=self_ensemble, max_pixels=max_pixels, batch_size=batch_size,
        background=tuple(background), output_format=output_format, quality=quality, overwrite=overwrite,
    )
    plan = plan_batch(inputs, output, network, settings, overwrite=overwrite, shard=shard)
    if cluster is None:
        run_locally(plan, ImageBatchWorker(settings, network))
    else:
        from superres.cluster import run_on_dask

        run_on_dask(plan, settings, cluster, workers=workers)
    plan.journal.finish(failed=bool(plan.report.failed))
    return plan.report


__all__ = [
    "Backend",  # re-exported: what `upscale_image(backend=...)` accepts ready-made
    "BatchReport",
    "BatchSettings",
    "ImageBatchWorker",
    "expand_inputs",
    "fill_transparent",
    "output_name",
    "plan_outputs",
    "upscale_files",
    "upscale_image",
    "upscale_images",
]

