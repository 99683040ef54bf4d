"""Which shipped model suits an input: the clean default, or the real-world model for a
compressed or noisy image.

The benchmark models sharpen JPEG blocks and noise as faithfully as detail; on such inputs they
can end below plain bicubic. When no model is named, `superres upscale` looks at each input:

* a JPEG file whose luminance table matches libjpeg quality <= `JPEG_QUALITY_LIMIT` (90) is
  compressed enough to show blocks and ringing (cameras and "save for web" at high quality write
  92-100; web images are usually 70-85);
* an image whose noise level (`noise_sigma`) is >= `NOISE_SIGMA_LIMIT` (4 of 255) is noisy;

and either goes to the real-world model (`REAL_WORLD_MODEL`) where it ships at the scale; every
other input goes to the clean default. The noise estimate is, per colour channel and averaged, the
10th percentile over 16x16 blocks of the RMS of the high-pass residual (the kernel of Immerkaer,
"Fast noise variance estimation", CVIU 1996, whose response to white noise of sigma s has RMS s):
the flattest tenth of an image shows its noise rather than its texture. Calibrated on half-size
copies of training images (90 of T91 / BSD200, no benchmark image): clean, the estimate reaches 4
on 13% of them (texture everywhere, e.g. foliage); with colour noise of sigma 5 added, on 98%; of
sigma 8, on all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from superres.images.jpeg import estimate_jpeg_quality

JPEG_QUALITY_LIMIT = 90
NOISE_SIGMA_LIMIT = 4.0
REAL_WORLD_MODEL = "real"
#: Blocks of the noise estimate, and the share of the flattest that decides it.
NOISE_BLOCK = 16
NOISE_PERCENTILE = 10
#: The estimate looks at most this many pixels per side (a centre crop): enough blocks, bounded time.
NOISE_WINDOW = 1024
_HIGH_PASS = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6.0


@dataclass(frozen=True)
class InputCondition:
    """What the check found in one input."""

    jpeg_quality: int | None  # None: not a JPEG
    noise_sigma: float  # on the 0..255 scale

    @property
    def compressed(self) -> bool:
        return self.jpeg_quality is not None and self.jpeg_quality <= JPEG_QUALITY_LIMIT

    @property
    def noisy(self) -> bool:
        return self.noise_sigma >= NOISE_SIGMA_LIMIT

    @property
    def degraded(self) -> bool:
        return self.compressed or self.noisy

    def describe(self) -> str:
        found = []
        if self.compressed:
            found.append(f"JPEG quality ~{self.jpeg_quality}")
        if self.noisy:
            found.append(f"noise sigma ~{self.noise_sigma:.1f}")
        return ", ".join(found) or "clean"


def noise_sigma(pixels: np.ndarray) -> float:
    """Estimated white-noise sigma (0..255 scale, per colour channel) of an HWC or HW image."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    colour = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., :1]
    height, width = colour.shape[:2]
    top, left = max(0, (height - NOISE_WINDOW) // 2), max(0, (width - NOISE_WINDOW) // 2)
    colour = colour[top : top + NOISE_WINDOW, left : left + NOISE_WINDOW].astype(np.float64) * (255.0 / scale)
    if min(colour.shape[:2]) < NOISE_BLOCK + 2:
        return 0.0  # too small to tell noise from detail: treated as clean
    return float(np.mean([_plane_noise_sigma(colour[..., channel]) for channel in range(colour.shape[2])]))


def _plane_noise_sigma(plane: np.ndarray) -> float:
    height, width = plane.shape
    residual = sum(
        _HIGH_PASS[dy, dx] * plane[dy : height - 2 + dy, dx : width - 2 + dx]
        for dy in range(3)
        for dx in range(3)
    )
    rows = (residual.shape[0] // NOISE_BLOCK) * NOISE_BLOCK
    cols = (residual.shape[1] // NOISE_BLOCK) * NOISE_BLOCK
    blocks = residual[:rows, :cols].reshape(
        rows // NOISE_BLOCK, NOISE_BLOCK, cols // NOISE_BLOCK, NOISE_BLOCK
    )
    rms = np.sqrt((blocks**2).mean(axis=(1, 3)))
    return float(np.percentile(rms, NOISE_PERCENTILE))


def inspect_input(path: str | Path, pixels: np.ndarray) -> InputCondition:
    """The condition of one input: its file's JPEG quality and its pixels' noise level."""
    return InputCondition(estimate_jpeg_quality(path), noise_sigma(pixels))


def models_for_scale(scale: int) -> tuple[str, str]:
    """(the model for a clean input, the model for a degraded one) at `scale`: the clean default,
    and the real-world model where one ships at the scale (else the default again). Read from the
    cards once, for a whole batch."""
    from superres.zoo.pretrained import default_model_for, list_pretrained

    clean = default_model_for(scale)
    ships = any(entry.name == REAL_WORLD_MODEL and entry.scale == scale for entry in list_pretrained())
    return clean, REAL_WORLD_MODEL if ships else clean


def model_for_input(condition: InputCondition, scale: int) -> str:
    """The shipped model for an input of this condition at `scale` (`models_for_scale`)."""
    clean, degraded = models_for_scale(scale)
    return degraded if condition.degraded else clean
