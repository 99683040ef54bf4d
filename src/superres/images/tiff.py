"""16-bit colour TIFF files: the one kind of TIFF that Pillow cannot hold.

Pillow has no 16-bit RGB, RGBA or gray+alpha mode: it decodes such TIFFs to 8 bits per sample and
cannot write them at all. This module reads and writes exactly those files with tifffile (pure
Python on numpy, no compiled code of its own); `superres.images` calls it only for them and leaves
every other image file, 16-bit gray TIFF included, to Pillow.

Without the optional imagecodecs package, tifffile decodes uncompressed, Deflate (zlib) and LZMA
data, with or without the horizontal predictor; LZW, PackBits and JPEG need imagecodecs, which
superres does not depend on. `probe_sixteen_bit_colour` says whether a file is decodable here;
`own_decoder` gives the others back to Pillow, which reads them at 8 bits (with a warning). We write
Deflate with the horizontal predictor: lossless, decodable without imagecodecs, and read by every
libtiff-based program.

Reading is two steps, as for every decoder here: `probe_sixteen_bit_colour` parses the header
(the size is then known), `TiffDecoder.decode` decodes the pixels; orientation is returned, not
applied (see `superres.images.decoded`).

Public API: `SixteenBitColourTiff`, `TiffDecoder`, `own_decoder`, `probe_sixteen_bit_colour`,
`writes`, `encode`.
"""

from __future__ import annotations

import io
import logging
import lzma
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from tifffile import TIFF

from superres.errors import ImageReadError
from superres.images import formats
from superres.images.decoded import Decoded, valid_orientation

logger = logging.getLogger(__name__)

_ORIENTATION_TAG = 274
_ICC_PROFILE_TAG = 34675

_PHOTOMETRIC_MINISBLACK = 1
_PHOTOMETRIC_RGB = 2
# Colour samples per pixel before any extra (alpha) sample, by photometric interpretation.
_COLOUR_SAMPLES = {_PHOTOMETRIC_MINISBLACK: 1, _PHOTOMETRIC_RGB: 3}
_SAMPLE_FORMAT_UINT = 1
_COMPRESSION_NONE = 1

# ExtraSamples values (TIFF 6.0) that need work; 2, straight alpha, is kept as it is.
_EXTRA_UNSPECIFIED = 0
_EXTRA_PREMULTIPLIED_ALPHA = 1

# What tifffile raises on damaged files (all seen while fuzzing): TiffFileError, a ValueError only
# since 2025.9.20; OSError or ValueError for a short read; the codecs' own errors; KeyError for a
# missing codec; TypeError where a tag with a wrong count gives a tuple instead of a number;
# ZeroDivisionError for a RowsPerStrip of 0.
_DECODE_ERRORS = (
    tifffile.TiffFileError,
    ArithmeticError,
    ValueError,
    OSError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SixteenBitColourTiff:
    """What `probe_sixteen_bit_colour` learns from a file's header, before any pixel is decoded."""

    width: int
    height: int
    compression: str  # "NONE", "ADOBE_DEFLATE", "LZW", ...
    decodable: bool  # False: the compression (or predictor) needs imagecodecs
    orientation: int = 1


def own_decoder(fp: BinaryIO, path: Path) -> TiffDecoder | None:
    """A decoder for the 16-bit colour TIFF in `fp` if tifffile decodes it here; else None, and
    Pillow reads the file (at 8 bits per sample where it is a 16-bit colour TIFF we cannot decode:
    8 bits beat refusing a file we can read). `fp` is left at its start."""
    layout = probe_sixteen_bit_colour(fp)
    if layout is not None and layout.decodable:
        return TiffDecoder(fp, path, layout)
    if layout is not None:
        logger.warning(
            "%s: %s-compressed 16-bit TIFF read as 8 bits per sample (16 bits need the "
            "optional imagecodecs package)",
            path,
            layout.compression,
        )
    return None


def probe_sixteen_bit_colour(fp: BinaryIO) -> SixteenBitColourTiff | None:
    """The first image's layout if `fp` is a 16-bit unsigned gray+alpha, RGB or RGBA TIFF.

    None for anything else, including files tifffile cannot even parse: Pillow then reads them
    (or reports them) as before. `fp` is left at its start.
    """
    try:
        fp.seek(0)
        if not formats.TIFF.matches(fp.read(formats.TIFF.head_length)):
            return None
        fp.seek(0)
        with tifffile.TiffFile(fp) as tiff_file:
            page = tiff_file.pages.first
            if not _is_sixteen_bit_colour(page):
                return None
            return SixteenBitColourTiff(
                width=int(page.imagewidth),
                height=int(page.imagelength),
                compression=_enum_name(page.compression),
                decodable=page.compression in TIFF.DECOMPRESSORS
                and page.predictor in TIFF.UNPREDICTORS,
                orientation=_orientation(page),
            )
    except _DECODE_ERRORS:
        return None
    finally:
        fp.seek(0)


def _is_sixteen_bit_colour(page: tifffile.TiffPage) -> bool:
    colour_samples = _COLOUR_SAMPLES.get(int(page.photometric))
    return (
        colour_samples is not None
        and page.bitspersample == 16
        and page.sampleformat == _SAMPLE_FORMAT_UINT
        and page.imagedepth == 1
        and page.samplesperpixel in (2, 3, 4)
        # One extra sample at most: gray+alpha, RGB, RGB+alpha.
        and page.samplesperpixel - colour_samples in (0, 1)
        and len(page.extrasamples) == page.samplesperpixel - colour_samples
    )


def _enum_name(value: object) -> str:
    return getattr(value, "name", str(value))


@dataclass(frozen=True)
class TiffDecoder:
    """A 16-bit colour TIFF that `probe_sixteen_bit_colour` accepted as decodable (a `Decoder`)."""

    fp: BinaryIO
    path: Path
    layout: SixteenBitColourTiff

    @property
    def width(self) -> int:
        return self.layout.width

    @property
    def height(self) -> int:
        return self.layout.height

    @property
    def bytes_per_pixel(self) -> int:
        return 8  # 16-bit gray+alpha, RGB or RGBA: at most four 2-byte samples

    @property
    def orientation(self) -> int:
        return self.layout.orientation

    def decode(self) -> Decoded:
        """HWC native-endian uint16 pixels; `ImageReadError` naming the path if damaged."""
        return _read_sixteen_bit_colour(self.fp, self.path)


def _read_sixteen_bit_colour(fp: BinaryIO, path: Path) -> Decoded:
    file_size = fp.seek(0, 2)
    fp.seek(0)
    try:
        with tifffile.TiffFile(fp) as tiff_file:
            page = tiff_file.pages.first
            _check_image_data_is_complete(page, file_size, path)
            stored = page.asarray()
            pixels = _as_hwc(stored, page)
            icc_profile = _icc_profile(page)
            orientation = _orientation(page)
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"{path}: truncated or corrupt TIFF image data ({exc})") from exc
    return Decoded(pixels=pixels, icc_profile=icc_profile, orientation=orientation)


def _check_image_data_is_complete(page: tifffile.TiffPage, file_size: int, path: Path) -> None:
    """Refuse strips that lie past the end of the file, or too few uncompressed bytes.

    tifffile fills missing uncompressed data with zeros; we want an error, as for other formats.
    """
    ends = [
        offset + count
        for offset, count in zip(page.dataoffsets, page.databytecounts)
        if count > 0
    ]
    if ends and max(ends) > file_size:
        raise ImageReadError(
            f"{path}: truncated TIFF (image data ends at byte {max(ends)}, "
            f"the file has {file_size} bytes)"
        )
    expected_bytes = page.imagewidth * page.imagelength * page.samplesperpixel * 2
    if page.compression == _COMPRESSION_NONE and sum(page.databytecounts) < expected_bytes:
        raise ImageReadError(
            f"{path}: truncated TIFF (uncompressed image data holds "
            f"{sum(page.databytecounts)} of {expected_bytes} bytes)"
        )


def _as_hwc(stored: np.ndarray, page: tifffile.TiffPage) -> np.ndarray:
    """Height x width x channels, native-endian uint16, alpha straight (not premultiplied)."""
    height, width, samples = page.imagelength, page.imagewidth, page.samplesperpixel
    # tifffile drops axes of length 1 and puts samples first for planar files: rebuild HWC.
    if page.planarconfig == 2:  # separate planes
        pixels = np.moveaxis(stored.reshape(samples, height, width), 0, -1)
    else:
        pixels = stored.reshape(height, width, samples)
    pixels = pixels.astype(np.uint16)  # a native-endian copy, whatever the file's byte order
    extra = [int(kind) for kind in page.extrasamples]
    if extra == [_EXTRA_UNSPECIFIED]:
        # An extra sample that is not declared alpha is not ours to show (Pillow: RGBX -> RGB).
        return pixels[:, :, :-1]
    if extra == [_EXTRA_PREMULTIPLIED_ALPHA]:
        return _unpremultiplied(pixels)
    return pixels


def _unpremultiplied(pixels: np.ndarray) -> np.ndarray:
    """Colour divided by alpha (both 0..65535), rounded; fully transparent pixels stay 0."""
    # uint32 is enough: 65535 * 65535 + 32767 < 2**32.
    alpha = pixels[:, :, -1:].astype(np.uint32)
    colour = pixels[:, :, :-1].astype(np.uint32)
    safe_alpha = np.maximum(alpha, 1)
    straight = np.where(alpha > 0, (colour * 65535 + safe_alpha // 2) // safe_alpha, 0)
    # Premultiplied colour above alpha is malformed; clip rather than wrap around.
    straight = np.minimum(straight, 65535).astype(np.uint16)
    return np.concatenate([straight, pixels[:, :, -1:]], axis=2)


def _icc_profile(page: tifffile.TiffPage) -> bytes | None:
    tag = page.tags.get(_ICC_PROFILE_TAG)
    if tag is None or not isinstance(tag.value, (bytes, bytearray, tuple)):
        return None
    return bytes(tag.value) or None


def _orientation(page: tifffile.TiffPage) -> int:
    tag = page.tags.get(_ORIENTATION_TAG)
    return valid_orientation(tag.value if tag is not None else 1)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def writes(pixels: np.ndarray) -> bool:
    """True for HWC uint16 pixels with more than one channel: the TIFFs Pillow cannot write."""
    return pixels.dtype == np.uint16 and pixels.ndim == 3 and pixels.shape[2] > 1


def encode(pixels: np.ndarray, icc_profile: bytes | None) -> bytes:
    """A complete TIFF file holding HWC uint16 gray+alpha, RGB or RGBA pixels as one image.

    Encoded in memory, as `superres.images.png` does: the caller then writes the bytes atomically
    (tifffile cannot write to the unnamed file descriptor `superres.atomic` hands out anyway).
    """
    channels = pixels.shape[2]
    encoded = io.BytesIO()
    tifffile.imwrite(
        encoded,
        pixels,
        photometric="rgb" if channels >= 3 else "minisblack",
        planarconfig="contig",
        extrasamples=("unassalpha",) if channels in (2, 4) else None,
        compression="zlib",
        predictor=True,  # horizontal differencing: smooth 16-bit photos compress far better
        iccprofile=icc_profile or None,
        metadata=None,  # no tifffile-specific JSON in ImageDescription
    )
    return encoded.getvalue()
