"""BT.601 colour conversion with MATLAB's `rgb2ycbcr` constants, for numpy and torch.

All values are on the [0, 1] scale: Y lies in [16/255, 235/255] and Cb, Cr in [16/255, 240/255],
exactly as MATLAB's `rgb2ycbcr` returns for double input. The SR literature's "Y channel" is this
Y: `Y = 16 + 65.481 R + 128.553 G + 24.966 B` with R, G, B in [0, 1], on the 0..255 scale.
"""

from __future__ import annotations

import numpy as np
import torch

# Rows give Y, Cb, Cr from R, G, B in [0, 1], on the 0..255 output scale (MATLAB's constants).
_RGB_TO_YCBCR = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
_OFFSET = np.array([16.0, 128.0, 128.0])
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
#: Y on the 0..1 scale is `Y_OFFSET + Y_FROM_RGB . rgb` (rgb in 0..1): linear, which is what lets a
#: Y network be rewritten as an RGB one (`superres.models.colour`).
Y_FROM_RGB = _RGB_TO_YCBCR[0] / 255.0
Y_OFFSET = _OFFSET[0] / 255.0


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (..., 3) YCbCr in [0, 1] (float64)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return (rgb @ _RGB_TO_YCBCR.T + _OFFSET) / 255.0


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """(..., 3) YCbCr in [0, 1] -> (..., 3) RGB in [0, 1] (float64, not clipped)."""
    ycbcr = np.asarray(ycbcr, dtype=np.float64)
    return (ycbcr * 255.0 - _OFFSET) @ _YCBCR_TO_RGB.T


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> (...) Y in [16/255, 235/255] (float64)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return (rgb @ _RGB_TO_YCBCR[0] + _OFFSET[0]) / 255.0


def _matrix(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device)


def rgb_to_ycbcr_tensor(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 3, H, W) YCbCr in [0, 1]."""
    matrix = _matrix(_RGB_TO_YCBCR / 255.0, rgb)
    offset = _matrix(_OFFSET / 255.0, rgb).view(1, 3, 1, 1)
    return torch.einsum("oc,nchw->nohw", matrix, rgb) + offset


def ycbcr_to_rgb_tensor(ycbcr: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) YCbCr in [0, 1] -> (N, 3, H, W) RGB in [0, 1] (not clipped)."""
    matrix = _matrix(_YCBCR_TO_RGB * 255.0, ycbcr)
    offset = _matrix(_OFFSET / 255.0, ycbcr).view(1, 3, 1, 1)
    return torch.einsum("oc,nchw->nohw", matrix, ycbcr - offset)


def rgb_to_y_tensor(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) Y in [16/255, 235/255]."""
    weights = _matrix(_RGB_TO_YCBCR[0] / 255.0, rgb).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True) + _OFFSET[0] / 255.0
