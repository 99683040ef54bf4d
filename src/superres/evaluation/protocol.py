"""Scoring a model on benchmark folders by the protocol of the SR papers.

The default `Protocol` reproduces the SRCNN / VDSR / RED-Net evaluation code and with it the
published bicubic rows to the second decimal:

1. HR is cropped to a multiple of the scale (modcrop).
2. Y models (and parameter-free ones such as the bicubic baseline) work on the BT.601 Y channel,
   computed first and rounded to uint8 as MATLAB's `rgb2ycbcr` does for uint8 images; a
   single-channel gray image is its own Y. RGB models are degraded and run on RGB, and their
   output is converted to Y.
3. LR = MATLAB bicubic `imresize(hr / 255, 1 / scale)` in floating point, not re-quantised (as in
   the papers' scripts); `lr_dir` reads MATLAB-made LR files instead.
4. SR is rounded to uint8; PSNR and SSIM are computed on Y with `scale` pixels shaved.
5. Optionally a perceptual distance to HR (`superres.evaluation.lpips.LpipsApprox`) and a no-reference
   naturalness score of SR alone (`superres.evaluation.niqe.niqe`), both on the same shaved planes.

Every choice is a field of `Protocol`; `Protocol.describe()` is printed beside every number.
The network runs through `superres.inference.backends` (the fast CPU path by default, in float32
unless a `precision` is asked for: `superres.inference.precision`, which is how each card's
per-precision PSNR change is measured); which channels it eats comes from its `ModelInfo` card,
never from its name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from superres.errors import ImageReadError
from superres.images import DEFAULT_MAX_PIXELS, list_images, read_image, uint16_to_uint8, write_image
from superres.inference.backends import Backend, TensorFunction, make_backend
from superres.ops.color import rgb_to_y
from superres.ops.degradations import apply_preset
from superres.ops.metrics import phase_error_spread, psnr, shave_border, ssim
from superres.ops.resize import imresize, modcrop

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """How an SR result is scored. The defaults are the papers'."""

    y_only: bool = True  # score the BT.601 Y channel (False: all RGB channels)
    shave: int | None = None  # border pixels left out; None = the scale
    round_y: bool = True  # Y rounded to uint8, as MATLAB rgb2ycbcr on uint8 images
    gray_as_y: bool = True  # a single-channel image is its own Y (not R=G=B through BT.601)
    quantize_lr: bool = False  # round the synthetic LR to uint8 (the papers' scripts did not)
    degradation: str = "bicubic"  # MATLAB imresize kernel that makes the LR: bicubic | bilinear
    # A fixed test degradation of `superres.ops.degradations.PRESETS` (jpeg, noise-jpeg, real), made in
    # memory exactly as `superres degrade --preset NAME --seed lr_seed` writes it; None: `degradation`.
    lr_preset: str | None = None
    lr_seed: int = 0

    def shave_for(self, scale: int) -> int:
        return scale if self.shave is None else self.shave

    def describe(self, scale: int | None = None) -> str:
        shave = f"{self.shave} px" if self.shave is not None else "scale px"
        if scale is not None:
            shave = f"{self.shave_for(scale)} px"
        channel = "BT.601 Y channel" if self.y_only else "RGB channels"
        lr = f"LR by MATLAB {self.degradation} imresize(modcrop(HR), 1/scale)"
        if self.lr_preset is not None:
            lr = f"LR by `superres degrade --preset {self.lr_preset} --seed {self.lr_seed}`"
        return (
            f"PSNR/SSIM on the {channel} ({'rounded to uint8, ' if self.round_y else ''}"
            f"gray images as Y), border of {shave} shaved, SR rounded to uint8, {lr}"
            f"{', LR quantised to uint8' if self.quantize_lr else ''}; SSIM: Wang et al. 2004, "
            "11x11 Gaussian (sigma 1.5), valid region"
        )


#: A perceptual distance of two scoring planes (SR, HR), e.g. `LpipsApprox.planes`.
PlaneDistance = Callable[[np.ndarray, np.ndarray], float]
#: A no-reference score of one scoring plane (SR), e.g. `superres.evaluation.niqe.niqe`.
PlaneScore = Callable[[np.ndarray], float]


@dataclass
class ImageScore:
    name: str
    psnr: float
    ssim: float
    lpips: float | None = None  # with a perceptual distance only
    niqe: float | None = None  # with a no-reference score only
    grid: float | None = None  # with `grid`: the sub-pixel lattice, `superres.ops.metrics.phase_error_spread`


@dataclass
class EvalResult:
    """Mean PSNR/SSIM of one model on one folder at one scale, with the per-image scores."""

    dataset: str
    scale: int
    model: str
    per_image: list[ImageScore] = field(default_factory=list)
    precision: str = "fp32"  # what the network computed in (the backend's, "auto" resolved)

    @property
    def psnr(self) -> float:
        return float(np.mean([score.psnr for score in self.per_image]))

    @property
    def ssim(self) -> float:
        return float(np.mean([score.ssim for score in self.per_image]))

    @property
    def lpips(self) -> float | None:
        return self._mean_of("lpips")

    @property
    def niqe(self) -> float | None:
        return self._mean_of("niqe")

    @property
    def grid(self) -> float | None:
        return self._mean_of("grid")

    def _mean_of(self, score: str) -> float | None:
        """The mean of an optional per-image score; None unless every image has it."""
        values = [getattr(image, score) for image in self.per_image]
        return None if not values or None in values else float(np.mean(values))


def _round_uint8(values: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(values, 0, 255) + 0.5)


def as_uint8(pixels: np.ndarray) -> np.ndarray:
    """8-bit samples: a 16-bit image's nearest levels, an 8-bit one as it is."""
    return uint16_to_uint8(pixels) if pixels.dtype == np.uint16 else pixels


def evaluation_plane(image_uint8: np.ndarray, protocol: Protocol) -> np.ndarray:
    """The plane a score is computed on, float64 on the 0..255 scale (HW, or HWC for RGB)."""
    if image_uint8.ndim == 2:
        image_uint8 = image_uint8[..., None]
    if image_uint8.shape[2] in (2, 4):
        image_uint8 = image_uint8[..., :-1]  # alpha plays no part in the score
    if image_uint8.shape[2] == 1:
        plane = image_uint8[..., 0].astype(np.float64)
        if not protocol.gray_as_y:
            plane = rgb_to_y(np.repeat(image_uint8, 3, axis=2) / 255.0) * 255.0
            plane = _round_uint8(plane) if protocol.round_y else plane
        return plane if protocol.y_only else plane[..., None]
    if not protocol.y_only:
        return image_uint8.astype(np.float64)
    plane = rgb_to_y(image_uint8.astype(np.float64) / 255.0) * 255.0
    return _round_uint8(plane) if protocol.round_y else plane


def model_input(
    hr_uint8: np.ndarray,
    scale: int,
    channels: str,
    protocol: Protocol,
    lr_uint8: np.ndarray | None = None,
) -> np.ndarray:
    """The LR image a model sees, float64 HWC in [0, 1]: Y (1 channel) or RGB (3 channels)."""

    def to_model_channels(image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            image = image[..., None]
        image = image[..., :3] if image.shape[2] >= 3 else image[..., :1]
        if channels == "Y":
            y_protocol = Protocol(round_y=protocol.round_y, gray_as_y=protocol.gray_as_y)
            return evaluation_plane(image, y_protocol)[..., None] / 255.0
        if image.shape[2] == 1:
            image = np.repeat(image, 3, axis=2)
        return image.astype(np.float64) / 255.0

    if lr_uint8 is not None:
        return to_model_channels(lr_uint8)
    hr = to_model_channels(modcrop(hr_uint8, scale))
    lr = imresize(hr, 1.0 / scale, kernel=protocol.degradation)
    if protocol.quantize_lr:
        lr = _round_uint8(lr * 255.0) / 255.0
    return lr


@torch.no_grad()
def super_resolve(forward: TensorFunction, lr: np.ndarray) -> np.ndarray:
    """Run `forward` (a `Backend` or a model) on one float HWC image in [0, 1].

    Returns float64 HWC, not clipped. A `Backend` moves the input to its own device.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float()[None]
    sr = forward(tensor)
    return sr[0].permute(1, 2, 0).double().cpu().numpy()


def _sr_plane(sr: np.ndarray, hr_is_gray: bool, protocol: Protocol) -> np.ndarray:
    """The scoring plane of an SR result (uint8 HWC with 1 or 3 channels)."""
    if sr.shape[2] == 3 and hr_is_gray:
        # An RGB model on a gray image: its channels are averaged back to gray.
        sr = _round_uint8(sr.mean(axis=2, keepdims=True)).astype(np.uint8)
    if sr.shape[2] == 1:
        if not protocol.y_only and not hr_is_gray:
            raise ValueError("a Y model can only be scored on the Y channel (y_only=True)")
        # A Y model's output is already the Y plane (rounded), a gray result its own Y.
        return sr[..., 0].astype(np.float64) if protocol.y_only else sr.astype(np.float64)
    return evaluation_plane(sr, protocol)


def score_image(
    forward: TensorFunction,
    hr_uint8: np.ndarray,
    scale: int,
    *,
    channels: str,
    protocol: Protocol = Protocol(),
    lr_uint8: np.ndarray | None = None,
    perceptual: PlaneDistance | None = None,
    no_reference: PlaneScore | None = None,
    grid: bool = False,
    name: str = "",
) -> tuple[ImageScore, np.ndarray]:
    """The scores of one HR image and the SR image (uint8 HWC in the model's channels).

    `forward` is a `Backend` (or a model whose inputs are CPU tensors); `perceptual` and
    `no_reference` score the same shaved planes as PSNR.
    """
    hr_uint8 = modcrop(hr_uint8, scale)
    lr = model_input(hr_uint8, scale, channels, protocol, lr_uint8)
    sr = _round_uint8(super_resolve(forward, lr) * 255.0).astype(np.uint8)
    if sr.shape[:2] != hr_uint8.shape[:2]:
        raise ValueError(f"SR size {sr.shape[:2]} does not match the modcropped HR {hr_uint8.shape[:2]}")
    hr_is_gray = hr_uint8.ndim == 2 or hr_uint8.shape[2] in (1, 2)
    hr_plane = evaluation_plane(hr_uint8, protocol)
    sr_plane = _sr_plane(sr, hr_is_gray, protocol)
    shave = protocol.shave_for(scale)
    score = ImageScore(name, psnr(sr_plane, hr_plane, shave=shave), ssim(sr_plane, hr_plane, shave=shave))
    if perceptual is not None:
        score.lpips = perceptual(shave_border(sr_plane, shave), shave_border(hr_plane, shave))
    if no_reference is not None:
        score.niqe = no_reference(shave_border(sr_plane, shave))
    if grid:  # shaved by the scale, so that the phases stay aligned to HR pixel 0
        sr_aligned, hr_aligned = shave_border(sr_plane, scale), shave_border(hr_plane, scale)
        score.grid = phase_error_spread(sr_aligned, hr_aligned, scale=scale)
    return score, sr


def model_channels(model: torch.nn.Module) -> str:
    """"Y" or "RGB": what `model` is scored on, read from its card for its own kwargs.

    A parameter-free model (an interpolation such as bicubic) is channel-agnostic; the papers'
    baseline row is computed on Y, so that is what it gets.
    """
    info = model.info
    if not info.needs_weights:
        return "Y"
    return info.channels_for(getattr(model, "model_kwargs", None))


def dataset_name(folder: Path) -> str:
    """'Set5' for both `.../Set5` and `.../Set5/HR`."""
    folder = Path(folder)
    return folder.parent.name if folder.name.upper() == "HR" else folder.name


def _lr_file(lr_dir: Path, hr_path: Path) -> Path:
    """The LR file of an HR image: the same name, else the same stem as PNG (what `superres
    degrade` writes for any HR format)."""
    same_name = lr_dir / hr_path.name
    as_png = lr_dir / f"{hr_path.stem}.png"
    return as_png if not same_name.is_file() and as_png.is_file() else same_name


def _read_lr(
    lr_dir: Path, hr_path: Path, hr_shape: tuple[int, ...], scale: int, max_pixels: int
) -> np.ndarray:
    """The LR pixels of `hr_path` from `lr_dir`, refused unless `scale` times them is the modcropped HR
    (a folder made for another scale, or from uncropped HR, would otherwise fail inside the model)."""
    lr_path = _lr_file(lr_dir, hr_path)
    lr = read_image(lr_path, max_pixels=max_pixels).pixels
    expected = (hr_shape[0] // scale, hr_shape[1] // scale)
    if lr.shape[:2] != expected:
        raise ImageReadError(
            f"{lr_path}: the LR is {lr.shape[1]}x{lr.shape[0]}, but x{scale} of {hr_path.name} "
            f"({hr_shape[1]}x{hr_shape[0]}, cropped to a multiple of {scale}) "
            f"needs {expected[1]}x{expected[0]}"
        )
    return lr


def evaluate_model(
    model: torch.nn.Module,
    hr_dir: Path,
    scale: int,
    *,
    channels: str | None = None,
    protocol: Protocol = Protocol(),
    lr_dir: Path | None = None,
    max_pixels: int | None = None,
    save_dir: Path | None = None,
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    backend: Backend | None = None,
    perceptual: PlaneDistance | None = None,
    no_reference: PlaneScore | None = None,
    grid: bool = False,
    precision: str = "fp32",
) -> EvalResult:
    """Mean and per-image PSNR/SSIM of `model` (a superres model with its card) on the HR
    images of `hr_dir` at `scale`.

    `channels`: "Y" or "RGB" to override the card (`model_channels`). `backend`: a ready
    `superres.inference.backends.Backend` for `model` (e.g. a self-ensemble); by default the torch runtime
    on `device`, which runs a folded, eval-mode copy and leaves `model` as it is.
    `max_pixels`: the decompression-bomb limit per image (None: `superres.images.DEFAULT_MAX_PIXELS`).
    `perceptual`: also score each image by this distance (`ImageScore.lpips`, `EvalResult.lpips`);
    `no_reference`: by this score of SR alone (`ImageScore.niqe`, `EvalResult.niqe`).
    `grid`: also the sub-pixel lattice (`ImageScore.grid`, `EvalResult.grid`, gray levels).
    `precision`: what the default backend computes in ("fp32", "bf16", "auto"; a given `backend`
    keeps its own).
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if channels is None:
        channels = model_channels(model)
    name = model_name or model.info.name
    if backend is None:
        backend = make_backend(model, "torch", device, precision=precision)
    result = EvalResult(
        dataset=dataset_name(hr_dir), scale=scale, model=name, precision=getattr(backend, "precision", "fp32")
    )
    for path in list_images(hr_dir):
        hr = read_image(path, max_pixels=limit).pixels
        lr = None
        if lr_dir is not None:
            lr = _read_lr(Path(lr_dir), path, hr.shape, scale, limit)
        elif protocol.lr_preset is not None:
            lr = apply_preset(as_uint8(hr), scale, protocol.lr_preset, name=path.name, seed=protocol.lr_seed)
        score, sr = score_image(
            backend, hr, scale, channels=channels, protocol=protocol, lr_uint8=lr, perceptual=perceptual,
            no_reference=no_reference, grid=grid, name=path.stem,
        )
        result.per_image.append(score)
        logger.debug("%s x%d %s: %.4f dB / %.4f", result.dataset, scale, path.stem, score.psnr, score.ssim)
        if save_dir is not None:
            # A model file's name, not its path: a --model with folders must not make folders here.
            sr_path = Path(save_dir) / f"{path.stem}_x{scale}_{Path(name).name}.png"
            write_image(sr_path, sr.squeeze() if sr.shape[2] == 1 else sr)
    return result
