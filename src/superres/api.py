"""The public Python facade: superres in three lines, re-exported lazily by `superres/__init__.py`.

    import superres
    sr = superres.upscale("photo.jpg")                 # writes photo_x2.jpg, returns its path
    array = superres.upscale(pixels, model="fast", scale=3)

One name grammar for models (`superres.zoo.names`; `parse_model` here keeps the listing cached); a
`model` argument is:

- `"default"`: the shipped model with the best Set5 PSNR at the scale, or, in `upscale`, for a
  compressed or noisy input the real-world model `real` where it ships (`superres.inference.input_check`,
  as `superres upscale` does); `"fast"`: the cheapest shipped model that still beats bicubic by
  1 dB;
- `"NAME@denoise=S"`: a real-world model at denoising strength S in [0, 1] (`denoise=` of `upscale`);
- a shipped pretrained name (`"red20"`, `"srcnn"`; `list_pretrained()`);
- a registered architecture that needs no weights (`"bicubic"`; `list_models()`);
- a path to a `.safetensors` checkpoint written by `superres train`.

The listing of shipped weights is read once per process and cached (`list_pretrained`), and so
are the networks `upscale` runs: calling it in a loop loads a model once. `load_model` always
returns a fresh network the caller may change (fine-tune, move) without touching that cache.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from superres.errors import ConfigError, ImageWriteError, ModelError
from superres.zoo import ALIASES, DEFAULT_SCALE

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

    from superres.batch.worker import BatchReport
    from superres.evaluation.protocol import EvalResult, Protocol
    from superres.images import LoadedImage
    from superres.inference.backends import Backend
    from superres.training.config import TrainConfig
    from superres.training.loop import TrainSummary
    from superres.zoo.names import ModelChoice
    from superres.zoo.pretrained import PretrainedEntry

#: Networks (with their runtimes) kept ready by `upscale`: enough for a default, a fast model and
#: one more without holding every shipped model in memory.
_RUNTIME_CACHE_SIZE = 4

# --------------------------------------------------------------------------- the name grammar


@functools.lru_cache(maxsize=1)
def _pretrained_listing() -> tuple[PretrainedEntry, ...]:
    from superres.zoo import pretrained

    return tuple(pretrained.list_pretrained())


def list_pretrained() -> list[PretrainedEntry]:
    """The shipped weights (name, scale, model card), read once per process and cached."""
    return list(_pretrained_listing())


def list_models() -> list[str]:
    """The registered architectures, simplest first (`superres.models.list_models`)."""
    from superres.models import list_models as registered

    return registered()


@functools.lru_cache(maxsize=64)
def _parse_name(spec: str, scale: int | None) -> ModelChoice:
    from superres.zoo.names import parse_model as parse

    return parse(spec, scale, list(_pretrained_listing()))


def parse_model(spec: str, scale: int | None = None) -> ModelChoice:
    """Resolve a model name of the grammar (`superres.zoo.names`) at `scale` without loading anything.

    Raises `ModelError` for an unknown name or a shipped model that lacks `scale`.
    """
    if not isinstance(spec, str) or not spec:
        raise ModelError(f"a model is named by a non-empty string, got {spec!r}")
    if scale is not None:
        scale = _check_scale(scale)
    return _parse_name(spec, scale)


def model_names(scale: int | None = None) -> list[str]:
    """Every name the grammar accepts without a path; the web page offers exactly these."""
    from superres.zoo.names import model_names as names

    return names(scale, list(_pretrained_listing()))


def _check_scale(scale: Any) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ConfigError(f"scale must be a positive integer such as 2, 3 or 4, got {scale!r}")
    return int(scale)


# --------------------------------------------------------------------------- loading


def load_model(spec: str, scale: int | None = None, device: str = "auto") -> nn.Module:
    """A fresh network, in eval mode on `device`, for a model name of the grammar above.

    `scale=None`: the checkpoint's own scale for a path, else 2. The network follows the
    `superres.models` contract (`.scale`, `.info`, `.model_kwargs`).
    """
    from superres.inference.backends import resolve_device
    from superres.zoo.names import load_choice

    return load_choice(parse_model(spec, scale), device=str(resolve_device(device)))


def _checkpoint_stamp(choice: ModelChoice) -> tuple[int, int] | None:
    """A checkpoint file's (mtime, size): a rewritten file is a new cache entry, not a stale one."""
    if choice.kind != "checkpoint":
        return None
    try:
        status = Path(choice.name).stat()
    except OSError:
        return None  # loading reports the missing file
    return status.st_mtime_ns, status.st_size


@functools.lru_cache(maxsize=_RUNTIME_CACHE_SIZE)
def _cached_runtime(
    choice: ModelChoice, stamp: object, device: str, runtime: str, self_ensemble: bool,
    precision: str = "fp32",
) -> tuple[nn.Module, Backend]:
    from superres.inference.backends import make_backend
    from superres.zoo.names import load_choice

    del stamp  # part of the cache key only
    network = load_choice(choice, device=device)
    return network, make_backend(network, runtime, device, self_ensemble=self_ensemble, precision=precision)


# One model runs at a time: a backend's buffers (the fast CPU path keeps them) are not shared.
_RUN_LOCK = threading.Lock()


def runtime_for(
    model: str, scale: int | None, *, device: str = "auto", backend: str = "torch",
    self_ensemble: bool = False, precision: str = "auto",
) -> tuple[nn.Module, Backend]:
    """The cached (network, `Backend`) for a model name: loaded on first use, then reused.

    `superres serve` and `upscale` share it. The network is the cache's own: do not change it.
    `precision`: "auto" (as `upscale`), "fp32", "bf16" or "int8" (`superres.inference.precision`);
    the backend's `.precision` says what "auto" chose.
    """
    from superres.inference.backends import resolve_device
    from superres.inference.precision import check_precision

    check_precision(precision)
    choice = parse_model(model, scale)
    # ONNX Runtime runs on the CPU here: "auto" must not pick a GPU it cannot use.
    target = "cpu" if backend == "onnxruntime" and device == "auto" else device
    resolved = str(resolve_device(target))
    stamp = _checkpoint_stamp(choice)
    return _cached_runtime(choice, stamp, resolved, backend, bool(self_ensemble), precision)


# --------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> LoadedImage:
    """Read an image file: `.pixels` (HWC uint8/uint16, gray/RGB with or without alpha, EXIF
    orientation applied) and `.icc_profile`. `max_pixels` defaults to the decompression-bomb
    guard of `superres.images`."""
    from superres import images

    limit = images.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    return images.read_image(path, max_pixels=limit)


def write_image(
    path: str | os.PathLike[str], pixels: np.ndarray, *, icc_profile: bytes | None = None
) -> Path:
    """Write HW/HWC uint8/uint16 pixels, format by extension (16 bits kept in PNG and TIFF,
    atomically); returns the path."""
    from superres import images

    images.write_image(path, pixels, icc_profile=icc_profile)
    return Path(path)


def _pixels_of_pil(image: Image.Image) -> tuple[np.ndarray, bytes | None]:
    # The reader's own mode conversion, so a PIL image becomes exactly what reading its file would give.
    from superres.images.pillow import pixels_from_pillow_image

    pixels, keep_profile = pixels_from_pillow_image(image, Path("<PIL image>"))
    profile = image.info.get("icc_profile") or None
    return pixels, (profile if keep_profile else None)


def _pil_of_pixels(pixels: np.ndarray, icc_profile: bytes | None) -> Image.Image:
    from superres.images.pillow import pillow_image_from_pixels

    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.dtype == np.uint16 and pixels.shape[2] != 1:
        # Pillow has no 16-bit colour or gray+alpha mode; only a file (PNG, TIFF) keeps these.
        raise ImageWriteError("16-bit colour cannot be held by a PIL image; pass a numpy array")
    image = pillow_image_from_pixels(pixels)
    if icc_profile:
        image.info["icc_profile"] = icc_profile
    return image


# --------------------------------------------------------------------------- upscaling


#: `progress(done, total)`: tiles finished out of the image's tiles; raising in it stops the run.
ProgressCallback = Callable[[int, int], None]


def upscale_pixels(
    pixels: np.ndarray,
    model: str = "default",
    *,
    scale: int | None = DEFAULT_SCALE,
    tile: str | int | None = "auto",
    device: str = "auto",
    backend: str = "torch",
    self_ensemble: bool = False,
    progress: ProgressCallback | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """`upscale` for HW/HWC uint8/uint16 pixels, with the cached network, reporting each tile.

    `progress(done, total)` is called before and after every tile; an exception raised in it
    (a cancellation) propagates and ends the run between two tiles.
    """
    from superres.inference.pipeline import resolve_tile, upscale_image

    if not isinstance(pixels, np.ndarray) or pixels.ndim not in (2, 3) or 0 in pixels.shape:
        shape = getattr(pixels, "shape", None)
        raise ConfigError(f"expected HW or HWC pixels with at least one pixel, got shape {shape}")
    network, runner = runtime_for(
        model, scale, device=device, backend=backend, self_ensemble=self_ensemble, precision=precision
    )
    if scale is not None and int(network.scale) != int(scale):
        raise ModelError(f"model '{model}' is for x{network.scale}, not x{scale}")
    if progress is not None:
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        # The tile size upscale_image would pick, resolved here so that the tile count is known.
        tile = resolve_tile(tile, network, channels, runner.device, False, runner.precision)
        runner = _reporting(runner, progress, _tile_count(pixels.shape[:2], tile))
    with _RUN_LOCK:
        return upscale_image(pixels, network, tile=tile, backend=runner)


def _tile_count(size: tuple[int, int], tile: int | None) -> int:
    from superres.inference.tiling import tile_spans

    height, width = size
    if tile is None or (tile >= height and tile >= width):
        return 1
    return len(tile_spans(height, width, tile))


def _reporting(runner: Backend, progress: ProgressCallback, total: int) -> Backend:
    from superres.inference.backends import Backend

    done = 0

    def forward(lr: Any) -> Any:
        nonlocal done
        progress(done, total)
        sr = runner.forward(lr)
        done += 1
        progress(done, total)
        return sr

    return Backend(forward=forward, device=runner.device, name=runner.name, precision=runner.precision)


@overload
def upscale(image: np.ndarray, model: str = ..., **options: Any) -> np.ndarray: ...
@overload
def upscale(image: Image.Image, model: str = ..., **options: Any) -> Image.Image: ...
@overload
def upscale(image: str | os.PathLike[str], model: str = ..., **options: Any) -> Path: ...


def upscale(
    image: Any,
    model: str = "default",
    *,
    scale: float | None = None,
    width: int | None = None,
    height: int | None = None,
    tile: str | int | None = "auto",
    device: str = "auto",
    backend: str = "torch",
    self_ensemble: bool = False,
    denoise: float | None = None,
    output: str | os.PathLike[str] | None = None,
    precision: str = "auto",
) -> Any:
    """Upscale one image by `scale` with `model`; the result is the same kind as the input.

    - numpy array (HW or HWC, uint8 or uint16; gray, gray+alpha, RGB, RGBA) -> numpy array of the
      same dtype and layout;
    - PIL image -> PIL image (its ICC profile carried over);
    - a file path -> the file is read, the result written to `output` or beside the input as
      `<stem>_x<scale><ext>` (replacing an earlier result, never the input) keeping 16 bits,
      alpha, gray and the ICC profile as `superres upscale` does, and the output `Path` returned.

    `tile`: "auto", LR pixels per tile, or None for one pass; the result is the same.
    `scale` may be a fraction (1.5), or `width` and/or `height` name the output size: the model
    runs at the next whole scale (for a size, the smallest that reaches it) and its result is
    downscaled with MATLAB's antialiased bicubic, as `superres upscale --scale 1.5 / --width`.
    `scale=None`: the checkpoint's scale for a path, the one scale a shipped name ships at
    (`span-gan`: x4), else 2.
    `model="default"` looks at the input first: a compressed (a JPEG file of quality <= 90, or
    pixels that show a JPEG's grid) or noisy one goes to the real-world model `real` where it ships
    at the scale.
    `denoise`: with a real-world model (`model="real"`, or the default), its denoising strength
    from 0 (keep noise and artefacts) to 1 (the trained model).
    `precision`: what the network computes in on the CPU: "auto" (bf16 where the model's card
    measured it to change Set5 and Set14 PSNR by at most 0.02 dB and to run faster, and the CPU has
    bf16 instructions, else fp32), "fp32", "bf16", or "int8" (refused: no shipped int8 form);
    `superres.inference.precision`.
    """
    from PIL import Image as PILImage

    size = None
    if width is not None or height is not None or (scale is not None and not float(scale).is_integer()):
        size, scale = _output_size(image, scale, width, height)
    if denoise is not None:
        model = f"{'real' if model == 'default' else model}@denoise={denoise:g}"
    options = dict(
        model=model, scale=scale, tile=tile, device=device, backend=backend,
        self_ensemble=self_ensemble, precision=precision,
    )
    if isinstance(image, np.ndarray):
        return _fitted(upscale_pixels(image, **_for_input(options, image)), size, image.shape)
    if isinstance(image, PILImage.Image):
        pixels, icc_profile = _pixels_of_pil(image)
        sr = _fitted(upscale_pixels(pixels, **_for_input(options, pixels)), size, pixels.shape)
        return _pil_of_pixels(sr, icc_profile)
    if isinstance(image, (str, os.PathLike)):
        return _upscale_file(Path(image), output, options, size)
    raise TypeError(
        f"upscale takes a numpy array, a PIL image or a path, not {type(image).__name__}"
    )


def _output_size(image: Any, scale: float | None, width: int | None, height: int | None) -> tuple[Any, int]:
    """(`OutputSize`, the whole scale to run the model at) for a fractional scale or a width/height
    (`superres.batch.worker.choose_output_size`), from the input's size."""
    from PIL import Image as PILImage

    from superres.batch.files import input_shapes
    from superres.batch.worker import choose_output_size

    if isinstance(image, (str, os.PathLike)):
        shapes = input_shapes([Path(image)])
    elif isinstance(image, PILImage.Image):
        shapes = [(image.height, image.width)]
    else:
        shapes = [np.shape(image)[:2]]
    return choose_output_size(scale, width, height, shapes)


def _fitted(sr: np.ndarray, size: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    """`sr` downscaled to `size` (an `OutputSize`), or as it is for None."""
    if size is None:
        return sr
    from superres.batch.worker import fit_to_size

    return fit_to_size(sr, size, input_shape, sr.shape[0] // input_shape[0])


def model_for_image(model: str, pixels: np.ndarray, scale: int | None, path: Path | None = None) -> str:
    """`model`, with "default" resolved for this image: the real-world model for a compressed
    (`path` a JPEG of quality <= 90, or pixels that show a JPEG's grid) or noisy one where it ships at
    `scale` (`superres.inference.input_check`), else the clean default."""
    from superres.inference.input_check import inspect_input, model_for_input

    if model != "default":
        return model
    return model_for_input(inspect_input(path, pixels), scale or DEFAULT_SCALE)


def _for_input(options: dict, pixels: np.ndarray, path: Path | None = None) -> dict:
    return {**options, "model": model_for_image(options["model"], pixels, options["scale"], path)}


def _upscale_file(path: Path, output: str | os.PathLike[str] | None, options: dict, size: Any = None) -> Path:
    from superres.batch.files import output_name

    loaded = read_image(path)
    sr = upscale_pixels(loaded.pixels, **_for_input(options, loaded.pixels, path))
    label = size.label() if size is not None else sr.shape[0] // loaded.pixels.shape[0]
    sr = _fitted(sr, size, loaded.pixels.shape)
    target = Path(output) if output is not None else path.with_name(output_name(path, label))
    if target.resolve() == path.resolve():
        raise ConfigError(f"refusing to overwrite input {path} with its upscaled result")
    return write_image(target, sr, icc_profile=loaded.icc_profile)


def upscale_files(
    inputs: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    model: str = "default",
    scale: float | None = DEFAULT_SCALE,
    width: int | None = None,
    height: int | None = None,
    overwrite: bool = False,
    tile: str | int | None = "auto",
    device: str = "auto",
    backend: str = "torch",
    self_ensemble: bool = False,
    output_format: str | None = None,
    quality: int = 95,
    background: tuple[int, int, int] = (255, 255, 255),
    precision: str = "auto",
) -> BatchReport:
    """`superres upscale` as a function: files, folders and globs, outputs into `output` (a
    folder, or a file for one input) or beside each input; existing outputs skipped unless
    `overwrite`; a bad file is reported in the returned `BatchReport` (`.written`, `.skipped`,
    `.failed`) while the rest completes. `output_format` ("webp", "png", ...) and `quality` as
    `--format` / `--quality`; `background`: what alpha is flattened onto for JPEG and BMP;
    `precision`, and a fractional `scale` or a `width`/`height`, as in `upscale`."""
    from superres.batch.files import input_shapes
    from superres.batch.files import upscale_files as upscale_batch
    from superres.batch.worker import choose_output_size

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = list(inputs)
    shapes = input_shapes(inputs) if width is not None or height is not None else []
    size, scale = choose_output_size(scale, width, height, shapes)
    return upscale_batch(
        inputs, output, scale=scale, model=load_model(model, scale, device), overwrite=overwrite, tile=tile,
        device=device, backend=backend, self_ensemble=self_ensemble, output_format=output_format,
        quality=quality, background=background, precision=precision, output_size=size,
    )


# --------------------------------------------------------------------------- evaluate, train


def evaluate(
    model: str | nn.Module,
    hr_folder: str | os.PathLike[str],
    scale: int,
    protocol: Protocol | None = None,
    *,
    device: str = "auto",
    self_ensemble: bool = False,
    lpips: bool = False,
    niqe: bool = False,
    precision: str = "fp32",
) -> EvalResult:
    """Mean and per-image PSNR/SSIM of `model` (a name of the grammar above, or a network) on
    the HR images in `hr_folder` at `scale`, by the papers' protocol (`superres.evaluation.protocol.Protocol`;
    `result.psnr`, `result.ssim`, `result.per_image`). `lpips`: also LPIPS-approx on the same
    planes (`result.lpips`; `superres.evaluation.lpips` says what it needs and how it differs from LPIPS).
    `niqe`: also NIQE of each SR plane alone (`result.niqe`; no reference, `superres.evaluation.niqe`).
    `precision`: what the network computes in (fp32, the cards' scores; bf16; auto), as
    `superres evaluate --precision` measures it."""
    from superres.evaluation.protocol import Protocol, evaluate_model
    from superres.inference.backends import make_backend, resolve_device

    scale = _check_scale(scale)
    target = resolve_device(device)
    if isinstance(model, str):
        choice = parse_model(model, scale)
        network, name = load_model(model, scale, str(target)), choice.label
    else:
        network, name = model, model.info.name
    runner = make_backend(network, "torch", target, self_ensemble=self_ensemble, precision=precision)
    perceptual = None
    if lpips:
        from superres.evaluation.lpips import LpipsApprox

        perceptual = LpipsApprox().planes
    no_reference = None
    if niqe:
        from superres.evaluation.niqe import loaded_niqe

        no_reference = loaded_niqe()
    return evaluate_model(
        network, Path(hr_folder), scale, protocol=protocol or Protocol(), device=target,
        model_name=name + ("+x8" if self_ensemble else ""), backend=runner, perceptual=perceptual,
        no_reference=no_reference,
    )


def train(
    config: TrainConfig | Mapping[str, Any] | str | os.PathLike[str],
    run_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
) -> TrainSummary:
    """Train a model: `config` is a `TrainConfig`, a dict of its fields, a preset name
    (`superres train --list-presets`) or a JSON config file. The run folder (`run_dir`, by
    default `runs/<model>_x<scale>_<time>`) receives the checkpoints, history and plots."""
    import time

    from superres.training.config import TrainConfig, build_config, config_from_dict, list_presets
    from superres.training.loop import train as run_training

    if isinstance(config, Mapping):
        config = config_from_dict(dict(config))
    elif isinstance(config, str) and config in list_presets():
        config = build_config(preset=config)
    elif isinstance(config, (str, os.PathLike)):
        config = build_config(config_file=config)
    elif not isinstance(config, TrainConfig):
        raise ConfigError(f"train takes a TrainConfig, a dict, a preset or a file, not {config!r}")
    if run_dir is None:
        run_dir = Path("runs") / f"{config.model}_x{config.scale}_{time.strftime('%Y%m%d-%H%M%S')}"
    return run_training(config, Path(run_dir), resume=resume)


__all__ = [
    "ALIASES",
    "evaluate",
    "list_models",
    "list_pretrained",
    "load_model",
    "model_names",
    "parse_model",
    "read_image",
    "runtime_for",
    "train",
    "upscale",
    "upscale_pixels",
    "upscale_files",
    "write_image",
]
