"""MATLAB-compatible image resizing (`imresize`) for numpy images and torch tensors.

Super-resolution papers make their low-resolution inputs with MATLAB's
`imresize(hr, 1/scale, 'bicubic')` and score against them; a different bicubic (Pillow, OpenCV,
`torch.nn.functional.interpolate`) shifts every PSNR by tenths of a dB. This module reproduces
MATLAB's algorithm:

- the Keys cubic kernel (a = -0.5), or the triangle kernel for 'bilinear';
- when downscaling, the kernel is stretched by 1/scale (antialiasing);
- output pixel i (1-based) samples input coordinate u = i/scale + (1 - 1/scale)/2;
- indices outside the image are clamped to the edge (replicate), which is what the MATLAB builds
  that made the benchmark LR images did (the numpy path matches those files exactly); newer
  MATLAB mirrors them instead (`border="symmetric"`, numpy path): NIQE's MATLAB reference value
  is reproduced to 1e-6 only that way (`superres.evaluation.niqe`);
- one 1-D pass per dimension, height first (MATLAB goes in order of increasing scale and keeps
  the first dimension on a tie), and for integer images the intermediate result is rounded back
  to the integer type between the passes, exactly as MATLAB does.

The numpy and torch paths share the weight computation. The torch path is differentiable and
never rounds; integer upscaling (the pre-upsampling step of SRCNN and RED-Net) runs as a
polyphase convolution, which is fast and exports to ONNX with dynamic image sizes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

KERNELS = ("bicubic", "bilinear")
#: How indices outside the image are mapped in: clamped to the edge, or mirrored (1 2 3 | 3 2 1).
BORDERS = ("replicate", "symmetric")


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys (1981) cubic convolution kernel with a = -0.5, as in MATLAB."""
    absx = np.abs(x)
    absx2 = absx * absx
    absx3 = absx2 * absx
    near = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return near + far


def _triangle(x: np.ndarray) -> np.ndarray:
    absx = np.abs(x)
    return (1.0 - absx) * (absx <= 1)


_KERNEL_FUNCTIONS = {"bicubic": (_cubic, 4.0), "bilinear": (_triangle, 2.0)}


@lru_cache(maxsize=256)
def _contributions(
    in_length: int, out_length: int, scale: float, kernel: str, border: str = "replicate"
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (out_length, taps) into the input and their weights, as MATLAB's `contributions`.

    Indices are 0-based and already clamped to the image; columns whose weight is zero for every
    output pixel are dropped so that the tap count stays minimal.
    """
    if kernel not in _KERNEL_FUNCTIONS:
        raise ValueError(f"unknown resize kernel {kernel!r}; expected one of {KERNELS}")
    function, kernel_width = _KERNEL_FUNCTIONS[kernel]
    antialias = scale < 1
    if antialias:
        kernel_width = kernel_width / scale

    out_coords = np.arange(1, out_length + 1, dtype=np.float64)
    u = out_coords / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * function(scale * distance) if antialias else function(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)

    if border == "symmetric":
        mirrored = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
        indices = mirrored[np.mod(indices.astype(np.int64) - 1, mirrored.size)]
    elif border == "replicate":
        indices = np.clip(indices, 1, in_length).astype(np.int64) - 1
    else:
        raise ValueError(f"unknown resize border {border!r}; expected one of {BORDERS}")
    used = np.any(weights != 0, axis=0)
    return np.ascontiguousarray(indices[:, used]), np.ascontiguousarray(weights[:, used])


def _output_size(
    shape: tuple[int, int], scale: float | None, size: tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Output (height, width) and per-dimension scale factors, as MATLAB derives them."""
    height, width = shape
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale and size")
    if size is not None:
        out_height, out_width = int(size[0]), int(size[1])
        if out_height < 1 or out_width < 1:
            raise ValueError(f"output size must be positive, got {size}")
        return (out_height, out_width), (out_height / height, out_width / width)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    out_height, out_width = math.ceil(height * scale), math.ceil(width * scale)
    if out_height < 1 or out_width < 1:
        raise ValueError(f"scale {scale} makes a {height}x{width} image empty")
    return (out_height, out_width), (float(scale), float(scale))


def _round_to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """MATLAB's conversion of doubles to an integer type: clamp, round half away from zero."""
    info = np.iinfo(dtype)
    return np.floor(np.clip(values, info.min, info.max) + 0.5).astype(dtype)


def _resize_axis_numpy(
    image: np.ndarray, axis: int, out_length: int, scale: float, kernel: str, border: str
) -> np.ndarray:
    indices, weights = _contributions(image.shape[axis], out_length, scale, kernel, border)
    # Accumulate one tap at a time: memory stays at one output-sized array whatever the scale.
    result = None
    for tap in range(indices.shape[1]):
        gathered = np.take(image, indices[:, tap], axis=axis).astype(np.float64, copy=False)
        shape = [1] * image.ndim
        shape[axis] = out_length
        term = gathered * weights[:, tap].reshape(shape)
        result = term if result is None else result + term
    return result


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    kernel: str = "bicubic",
    border: str = "replicate",
) -> np.ndarray:
    """Resize an HW or HWC image exactly as MATLAB's `imresize(image, scale, kernel)`.

    Integer images (uint8, uint16) come back in their own type, rounded after each 1-D pass as
    MATLAB does; float images come back as float64, neither rounded nor clipped. `border`: see
    the module's docstring (the default is the benchmark files' MATLAB).
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an HW or HWC image, got shape {image.shape}")
    (out_height, out_width), (scale_h, scale_w) = _output_size(image.shape[:2], scale, size)
    integer_type = image.dtype if np.issubdtype(image.dtype, np.integer) else None

    result = image
    for axis, out_length, axis_scale in ((0, out_height, scale_h), (1, out_width, scale_w)):
        if result.shape[axis] == out_length and axis_scale == 1.0:
            continue
        result = _resize_axis_numpy(result, axis, out_length, axis_scale, kernel, border)
        if integer_type is not None:
            result = _round_to_dtype(result, integer_type)
    if result is image:
        result = image.copy()
    return result if integer_type is not None else result.astype(np.float64, copy=False)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop height and width down to multiples of `scale`, keeping the top-left corner."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]


# --------------------------------------------------------------------------- torch


@lru_cache(maxsize=16)
def _polyphase_taps(scale: int, kernel: str) -> np.ndarray:
    """(scale, 5) weights: output phase r of an integer upscale reads input q-2..q+2.

    For an integer upscale, output pixel i = scale*q + r sits at input coordinate
    q + (r + 0.5)/scale - 0.5 (0-based), so each phase is one fixed 5-tap filter.
    """
    function, _ = _KERNEL_FUNCTIONS[kernel]
    offsets = (np.arange(scale) + 0.5) / scale - 0.5
    distance = offsets[:, None] - np.arange(-2, 3, dtype=np.float64)[None, :]
    weights = function(distance)
    return weights / weights.sum(axis=1, keepdims=True)


@lru_cache(maxsize=64)
def _polyphase_taps_tensor(scale: int, kernel: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Cached per device: a host-to-GPU copy on every forward would stall the CPU until the GPU
    # catches up (measured: 12-16% of an SRCNN training step on an H100).
    return torch.as_tensor(_polyphase_taps(scale, kernel), dtype=dtype, device=device)


def _upscale_axis_polyphase(x: torch.Tensor, scale: int, kernel: str, axis: int) -> torch.Tensor:
    """Integer upscale of a (B, 1, H, W) tensor along H (axis=2) or W (axis=3)."""
    taps = _polyphase_taps_tensor(scale, kernel, x.dtype, x.device)
    if axis == 2:
        weight = taps.view(scale, 1, 5, 1)
        padded = F.pad(x, (0, 0, 2, 2), mode="replicate")
        phases = F.conv2d(padded, weight)  # (B, scale, H, W)
        batch, _, height, width = phases.shape
        return phases.permute(0, 2, 1, 3).reshape(batch, 1, height * scale, width)
    weight = taps.view(scale, 1, 1, 5)
    padded = F.pad(x, (2, 2, 0, 0), mode="replicate")
    phases = F.conv2d(padded, weight)  # (B, scale, H, W)
    batch, _, height, width = phases.shape
    return phases.permute(0, 2, 3, 1).reshape(batch, 1, height, width * scale)


def upscale_integer_tensor(x: torch.Tensor, scale: int, kernel: str = "bicubic") -> torch.Tensor:
    """MATLAB `imresize(x, scale)` for an integer scale >= 1 on (N, C, H, W), as convolutions.

    Equal to `imresize_tensor(x, scale)` up to float rounding; uses only padding, conv2d and
    reshapes, so it traces to ONNX with dynamic batch, height and width.
    """
    if scale == 1:
        return x
    # Replicate padding needs at least 3 pixels; tiny inputs take the gather path instead.
    if x.shape[-1] < 3 or x.shape[-2] < 3:
        return imresize_tensor(x, float(scale), kernel=kernel)
    batch, channels, height, width = x.shape
    planes = x.reshape(batch * channels, 1, height, width)
    planes = _upscale_axis_polyphase(planes, scale, kernel, axis=2)
    planes = _upscale_axis_polyphase(planes, scale, kernel, axis=3)
    return planes.reshape(batch, channels, height * scale, width * scale)


def _resize_axis_tensor(
    x: torch.Tensor, dim: int, out_length: int, scale: float, kernel: str
) -> torch.Tensor:
    indices, weights = _contributions(x.shape[dim], out_length, scale, kernel)
    index = torch.as_tensor(indices, device=x.device)
    weight = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    shape = [1] * x.ndim
    shape[dim] = out_length
    result = None
    for tap in range(index.shape[1]):
        term = x.index_select(dim, index[:, tap]) * weight[:, tap].view(shape)
        result = term if result is None else result + term
    return result


def imresize_tensor(
    x: torch.Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    kernel: str = "bicubic",
) -> torch.Tensor:
    """MATLAB `imresize` for float tensors (N, C, H, W) on any device: differentiable, not
    clipped, not rounded. Integer upscales use the polyphase convolution path."""
    if x.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")
    (out_height, out_width), (scale_h, scale_w) = _output_size(tuple(x.shape[-2:]), scale, size)
    if scale_h == scale_w and float(scale_h).is_integer() and scale_h >= 1 and min(x.shape[-2:]) >= 3:
        return upscale_integer_tensor(x, int(scale_h), kernel)
    result = x
    for dim, out_length, axis_scale in ((2, out_height, scale_h), (3, out_width, scale_w)):
        if result.shape[dim] == out_length and axis_scale == 1.0:
            continue
        result = _resize_axis_tensor(result, dim, out_length, axis_scale, kernel)
    return result
