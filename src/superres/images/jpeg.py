"""How hard a JPEG file was compressed, from its quantisation tables (no pixel is decoded).

A JPEG encoder divides each 8x8 block's frequencies by a quantisation table before rounding, and
the file stores the tables. libjpeg (and most software after it: Pillow, OpenCV, GIMP, browsers'
canvas, most web services) scales the IJG standard tables by the quality setting, so the stored
luminance table says which quality made the file. `estimate_jpeg_quality` finds the libjpeg
quality whose luminance table is nearest to the file's; for a camera's or another encoder's own
tables it is the nearest equivalent. The reference tables are made by Pillow itself (one tiny
encode per quality, once), so they are in whatever order Pillow reports a file's tables.
"""

from __future__ import annotations

import functools
import io
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError


@functools.lru_cache(maxsize=1)
def _reference_tables() -> np.ndarray:
    """(100, 64) luminance tables of libjpeg at qualities 1..100, as Pillow reports them."""
    tables = []
    probe = Image.new("L", (8, 8))
    for quality in range(1, 101):
        buffer = io.BytesIO()
        probe.save(buffer, "JPEG", quality=quality)
        with Image.open(buffer) as encoded:
            tables.append(list(encoded.quantization[0]))
    return np.array(tables, dtype=np.float64)


def estimate_jpeg_quality(path: str | os.PathLike[str]) -> int | None:
    """The libjpeg quality (1..100) nearest to the file's luminance table; None if the file is
    not a JPEG (or cannot be read: the caller's reader reports that)."""
    try:
        with warnings.catch_warnings(), Image.open(path) as image:
            warnings.simplefilter("ignore")  # a decompression-bomb warning is the reader's to give
            if image.format != "JPEG" or not getattr(image, "quantization", None):
                return None
            table = np.array(image.quantization[0], dtype=np.float64)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    if table.shape != (64,):
        return None
    distance = np.abs(_reference_tables() - table).sum(axis=1)
    return int(np.argmin(distance)) + 1
