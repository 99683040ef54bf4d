"""Conversions between stored samples (uint8, uint16) and the float images superres computes on."""

from __future__ import annotations

import numpy as np


def to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 or uint16 pixels -> float32 in [0, 1] (divided by 255 or 65535)."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / np.float32(65535)
    raise TypeError(f"to_float expects uint8 or uint16 pixels, got {pixels.dtype}")


def from_float(array: np.ndarray, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """Float values in [0, 1] -> uint8 or uint16: clipped, scaled, rounded to nearest (NaN -> 0)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise TypeError(f"from_float converts to uint8 or uint16, not {dtype}")
    maximum = np.iinfo(dtype).max
    # float32 holds every 16-bit level exactly, so there is no need to double the memory.
    working_type = np.float64 if np.asarray(array).dtype == np.float64 else np.float32
    values = np.nan_to_num(np.asarray(array, dtype=working_type), nan=0.0)
    return np.rint(np.clip(values, 0.0, 1.0) * maximum).astype(dtype)


def uint16_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """The nearest 8-bit level of each 16-bit sample."""
    # 257 = 65535 / 255; uint32 because x + 128 overflows uint16.
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
