"""Real-world degradations: the high-order blur / resize / noise / JPEG chain that makes LR images.

The benchmark models learn one degradation, a clean MATLAB-bicubic downscale. Real inputs are
blurred, resized by unknown software, noisy and JPEG-compressed, twice over after a repost. This
module synthesises such inputs from HR images in the manner of Real-ESRGAN (Wang, Xie, Dong, Shan,
"Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure Synthetic Data", ICCVW 2021),
whose "second-order" chain generalises BSRGAN's shuffled one (Zhang et al., ICCV 2021):

    HR -> blur(k1) -> resize -> noise -> JPEG            (first order)
       -> blur(k2) -> resize -> noise                    (second order; blur with prob 0.8)
       -> [resize to HR/scale + sinc, JPEG] in random order

Every range and probability is a field of `RealDegradation` whose default is the value of
Real-ESRGAN's released training options (`train_realesrgan_x4plus.yml` and its dataset options;
the x2 model used the same): kernels of 7..21 px, isotropic / anisotropic Gaussian, generalized
Gaussian and plateau shapes with the published probabilities, 2-D sinc kernels for ringing and
overshoot; resizes by area, bilinear or bicubic interpolation; Gaussian or Poisson noise, in colour
or in gray; JPEG at a random quality. Each stage can be switched off (`blur`, `resize`, `noise`,
`jpeg`, `second_order`, `final_sinc`).

Differences from the release, on purpose: the JPEG stage goes through a real codec (Pillow's
libjpeg, 4:2:0 chroma, integer quality) rather than a differentiable approximation, so the
artefacts are exactly those of the files users bring; the HR patch is cropped first and each patch
degraded on its own (Real-ESRGAN degrades a 400 px crop and crops 256 px after; BSRGAN crops
first), which costs a few milliseconds a patch on a CPU and gives every patch its own kernel,
resize and noise; the HR target is not unsharp-masked.

Every random number comes from the numpy `Generator` passed in, so a seed gives the same pairs,
and the trainer's per-step generator (`default_rng([seed, rank, step])`) makes a resumed run draw
exactly what an uninterrupted one would.

`degrade_image` applies the whole chain to one image; `apply_preset` makes the fixed test sets of
`superres degrade` (`PRESETS`), each image seeded from its name, so the same command always writes
the same files.
"""

from __future__ import annotations

import dataclasses
import io
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from superres.errors import ConfigError
from superres.ops.resize import imresize, imresize_tensor, modcrop

KERNEL_SHAPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_MODES = ("area", "bilinear", "bicubic")
#: ITU-R BT.601 luma weights, as `cv2.cvtColor(..., COLOR_RGB2GRAY)`: what "gray" noise is made on.
GRAY_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class RealDegradation:
    """The ranges of the chain; defaults are Real-ESRGAN's released x4plus training options.

    Ranges are (low, high) of a uniform draw; noise sigmas are on the 0..255 scale. `resize_prob`
    is the probability of (up, down, keep); a scale is drawn from [1, high] up or [low, 1] down.
    The first resize is relative to the image, the second relative to the final LR size.
    """

    # stages (switch one off with False)
    blur: bool = True
    resize: bool = True
    noise: bool = True
    jpeg: bool = True
    second_order: bool = True
    final_sinc: bool = True
    # kernels of both orders
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    kernel_shapes: tuple[str, ...] = KERNEL_SHAPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    # first order
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # second order
    second_order_prob: float = 1.0  # Real-ESRGAN: always; some later recipes use 0.5
    second_blur_prob: float = 0.8
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    # the final stage
    final_sinc_prob: float = 0.8
    # The simpler degradation family of BSRGAN and of most web images, for a share of the pairs
    # (0 in Real-ESRGAN): MATLAB-bicubic downscale (what the benchmarks use), Gaussian noise with
    # `light_noise_prob` (sigma in `noise_range2`, gray with `gray_noise_prob2`), then JPEG in
    # `jpeg_range2` with `light_jpeg_prob`. Without it, every LR is blurred first, and a model
    # sharpens such clean downscales too much. BSRGAN compresses every light pair; a
    # `light_jpeg_prob` below 1 leaves some of them clean (or only noisy), so that a network
    # trained on this family alone still sees what a clean downscale looks like.
    light_prob: float = 0.0
    light_noise_prob: float = 0.5
    light_jpeg_prob: float = 1.0

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> RealDegradation:
        """The defaults with `options` (a config's `degradation_options`) replacing some fields;
        an unknown name or a bad value -> ConfigError naming it."""
        options = dict(options or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise ConfigError(
                f"degradation_options: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}"
            )
        values: dict[str, Any] = {}
        for name, value in options.items():
            values[name] = _coerce_option(name, value, fields[name].default)
        return cls(**values).checked()

    def checked(self) -> RealDegradation:
        """Self, after checking every range and probability (ConfigError naming the field)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("prob") or f.name.endswith("prob2"):
                probs = value if isinstance(value, tuple) else (value,)
                if any(not 0.0 <= p <= 1.0 for p in probs):
                    raise ConfigError(
                        f"degradation_options.{f.name}: probabilities lie in [0, 1], got {value}"
                    )
            elif (
                isinstance(value, tuple)
                and len(value) == 2
                and f.name not in ("kernel_sizes", "kernel_shapes")
            ):
                low, high = value
                if not 0.0 <= low <= high:
                    raise ConfigError(f"degradation_options.{f.name}: expected 0 <= low <= high, got {value}")
        for name in ("resize_prob", "resize_prob2"):
            if len(getattr(self, name)) != 3 or not math.isclose(sum(getattr(self, name)), 1.0, abs_tol=1e-6):
                raise ConfigError(
                    f"degradation_options.{name}: three probabilities (up, down, keep) summing to 1"
                )
        if len(self.kernel_prob) != len(self.kernel_shapes) or not math.isclose(
            sum(self.kernel_prob), 1.0, abs_tol=1e-6
        ):
            raise ConfigError(
                "degradation_options.kernel_prob: one probability per kernel shape, summing to 1"
            )
        if any(shape not in KERNEL_SHAPES for shape in self.kernel_shapes):
            raise ConfigError(f"degradation_options.kernel_shapes: choose from {', '.join(KERNEL_SHAPES)}")
        if not self.kernel_sizes or any(size < 3 or size % 2 == 0 or size > 41 for size in self.kernel_sizes):
            raise ConfigError("degradation_options.kernel_sizes: odd sizes from 3 to 41")
        if self.resize_range[0] <= 0 or self.resize_range2[0] <= 0:
            raise ConfigError("degradation_options: resize ranges must start above 0")
        for name in ("jpeg_range", "jpeg_range2"):
            low, high = getattr(self, name)
            if not 1 <= low <= high <= 100:
                raise ConfigError(f"degradation_options.{name}: qualities from 1 to 100, got {(low, high)}")
        return self

    def to_options(self) -> dict[str, Any]:
        """The fields that differ from the defaults (what a config stores)."""
        default = RealDegradation()
        return {
            f.name: _jsonable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _coerce_option(name: str, value: Any, default: Any) -> Any:
    """`value` in the type of `default` (bool, float, or a tuple of them); ConfigError if it cannot be."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"degradation_options.{name}: expected true or false, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or (
            name not in ("kernel_sizes", "kernel_shapes", "kernel_prob") and len(value) != len(default)
        ):
            raise ConfigError(
                f"degradation_options.{name}: expected a list like {list(default)}, got {value!r}"
            )
        element = default[0]
        return tuple(_coerce_option(name, item, element) for item in value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"degradation_options.{name}: expected a name, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"degradation_options.{name}: expected a number, got {value!r}")
    return type(default)(value) if isinstance(default, int) and float(value).is_integer() else float(value)


# --- kernels ---------------------------------------------------------------------------------


def _grid(size: int) -> np.ndarray:
    """(size, size, 2) pixel offsets from the centre, x then y."""
    axis = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx, yy], axis=-1)


def _inverse_covariance(sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    return np.linalg.inv(covariance)


def anisotropic_kernel(
    size: int, sigma_x: float, sigma_y: float, theta: float, shape: str = "gaussian", beta: float = 1.0
) -> np.ndarray:
    """A normalised (size, size) blur kernel: Gaussian, generalized Gaussian or plateau.

    With d = x^T S^-1 x (S the covariance of sigmas rotated by theta): Gaussian exp(-d/2),
    generalized Gaussian exp(-(d/2)^... as BasicSR: exp(-0.5 d^beta), plateau 1 / (d^beta + 1).
    """
    grid = _grid(size)
    distance = np.einsum("hwi,ij,hwj->hw", grid, _inverse_covariance(sigma_x, sigma_y, theta), grid)
    if shape == "gaussian":
        kernel = np.exp(-0.5 * distance)
    elif shape == "generalized":
        kernel = np.exp(-0.5 * np.power(distance, beta))
    elif shape == "plateau":
        kernel = 1.0 / (np.power(distance, beta) + 1.0)
    else:
        raise ValueError(f"unknown kernel shape {shape!r}")
    return kernel / kernel.sum()


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """A normalised (size, size) circular low-pass (2-D sinc) kernel with cut-off `cutoff` (rad):
    ringing and overshoot, as sharpening software and some resizers leave them."""
    grid = _grid(size)
    radius = np.hypot(grid[..., 0], grid[..., 1])
    safe = np.where(radius == 0, 1.0, radius)
    bessel = torch.special.bessel_j1(torch.from_numpy(cutoff * safe)).numpy()
    kernel = cutoff * bessel / (2 * np.pi * safe)
    kernel[radius == 0] = cutoff**2 / (4 * np.pi)  # the limit of the expression at r = 0
    return kernel / kernel.sum()


def _beta(rng: np.random.Generator, low: float, high: float) -> float:
    # BasicSR draws a shape exponent below 1 or above 1 with equal odds, so both tails are common.
    return float(
        rng.uniform(low, 1.0) if rng.random() < 0.5 and low < 1.0 else rng.uniform(max(low, 1.0), high)
    )


def random_blur_kernel(
    rng: np.random.Generator,
    options: RealDegradation,
    sigma: tuple[float, float],
    betag: tuple[float, float],
    betap: tuple[float, float],
    sinc_prob: float,
) -> np.ndarray:
    """One random kernel of one order: a sinc with `sinc_prob`, else a shape by `kernel_prob`."""
    size = int(rng.choice(options.kernel_sizes))
    if rng.random() < sinc_prob:
        # Small kernels cannot hold a low cut-off's wide ringing: Real-ESRGAN limits them to pi/3.
        cutoff = rng.uniform(np.pi / 3, np.pi) if size < 13 else rng.uniform(np.pi / 5, np.pi)
        return sinc_kernel(size, float(cutoff))
    shape = options.kernel_shapes[int(rng.choice(len(options.kernel_shapes), p=options.kernel_prob))]
    sigma_x = float(rng.uniform(*sigma))
    if shape.endswith("aniso"):
        sigma_y, theta = float(rng.uniform(*sigma)), float(rng.uniform(-np.pi, np.pi))
    else:
        sigma_y, theta = sigma_x, 0.0
    if shape.startswith("generalized"):
        return anisotropic_kernel(size, sigma_x, sigma_y, theta, "generalized", _beta(rng, *betag))
    if shape.startswith("plateau"):
        return anisotropic_kernel(size, sigma_x, sigma_y, theta, "plateau", _beta(rng, *betap))
    return anisotropic_kernel(size, sigma_x, sigma_y, theta)


# --- operations on one float image (1, C, H, W) in [0, 1] -----------------------------------


def filter2d(image: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """`image` (1, C, H, W) filtered by `kernel` per channel, reflected borders (replicated where
    the image is smaller than the kernel's half width)."""
    size = kernel.shape[0]
    pad = size // 2
    mode = "reflect" if min(image.shape[-2:]) > pad else "replicate"
    padded = F.pad(image, (pad, pad, pad, pad), mode=mode)
    channels = image.shape[1]
    weight = torch.from_numpy(kernel).to(image.dtype).expand(channels, 1, size, size)
    return F.conv2d(padded, weight, groups=channels)


def resize(image: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """`image` resized to (height, width) by `mode` (area, bilinear or bicubic; no anti-aliasing,
    as the resizers of most software)."""
    height, width = max(1, int(height)), max(1, int(width))
    if mode == "area":
        return F.interpolate(image, size=(height, width), mode="area")
    return F.interpolate(image, size=(height, width), mode=mode, align_corners=False)


def add_gaussian_noise(
    image: torch.Tensor, rng: np.random.Generator, sigma: float, gray: bool
) -> torch.Tensor:
    """Additive white Gaussian noise of `sigma` (0..255 scale), one field for all channels if gray."""
    _, channels, height, width = image.shape
    noise = rng.standard_normal((1, 1 if gray else channels, height, width)) * (sigma / 255.0)
    return (image + torch.from_numpy(noise).to(image.dtype)).clamp_(0.0, 1.0)


def add_poisson_noise(
    image: torch.Tensor, rng: np.random.Generator, scale: float, gray: bool
) -> torch.Tensor:
    """Shot noise, as Real-ESRGAN: the image quantised to 8 bits, counts of 2^ceil(log2(levels))
    per unit, Poisson-sampled; the difference scaled by `scale`. Gray: computed on the BT.601 gray
    image and added to every channel."""
    pixels = image[0].double().numpy()
    if gray:
        pixels = (
            np.tensordot(np.asarray(GRAY_WEIGHTS), pixels, axes=1)[None]
            if pixels.shape[0] == 3
            else pixels[:1]
        )
    quantised = np.clip(np.round(pixels * 255.0), 0, 255) / 255.0
    levels = 2.0 ** math.ceil(math.log2(max(2, len(np.unique(quantised)))))
    noise = rng.poisson(quantised * levels) / levels - quantised
    return (image + torch.from_numpy(noise * scale)[None].to(image.dtype)).clamp_(0.0, 1.0)


def jpeg_roundtrip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """`image` encoded as a baseline JPEG of `quality` (Pillow's libjpeg, 4:2:0) and decoded."""
    pixels = _to_uint8(image)
    mode = "L" if pixels.shape[2] == 1 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(
        buffer, "JPEG", quality=int(quality)
    )
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(mode), dtype=np.uint8)
    decoded = decoded.reshape(pixels.shape)
    return torch.from_numpy(decoded.transpose(2, 0, 1).astype(np.float32) / 255.0)[None].to(image.dtype)


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> (1, C, H, W) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div_(255.0)[None]


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) float in [0, 1] -> (H, W, C) uint8, rounded."""
    return np.ascontiguousarray(
        (image[0].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    )


# --- the chain --------------------------------------------------------------------------------


def _random_resize(
    image: torch.Tensor,
    rng: np.random.Generator,
    prob: Sequence[float],
    bounds: tuple[float, float],
    reference: tuple[int, int],
) -> torch.Tensor:
    """Resize to `reference` (H, W) times a random factor: up, down or kept by `prob`."""
    kind = int(rng.choice(3, p=prob))
    factor = rng.uniform(1.0, bounds[1]) if kind == 0 else rng.uniform(bounds[0], 1.0) if kind == 1 else 1.0
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    return resize(image, int(reference[0] * factor), int(reference[1] * factor), mode)


def _random_noise(
    image: torch.Tensor,
    rng: np.random.Generator,
    gaussian_prob: float,
    sigma: tuple[float, float],
    poisson_scale: tuple[float, float],
    gray_prob: float,
) -> torch.Tensor:
    if rng.random() < gaussian_prob:
        level, gray = float(rng.uniform(*sigma)), bool(rng.random() < gray_prob)
        return add_gaussian_noise(image, rng, level, gray)
    level, gray = float(rng.uniform(*poisson_scale)), bool(rng.random() < gray_prob)
    return add_poisson_noise(image, rng, level, gray)


def _random_jpeg(
    image: torch.Tensor, rng: np.random.Generator, qualities: tuple[float, float]
) -> torch.Tensor:
    return jpeg_roundtrip(image, int(round(rng.uniform(*qualities))))


def degrade_tensor(
    hr: torch.Tensor, scale: int, rng: np.random.Generator, options: RealDegradation = RealDegradation()
) -> torch.Tensor:
    """The whole chain on one HR image (1, C, H, W) float in [0, 1] -> LR (1, C, H//scale, W//scale),
    quantised to 8 bits as a saved file would be."""
    height, width = hr.shape[-2:]
    lr_size = (height // scale, width // scale)
    out = hr.float()
    # Drawn only when asked for: with light_prob 0 the random stream is Real-ESRGAN's chain alone.
    if options.light_prob > 0 and rng.random() < options.light_prob:
        return _light_chain(out, scale, rng, options)
    # first order
    if options.blur:
        out = filter2d(
            out,
            random_blur_kernel(
                rng, options, options.blur_sigma, options.betag_range, options.betap_range, options.sinc_prob
            ),
        )
    if options.resize:
        out = _random_resize(out, rng, options.resize_prob, options.resize_range, tuple(out.shape[-2:]))
    if options.noise:
        out = _random_noise(
            out,
            rng,
            options.gaussian_noise_prob,
            options.noise_range,
            options.poisson_scale_range,
            options.gray_noise_prob,
        )
    if options.jpeg:
        out = _random_jpeg(out, rng, options.jpeg_range)
    # second order
    if options.second_order and rng.random() < options.second_order_prob:
        if options.blur and rng.random() < options.second_blur_prob:
            out = filter2d(
                out,
                random_blur_kernel(
                    rng,
                    options,
                    options.blur_sigma2,
                    options.betag_range2,
                    options.betap_range2,
                    options.sinc_prob2,
                ),
            )
        if options.resize:
            out = _random_resize(out, rng, options.resize_prob2, options.resize_range2, lr_size)
        if options.noise:
            out = _random_noise(
                out,
                rng,
                options.gaussian_noise_prob2,
                options.noise_range2,
                options.poisson_scale_range2,
                options.gray_noise_prob2,
            )
    # the final stage: back to the LR size with a sinc (ringing), and JPEG, in either order
    sinc = None
    if options.final_sinc and rng.random() < options.final_sinc_prob:
        size = int(rng.choice(options.kernel_sizes))
        sinc = sinc_kernel(size, float(rng.uniform(np.pi / 3, np.pi)))
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    jpeg_first = bool(rng.random() < 0.5)
    if jpeg_first and options.jpeg:
        out = _random_jpeg(out, rng, options.jpeg_range2)
    out = resize(out, *lr_size, mode) if tuple(out.shape[-2:]) != lr_size else out
    if sinc is not None:
        out = filter2d(out, sinc)
    if not jpeg_first and options.jpeg:
        out = _random_jpeg(out, rng, options.jpeg_range2)
    return (out.clamp(0.0, 1.0) * 255.0).round() / 255.0


def _light_chain(
    hr: torch.Tensor, scale: int, rng: np.random.Generator, options: RealDegradation
) -> torch.Tensor:
    """MATLAB-bicubic downscale, maybe noise, then maybe JPEG (each stage obeying its switch)."""
    out = imresize_tensor(hr, 1.0 / scale).clamp(0.0, 1.0)
    if options.noise and rng.random() < options.light_noise_prob:
        sigma, gray = float(rng.uniform(*options.noise_range2)), bool(rng.random() < options.gray_noise_prob2)
        out = add_gaussian_noise(out, rng, sigma, gray)
    # Drawn only below 1: at 1, the random stream is the one runs before this field drew.
    compress = options.light_jpeg_prob >= 1.0 or rng.random() < options.light_jpeg_prob
    if options.jpeg and compress:
        out = _random_jpeg(out, rng, options.jpeg_range2)
    return (out.clamp(0.0, 1.0) * 255.0).round() / 255.0


def degrade_image(
    hr_uint8: np.ndarray, scale: int, rng: np.random.Generator, options: RealDegradation = RealDegradation()
) -> np.ndarray:
    """The chain on an HWC uint8 image -> HWC uint8 LR of (H//scale, W//scale)."""
    with torch.no_grad():
        return _to_uint8(degrade_tensor(_tensor(hr_uint8), scale, rng, options))


def degrade_batch(
    hr_batch: np.ndarray, scale: int, rng: np.random.Generator, options: RealDegradation = RealDegradation()
) -> np.ndarray:
    """(B, H, W, C) uint8 HR patches -> (B, H//scale, W//scale, C) uint8 LR, each patch its own draw."""
    return np.stack([degrade_image(patch, scale, rng, options) for patch in hr_batch])


# --- fixed test degradations (`superres degrade`) ----------------------------------------------


def _bicubic_lr(hr_uint8: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB imresize(HR, 1/scale) as the benchmark LR files: float, then rounded to uint8."""
    lr = imresize(hr_uint8.astype(np.float64) / 255.0, 1.0 / scale)
    return np.clip(np.floor(lr * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _preset_bicubic(hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    return _bicubic_lr(hr, scale)


def _preset_jpeg(hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    return _to_uint8(jpeg_roundtrip(_tensor(_bicubic_lr(hr, scale)), 75))


def _preset_noise_jpeg(hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    noisy = add_gaussian_noise(_tensor(_bicubic_lr(hr, scale)), rng, 8.0, gray=False)
    return _to_uint8(jpeg_roundtrip(noisy, 85))


def _preset_real(hr: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    return degrade_image(hr, scale, rng)


#: name -> (what it does, function of (HR uint8 HWC, scale, rng) -> LR uint8 HWC).
PRESETS = {
    "bicubic": ("MATLAB bicubic imresize(HR, 1/scale) rounded to uint8 (the benchmark LR)", _preset_bicubic),
    "jpeg": ("the bicubic LR saved as JPEG quality 75 (4:2:0)", _preset_jpeg),
    "noise-jpeg": (
        "the bicubic LR + Gaussian noise of sigma 8 (of 255, per colour channel), then JPEG quality 85",
        _preset_noise_jpeg,
    ),
    "real": ("the whole real-world training chain (Real-ESRGAN's defaults) with a fixed seed", _preset_real),
}


def image_seed(name: str, seed: int) -> np.random.Generator:
    """The generator of one image of a preset: from the seed and the image's file name (not its
    position), so that a folder degraded in any order, or one image alone, gives the same LR."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def apply_preset(hr: np.ndarray, scale: int, preset: str, *, name: str, seed: int = 0) -> np.ndarray:
    """LR uint8 HWC of `hr` (uint8 HWC, RGB or gray) by `preset`, seeded by `name` and `seed`.

    HR is cropped to a multiple of `scale` first (modcrop), as the evaluation protocol does, so the
    LR is exactly HR/scale. Gray images stay gray; alpha is dropped.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown degradation preset {preset!r}; choose from {', '.join(PRESETS)}")
    if hr.ndim == 2:
        hr = hr[..., None]
    if hr.shape[2] in (2, 4):
        hr = hr[..., :-1]
    hr = modcrop(hr, scale)
    if min(hr.shape[:2]) < scale:
        raise ConfigError(f"{name}: {hr.shape[1]}x{hr.shape[0]} is too small to downscale x{scale}")
    return PRESETS[preset][1](np.ascontiguousarray(hr), scale, image_seed(name, seed))
