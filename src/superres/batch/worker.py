"""What runs each image of a batch: its settings, the worker that reads, upscales and writes, and the report.

`BatchSettings` are what decides the pixels (model, scale, self-ensemble, precision, tile,
output format) and travel to Dask workers; an `ImageBatchWorker` loads the model once and turns
one input file (or a run of same-size images, in one network call) into its output, written
atomically; a `BatchPlan` is a planned batch's jobs, journal and `BatchReport`. The local
runner (`superres.batch.files`) and the Dask one (`superres.batch.cluster`) both drive these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from superres.errors import ConfigError, ModelError
from superres.inference.backends import make_backend, resolve_device
from superres.inference.pipeline import resolve_tile, upscale_image, upscale_images

logger = logging.getLogger(__name__)

#: Seconds of work on one image before its tile progress bar appears.
PROGRESS_DELAY_S = 1.0


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


def resolve_batch_model(
    model: str | nn.Module, scale: int | None, device: torch.device
) -> nn.Module:
    if isinstance(model, nn.Module):
        if scale is not None and int(model.scale) != int(scale):
            raise ModelError(f"model '{model.info.name}' is for x{model.scale}, not x{scale}")
        return model
    from superres.zoo.names import resolve_model

    return resolve_model(model, scale, device=str(device))


#: Most images one network call takes at once (small images of one shape and type, see below).
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class OutputSize:
    """An output size other than the model's scale: a factor (`--scale 1.5`), a width, a height
    or both (`--width 3840`; one of them keeps the aspect ratio). The model upscales at its own
    integer scale, then the result is downscaled to this size with MATLAB's antialiased bicubic,
    as chaiNNer and Upscayl do; a size beyond the model's scale is refused, never interpolated."""

    factor: float | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if (self.factor is None) == (self.width is None and self.height is None):
            raise ConfigError("an output size is a factor, or a width and/or a height, not both")
        if self.factor is not None and self.factor <= 1:
            raise ConfigError(f"the output factor must be above 1, got {self.factor:g}")
        for value in (self.width, self.height):
            if value is not None and value < 1:
                raise ConfigError(f"an output width or height must be positive, got {value}")

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the output of an input this size."""
        if self.factor is not None:
            return max(1, round(height * self.factor)), max(1, round(width * self.factor))
        if self.width is not None and self.height is not None:
            return self.height, self.width
        if self.width is not None:
            return max(1, round(height * self.width / width)), self.width
        return self.height, max(1, round(width * self.height / height))

    def needed_factor(self, height: int, width: int) -> float:
        out_height, out_width = self.size_for(height, width)
        return max(out_height / height, out_width / width)

    def label(self) -> str:
        """What output names carry instead of `x<scale>`: `x1.5`, `w3840`, `h2160`, `3840x2160`."""
        if self.factor is not None:
            return f"x{self.factor:g}"
        if self.width is not None and self.height is not None:
            return f"{self.width}x{self.height}"
        return f"w{self.width}" if self.width is not None else f"h{self.height}"


#: The scales the trained models ship at: a target size runs the smallest that reaches it.
TRAINED_SCALES = (2, 3, 4)


def choose_output_size(
    scale: float | None, width: int | None, height: int | None, shapes: Sequence[tuple[int, int]]
) -> tuple[OutputSize | None, int | None]:
    """(`OutputSize` or None, the whole scale to run the model at) from a scale that may be a
    fraction, a width and a height; `shapes`: (height, width) of the inputs.

    A fraction runs the model at the next whole scale (at least 2); a width or height without a
    whole scale runs it at the smallest trained scale that reaches the size for every input."""
    import math

    if width is None and height is None:
        if scale is not None and not float(scale).is_integer():
            return OutputSize(factor=float(scale)), max(2, math.ceil(scale))
        return None, None if scale is None else int(scale)
    if scale is not None and not float(scale).is_integer():
        raise ConfigError("give a fractional scale or a width/height, not both")
    size = OutputSize(width=width, height=height)
    if scale is not None:
        return size, int(scale)
    needed = max((size.needed_factor(*shape) for shape in shapes), default=2.0)
    return size, next((s for s in TRAINED_SCALES if s >= needed - 1e-9), TRAINED_SCALES[-1])


def fit_to_size(sr: np.ndarray, size: OutputSize, input_shape: tuple[int, ...], scale: int) -> np.ndarray:
    """`sr` (an input of `input_shape` upscaled `scale` times) brought to `size`."""
    from superres.ops.resize import imresize

    height, width = input_shape[:2]
    target = size.size_for(height, width)
    if target[0] > sr.shape[0] or target[1] > sr.shape[1]:
        needed = size.needed_factor(height, width)
        raise ConfigError(
            f"{width}x{height} to {target[1]}x{target[0]} needs x{needed:.2f}, more than the model's "
            f"x{scale}: choose a larger --scale"
        )
    if target == sr.shape[:2]:
        return sr
    return imresize(sr, size=target)


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
    precision: str = "fp32"  # superres.inference.precision: fp32, bf16, auto (the card decides)
    max_pixels: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    background: tuple[int, int, int] = (255, 255, 255)  # under alpha, for formats without it
    output_format: str | None = None  # the outputs' extension ("webp"); None: each input's own
    quality: int = 95  # JPEG and WebP
    overwrite: bool = False  # without it an output is never written over, not even one that
    # another run of the same batch wrote while this one worked (no-clobber rename)
    output_size: OutputSize | None = None  # None: the model's scale

    def journal_key(self, network: nn.Module) -> dict:
        """What decides the output pixels: a journal written with another key is not resumed."""
        from superres.inference.precision import resolve_precision

        name = self.model if isinstance(self.model, str) else network.info.name
        # The precision computed in, as resolved ("auto" is a decision, not an output); only when
        # not fp32, so that the journals of earlier (fp32) runs still resume.
        precision = resolve_precision(self.precision, network, resolve_device(self.device), self.backend)
        return {
            "model": name,
            "model_kwargs": getattr(network, "model_kwargs", {}),
            "scale": self.scale,
            "self_ensemble": self.self_ensemble,
            "half": self.half,
            **({"output_size": self.output_size.label()} if self.output_size else {}),
            **({"precision": precision} if precision != "fp32" else {}),
        }


class ImageBatchWorker:
    """Reads, upscales and writes the images of a batch with one network and one runner.

    The local runner calls its parts from its reader, compute and writer threads; a cluster
    worker keeps one per process (`superres.batch.cluster`), so the model is loaded once per worker.
    """

    def __init__(self, settings: BatchSettings, network: nn.Module | None = None) -> None:
        from superres.images import DEFAULT_MAX_PIXELS

        self.settings = settings
        device = resolve_device(settings.device)
        if network is None:
            network = resolve_batch_model(settings.model, settings.scale, device)
        self.network = network
        self.runner = make_backend(
            self.network, settings.backend, device, half=settings.half, self_ensemble=settings.self_ensemble,
            precision=settings.precision,
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
        tile = resolve_tile(
            settings.tile, self.network, pixels.shape[2], self.runner.device, settings.half,
            self.runner.precision,
        )
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

        if self.settings.output_size is not None:
            sr = fit_to_size(sr, self.settings.output_size, image.pixels.shape, int(self.network.scale))
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
    journal: object  # superres.batch.journal.Journal

    def done(self, input_path: Path, output_path: Path, *, journaled: bool = False) -> None:
        """`output_path` was written; `journaled`: its journal line is written already."""
        logger.debug("wrote %s", output_path)
        self.report.written.append(output_path)
        if not journaled:
            self.journal.record(input_path, output_path)

    def failed(self, input_path: Path, reason: str) -> None:
        logger.warning("failed: %s", reason)
        self.report.failed.append((input_path, reason))
