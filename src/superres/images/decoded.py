"""What every decoder of `superres.images` returns: pixels as stored, their orientation and profile.

The decoders (`pillow`, `png`, `tiff`) stop at the pixels the file stores; `read_image` turns them
upright with `apply_orientation`, in one place for every format, so that a Pillow JPEG, our own
16-bit PNG and a tifffile TIFF with the same orientation tag come out turned the same way.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Protocol

import numpy as np


# eq=False: comparing two decodes field by field would compare arrays, which has no single truth.
@dataclass(frozen=True, eq=False)
class Decoded:
    """HWC uint8/uint16 pixels (C in 1..4) as stored, before any orientation is applied."""

    pixels: np.ndarray
    icc_profile: bytes | None
    orientation: int = 1  # the EXIF (or TIFF) Orientation tag, 1..8; 1 is upright


class Decoder(Protocol):
    """A file whose header is parsed: its size is known, no pixel is decoded yet.

    `read_image` checks the size against the pixel limit between the two steps, so that a tiny
    file declaring a gigantic canvas is refused before anything is inflated.
    """

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def bytes_per_pixel(self) -> int:
        """Bytes one pixel of `decode`'s result takes at most (channels x 1 or 2), from the header."""
        ...

    @property
    def orientation(self) -> int:
        """The EXIF (or TIFF) Orientation tag as far as the header tells it (1..8; 1 if unknown)."""
        ...

    def decode(self) -> Decoded: ...


def valid_orientation(value: object) -> int:
    """An orientation tag's value if it is one of 1..8, else 1 (a broken tag is not a turn)."""
    # Integral: tifffile gives enum members and numpy integers, Pillow plain ints.
    if isinstance(value, numbers.Integral) and 1 <= value <= 8:
        return int(value)
    return 1


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) after `apply_orientation`: orientations 5-8 turn the image a quarter."""
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The same turn `PIL.ImageOps.exif_transpose` makes, on an HWC array (orientation 1..8)."""
    if orientation == 2:
        return pixels[:, ::-1]
    if orientation == 3:
        return pixels[::-1, ::-1]
    if orientation == 4:
        return pixels[::-1]
    if orientation == 5:
        return pixels.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(pixels, k=-1)
    if orientation == 7:
        return pixels.transpose(1, 0, 2)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(pixels, k=1)
    return pixels
