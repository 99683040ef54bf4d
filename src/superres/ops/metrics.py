"""PSNR and SSIM as super-resolution papers compute them.

The protocol is part of every signature: which channel (BT.601 Y or all of RGB), how many border
pixels are shaved (by convention the scale), and the data range. SSIM is Wang et al. 2004: 11x11
Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, computed on the valid region only (no
padding) and without the automatic downsampling of the later `ssim.m`, which is what the SRCNN,
VDSR and RED-Net evaluation code does.
"""

from __future__ import annotations

import numpy as np

from superres.ops.color import rgb_to_y


def shave_border(image: np.ndarray, shave: int) -> np.ndarray:
    """`image` without `shave` pixels on each side (the protocol's border), as a view."""
    if shave < 0:
        raise ValueError(f"shave must be >= 0, got {shave}")
    if shave == 0:
        return image
    if image.shape[0] <= 2 * shave or image.shape[1] <= 2 * shave:
        raise ValueError(f"a {image.shape[0]}x{image.shape[1]} image is too small to shave {shave} pixels")
    return image[shave:-shave, shave:-shave]


def _check_pair(sr: np.ndarray, hr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sr = np.asarray(sr, dtype=np.float64)
    hr = np.asarray(hr, dtype=np.float64)
    if sr.shape != hr.shape:
        raise ValueError(f"SR and HR shapes differ: {sr.shape} vs {hr.shape}")
    return sr, hr


def psnr(sr: np.ndarray, hr: np.ndarray, *, shave: int, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of HW or HWC arrays on the `data_range` scale."""
    sr, hr = _check_pair(sr, hr)
    mse = np.mean((shave_border(sr, shave) - shave_border(hr, shave)) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


def phase_error_spread(sr: np.ndarray, hr: np.ndarray, *, scale: int) -> float:
    """The sub-pixel lattice a model prints, in gray levels: the standard deviation, over the
    scale x scale output phases (pixel (y, x) has phase (y mod scale, x mod scale)), of the mean
    error SR - HR of each phase, on HW planes.

    A sub-pixel upsampler (pixel shuffle, strided deconvolution) computes each phase with its own
    weights; a bias of one phase shows as a faint grid with the period of the scale (GAN training
    tends to make one). A model without a lattice has all phase means equal (spread ~0.1 from the
    image content alone). The planes must be aligned to HR pixel 0 (not shaved, or shaved by a
    multiple of the scale).
    """
    sr, hr = _check_pair(sr, hr)
    height, width = (sr.shape[0] // scale) * scale, (sr.shape[1] // scale) * scale
    error = (sr - hr)[:height, :width].reshape(height // scale, scale, width // scale, scale)
    return float(error.mean(axis=(0, 2)).std())


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    window = np.exp(-(coords**2) / (2 * sigma**2))
    return window / window.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D image with a symmetric 1-D window on both axes."""
    size = window.size
    rows = np.lib.stride_tricks.sliding_window_view(image, size, axis=0) @ window
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=1) @ window


def _ssim_plane(sr: np.ndarray, hr: np.ndarray, data_range: float) -> float:
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    window = _gaussian_window()
    if min(sr.shape) < window.size:
        raise ValueError(f"SSIM needs at least 11x11 pixels after shaving, got {sr.shape}")
    mu_x = _filter_valid(sr, window)
    mu_y = _filter_valid(hr, window)
    sigma_x = _filter_valid(sr * sr, window) - mu_x**2
    sigma_y = _filter_valid(hr * hr, window) - mu_y**2
    sigma_xy = _filter_valid(sr * hr, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    )
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, *, shave: int, data_range: float = 255.0) -> float:
    """Structural similarity (Wang et al. 2004) of HW or HWC arrays; channels are averaged."""
    sr, hr = _check_pair(sr, hr)
    sr, hr = shave_border(sr, shave), shave_border(hr, shave)
    if sr.ndim == 2:
        return _ssim_plane(sr, hr, data_range)
    return float(np.mean([_ssim_plane(sr[..., c], hr[..., c], data_range) for c in range(sr.shape[2])]))


def y_channel(image: np.ndarray) -> np.ndarray:
    """The evaluation plane of a uint8 HWC (or HW) image on the 0..255 scale, float64.

    RGB: BT.601 Y, not rounded. A single-channel gray image is its own Y: mapping it through the
    RGB formula (R = G = B) would compress its range to [16, 235] and inflate its PSNR.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float64)
    if image.shape[2] == 1:
        return image[..., 0].astype(np.float64)
    return rgb_to_y(image[..., :3].astype(np.float64) / 255.0) * 255.0


def score_pair(
    sr: np.ndarray, hr: np.ndarray, *, scale: int, y_only: bool = True, shave: int | None = None
) -> tuple[float, float]:
    """(PSNR, SSIM) of two uint8 images by the paper protocol: Y channel, `scale` pixels shaved."""
    shave = scale if shave is None else shave
    if y_only:
        sr_plane, hr_plane = y_channel(sr), y_channel(hr)
    else:
        sr_plane, hr_plane = np.asarray(sr, dtype=np.float64), np.asarray(hr, dtype=np.float64)
    return psnr(sr_plane, hr_plane, shave=shave), ssim(sr_plane, hr_plane, shave=shave)
