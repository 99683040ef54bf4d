"""The built-in sample image for `superres demo`, without shipping or downloading a photo.

matplotlib ships a photograph of Grace Hopper (US Navy, public domain) among its sample data;
that is the sample. Where a matplotlib build leaves its sample data out, a synthetic resolution
chart (a zone plate, bars and text) stands in: it is just as telling for super-resolution, since
its fine rings and strokes are exactly what interpolation blurs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from superres.images import read_image

logger = logging.getLogger(__name__)

SAMPLE_NAME = "grace_hopper.jpg"
SAMPLE_CREDIT = "Grace Hopper, US Navy photograph (public domain), from matplotlib's sample data"
CHART_CREDIT = "synthetic zone plate and resolution chart"


def sample_photo_path() -> Path | None:
    """Where matplotlib keeps the sample photo, or None if this build lacks it."""
    try:
        from matplotlib import cbook

        path = Path(cbook.get_sample_data(SAMPLE_NAME, asfileobj=False))
    except (ImportError, OSError, ValueError):
        return None
    return path if path.is_file() else None


def resolution_chart(size: int = 384) -> np.ndarray:
    """A `size` x `size` RGB uint8 chart: a zone plate on the left, bars and text on the right."""
    from PIL import Image, ImageDraw

    half = size // 2
    coords = np.arange(half, dtype=np.float64) - half / 2
    radius2 = coords[None, :] ** 2 + coords[:, None] ** 2
    # Zone plate: spatial frequency grows with the radius, up to Nyquist at the edge.
    zone = 0.5 + 0.5 * np.cos(np.pi * radius2 / half)
    chart = np.full((size, size), 255, dtype=np.uint8)
    chart[:half, :half] = np.round(zone * 255).astype(np.uint8)
    for index, period in enumerate((2, 3, 4, 6, 8)):
        # Vertical bar groups of decreasing frequency beside the zone plate.
        left = half + 8 + index * (half - 16) // 5
        columns = np.arange((half - 16) // 5 - 4)
        bars = np.where((columns // period) % 2 == 0, 0, 255).astype(np.uint8)
        chart[8 : half - 8, left : left + len(columns)] = bars[None, :]
    image = Image.fromarray(chart).convert("RGB")
    draw = ImageDraw.Draw(image)
    lines = ("superres resolution chart", "THE QUICK BROWN FOX 0123456789", "jumps over a lazy dog")
    for row, text in enumerate(lines):
        draw.text((8, half + 12 + row * 20), text, fill=(20, 20, 120))
    draw.ellipse((size - half + 16, half + 80, size - 16, size - 16), outline=(160, 0, 0), width=3)
    return np.asarray(image, dtype=np.uint8).copy()


def sample_image() -> np.ndarray:
    """The demo image: matplotlib's Grace Hopper photo (RGB uint8), or the synthetic chart."""
    path = sample_photo_path()
    if path is None:
        logger.info("matplotlib's sample photo is not installed; using the synthetic chart")
        return resolution_chart()
    return read_image(path).pixels


def sample_credit() -> str:
    """Where `sample_image()`'s pixels come from, for captions."""
    return SAMPLE_CREDIT if sample_photo_path() is not None else CHART_CREDIT
