"""Which shipped model suits an input: the clean default, or the real-world model for a
compressed or noisy image.

The benchmark models sharpen JPEG blocks and noise as faithfully as detail; on such inputs they
can end below plain bicubic. When no model is named, `superres upscale` looks at each input:

* a JPEG file whose luminance table matches libjpeg quality <= `JPEG_QUALITY_LIMIT` (90) is
  compressed enough to show blocks and ringing (cameras and "save for web" at high quality write
  92-100; web images are usually 70-85);
* any other image whose pixels still carry a JPEG's 8x8 grid (`jpeg_block_score` >=
  `JPEG_BLOCK_SCORE_LIMIT`: a JPEG saved again as PNG, a screenshot of one) is compressed too;
* an image whose noise level (`noise_sigma`) is >= `NOISE_SIGMA_LIMIT` (4 of 255) is noisy;

and either goes to the real-world model (`REAL_WORLD_MODEL`) where it ships at the scale; every
other input goes to the clean default. The noise estimate is, per colour channel and averaged, the
10th percentile over 16x16 blocks of the RMS of the high-pass residual (the kernel of Immerkaer,
"Fast noise variance estimation", CVIU 1996, whose response to white noise of sigma s has RMS s):
the flattest tenth of an image shows its noise rather than its texture. Calibrated on half-size
copies of training images (90 of T91 / BSD200, no benchmark image): clean, the estimate reaches 4
on 13% of them (texture everywhere, e.g. foliage); with colour noise of sigma 5 added, on 98%; of
sigma 8, on all.

The block score looks for the grid a JPEG leaves: cut every row into 8-pixel segments at each of the
8 offsets and take the mean magnitude of the segments' upper four DCT frequencies. At a JPEG's own
offset those frequencies were quantised (mostly to zero), at the others the block edges put energy
into them; the score is 1 - (the lowest offset's energy) / (the other offsets' mean), the smaller of
the score along rows and along columns (a grid has both). A clean image has no preferred offset.
Calibrated on the same kind of copies (all 291 training images at half size, decoded JPEGs cropped by
a random 0-7 px so that the grid sits anywhere; those under 64 px a side score 0): clean, none reach
0.06; as JPEG quality 50, 96%; 75, 85%; 85, 55%; 90, 27% (at 85-90 the blocks are faint, and the
default loses little there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from superres.images.jpeg import estimate_jpeg_quality

JPEG_QUALITY_LIMIT = 90
JPEG_BLOCK_SCORE_LIMIT = 0.06
#: The block score needs 8 blocks each way: on fewer, one offset stands out by chance.
JPEG_BLOCK_MIN_SIDE = 64
NOISE_SIGMA_LIMIT = 4.0
REAL_WORLD_MODEL = "real"
#: Blocks of the noise estimate, and the share of the flattest that decides it.
NOISE_BLOCK = 16
NOISE_PERCENTILE = 10
#: Both estimates look at most this many pixels per side (a centre crop): enough blocks, bounded time.
INSPECT_WINDOW = 1024
_HIGH_PASS = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6.0


@dataclass(frozen=True)
class InputCondition:
    """What the check found in one input."""

    jpeg_quality: int | None  # None: not a JPEG
    noise_sigma: float  # on the 0..255 scale
    jpeg_block_score: float = 0.0  # looked at only where the file is not a JPEG

    @property
    def compressed(self) -> bool:
        if self.jpeg_quality is not None:
            return self.jpeg_quality <= JPEG_QUALITY_LIMIT
        return self.jpeg_block_score >= JPEG_BLOCK_SCORE_LIMIT

    @property
    def noisy(self) -> bool:
        return self.noise_sigma >= NOISE_SIGMA_LIMIT

    @property
    def degraded(self) -> bool:
        return self.compressed or self.noisy

    def describe(self) -> str:
        found = []
        if self.compressed and self.jpeg_quality is not None:
            found.append(f"JPEG quality ~{self.jpeg_quality}")
        elif self.compressed:
            found.append(f"JPEG blocks (score {self.jpeg_block_score:.2f})")
        if self.noisy:
            found.append(f"noise sigma ~{self.noise_sigma:.1f}")
        return ", ".join(found) or "clean"


def _centre_colour(pixels: np.ndarray) -> np.ndarray:
    """The colour (or gray) planes of an HWC or HW image, at most INSPECT_WINDOW px per side from its
    centre, as float64 on the 0..255 scale."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    scale = 65535.0 if pixels.dtype == np.uint16 else 255.0
    colour = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., :1]
    height, width = colour.shape[:2]
    top, left = max(0, (height - INSPECT_WINDOW) // 2), max(0, (width - INSPECT_WINDOW) // 2)
    window = colour[top : top + INSPECT_WINDOW, left : left + INSPECT_WINDOW]
    return window.astype(np.float64) * (255.0 / scale)


def noise_sigma(pixels: np.ndarray) -> float:
    """Estimated white-noise sigma (0..255 scale, per colour channel) of an HWC or HW image."""
    colour = _centre_colour(pixels)
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


#: The 1-D DCT-II basis of an 8-sample segment (orthonormal rows: frequency 0..7).
_DCT8 = np.array(
    [
        [np.cos(np.pi * (2 * x + 1) * u / 16) * np.sqrt((1 if u == 0 else 2) / 8) for x in range(8)]
        for u in range(8)
    ]
)


def jpeg_block_score(pixels: np.ndarray) -> float:
    """How plainly an image's pixels show a JPEG's 8x8 grid, at whatever offset: 0 for none, up to
    about 0.5 for quality 50 (see the module's docstring)."""
    colour = _centre_colour(pixels)
    if min(colour.shape[:2]) < JPEG_BLOCK_MIN_SIDE:
        return 0.0  # too few blocks to tell a grid from chance
    # BT.601 luma, as the JPEG encoder's Y (gray: the plane itself)
    luma = colour[..., 0] if colour.shape[2] == 1 else colour @ np.array([0.299, 0.587, 0.114])
    return min(_grid_score(luma), _grid_score(luma.T))


def _grid_score(plane: np.ndarray) -> float:
    """1 - (the high-frequency energy of 8-px row segments at their quietest offset) / (the mean of
    the other offsets'); ~0 where no offset stands out."""
    energy = []
    for offset in range(8):
        width = (plane.shape[1] - offset) // 8 * 8
        segments = plane[:, offset : offset + width].reshape(plane.shape[0], -1, 8)
        energy.append(np.abs(segments @ _DCT8[4:].T).mean())
    quietest = int(np.argmin(energy))
    others = np.delete(np.array(energy), quietest).mean()
    return float(1.0 - energy[quietest] / others) if others > 1e-9 else 0.0


def inspect_input(path: str | Path | None, pixels: np.ndarray) -> InputCondition:
    """The condition of one input: its file's JPEG quality (None: not a JPEG file, or no file), its
    pixels' noise level and, where it is not a JPEG file, its JPEG block score."""
    quality = estimate_jpeg_quality(path) if path is not None else None
    block_score = jpeg_block_score(pixels) if quality is None else 0.0
    return InputCondition(quality, noise_sigma(pixels), block_score)


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
