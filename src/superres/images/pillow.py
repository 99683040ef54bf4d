"""Pillow's side of `superres.images`: every file except 16-bit colour PNGs and TIFFs.

Reading is two steps, as for every decoder here (`superres.images.decoded.Decoder`): `open_decoder`
parses the header (so `read_image` can check the pixel limit), `decode` decodes the pixels and
maps Pillow's many modes (palette, 1-bit, CMYK, colour keys, 16-bit gray...) onto HWC uint8/uint16
with 1 to 4 channels. Orientation is returned, not applied; `read_image` turns the pixels.

Pillow's own pixel limit is a module global that would override a caller's `max_pixels`: it is
switched off while a header is parsed, and any bomb warning Pillow still emits becomes an error.
JPEG's decoder (libjpeg) pads a file that ends early with flat gray and only warns, which Pillow
does not pass on; `_check_jpeg_is_complete` catches it instead.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from superres.errors import ImageReadError
from superres.images import formats
from superres.images.decoded import Decoded, valid_orientation

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION_TAG = 0x0112

#: Errors Pillow's decoders raise for damaged data (truncated, bad chunk, bad Huffman table...).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)

# Pillow's pixel limit is a module global. We replace it by our own, per-call check; the lock
# keeps two threads from restoring each other's value in the wrong order.
_PILLOW_LIMIT_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@contextmanager
def _pillow_limit_disabled() -> Iterator[None]:
    """Switch Pillow's global limit off while a header is parsed; `read_image` checks the size.

    Pillow's default (89M pixels, a warning; 179M, an error) would otherwise override a caller's
    `max_pixels`. Any bomb warning Pillow still emits becomes an exception, never a silent load.
    """
    with _PILLOW_LIMIT_LOCK:
        saved_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit


def _bomb_error(path: Path, exc: Exception) -> ImageReadError:
    return ImageReadError(f"{path}: too many pixels (decompression bomb guard: {exc})")


@dataclass
class PillowDecoder:
    """An open Pillow image whose header is parsed (see `superres.images.decoded.Decoder`)."""

    image: Image.Image
    fp: BinaryIO
    path: Path

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    @property
    def bytes_per_pixel(self) -> int:
        # At most RGBA (a palette may hold alpha); 16-bit and wider integer modes come out as uint16.
        sample = 2 if self.image.mode.startswith(("I", "F")) else 1
        channels = 4 if self.image.mode == "P" else min(4, len(self.image.getbands()))
        return sample * channels

    @property
    def orientation(self) -> int:
        # Only what the header holds (a JPEG's EXIF precedes its pixels): Pillow's PNG getexif()
        # decodes the whole image to look for an eXIf chunk after the pixels.
        if self.image.format == "PNG" and "exif" not in self.image.info:
            return 1
        return _orientation(self.image, self.path)

    def decode(self) -> Decoded:
        image, path = self.image, self.path
        try:
            # A full decode now: a truncated file must fail here rather than come back with a
            # grey bottom (Pillow pads only when ImageFile.LOAD_TRUNCATED_IMAGES is set).
            image.load()
        except _BOMB_ERRORS as exc:
            raise _bomb_error(path, exc) from exc
        except DECODE_ERRORS as exc:
            raise ImageReadError(f"{path}: truncated or corrupt image data ({exc})") from exc
        if image.format == "JPEG":
            _check_jpeg_is_complete(self.fp, image, path)
        elif getattr(image, "n_frames", 1) > 1:
            logger.warning("%s: %d frames; only the first is upscaled", path, image.n_frames)
        pixels, keep_profile = pixels_from_pillow_image(image, path)
        icc_profile = (image.info.get("icc_profile") or None) if keep_profile else None
        return Decoded(pixels, icc_profile, _orientation(image, path))


@contextmanager
def open_decoder(fp: BinaryIO, path: Path) -> Iterator[PillowDecoder]:
    """Parse the header of the image in `fp`; the image is closed when the block ends.

    Pillow may open only the formats the format table reads, so a file is never handed to a
    plugin that shells out (EPS) or that we never tested.
    """
    readable = formats.readable()
    try:
        with _pillow_limit_disabled():
            image = Image.open(fp, formats=[fmt.name for fmt in readable if fmt.pillow])
    except _BOMB_ERRORS as exc:
        raise _bomb_error(path, exc) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not a {formats.in_words(readable)} image") from exc
    except DECODE_ERRORS as exc:
        raise ImageReadError(f"{path}: truncated or corrupt image header ({exc})") from exc
    with image:
        yield PillowDecoder(image, fp, path)


def _orientation(image: Image.Image, path: Path) -> int:
    """The EXIF orientation Pillow found (1..8); a broken EXIF block is only logged."""
    try:
        return valid_orientation(image.getexif().get(_EXIF_ORIENTATION_TAG, 1))
    except DECODE_ERRORS + (KeyError, TypeError) as exc:
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", path, exc)
        return 1


def orientation_from_exif(data: bytes) -> int:
    """The orientation in a raw EXIF block (a PNG eXIf chunk), 1 where there is none or it is bad."""
    exif = Image.Exif()
    try:
        exif.load(data)
        return valid_orientation(int(exif.get(_EXIF_ORIENTATION_TAG, 1)))
    except DECODE_ERRORS + (TypeError, KeyError):
        return 1


# A marker outside entropy-coded data: 0xFF, then neither a stuffed 0x00, a restart marker nor fill.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Bytes a complete file's decoder never reads (they sit after the last scan, before the end marker)
# but a truncated file's decoder takes for the missing image data; fixed, so the check is repeatable.
_JPEG_PROBE_PADDING = np.random.default_rng(0).integers(1, 255, 256, dtype=np.uint8).tobytes()


def _jpeg_end_marker_offset(data: bytes) -> int | None:
    """Offset of the end-of-image marker that closes the main image, or None if there is none."""
    position = 2  # after SOI
    while (match := _JPEG_MARKER.search(data, position)) is not None:
        marker = match.group()[1]
        if marker == 0xD9:
            return match.start()
        if match.start() + 4 > len(data):
            return None
        # Every other marker here carries a 2-byte length; entropy-coded data follows SOS.
        (length,) = struct.unpack(">H", data[match.start() + 2 : match.start() + 4])
        position = match.start() + 2 + max(length, 2)
    return None


def _check_jpeg_is_complete(fp: BinaryIO, image: Image.Image, path: Path) -> None:
    """Refuse a JPEG whose image data ends before its last pixel (a cut file with an end marker).

    libjpeg fills what is missing with gray and only warns. So the file is decoded a second time
    with bytes inserted before its end marker: a complete file never reads them and decodes the
    same, a truncated one takes them for image data and decodes differently.
    """
    fp.seek(0)
    data = fp.read()
    end = _jpeg_end_marker_offset(data)
    if end is None:
        return  # no end marker: Pillow's own check already refused a cut file
    probe_data = data[:end] + _JPEG_PROBE_PADDING + data[end:]
    try:
        with _pillow_limit_disabled(), Image.open(io.BytesIO(probe_data), formats=("JPEG",)) as probe:
            probe.load()
            same = np.array_equal(np.asarray(probe), np.asarray(image))
    except DECODE_ERRORS + _BOMB_ERRORS:
        same = False
    if not same:
        raise ImageReadError(f"{path}: truncated JPEG (image data ends before the last pixel)")


def _has_colour_key_transparency(image: Image.Image) -> bool:
    """Palette alpha, or a tRNS colour key on an L/RGB image (what PNG and GIF-style files use)."""
    if image.info.get("transparency") is not None:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def pixels_from_pillow_image(image: Image.Image, path: Path) -> tuple[np.ndarray, bool]:
    """HWC uint8/uint16 pixels, and whether the file's ICC profile still describes them."""
    mode = image.mode
    keep_profile = True
    if mode in ("LA", "RGBA"):
        pixels = np.array(image)
    elif mode in ("L", "RGB"):
        wanted = mode + "A" if _has_colour_key_transparency(image) else mode
        pixels = np.array(image.convert(wanted) if wanted != mode else image)
    elif mode == "1":
        pixels = np.array(image.convert("L"))
    elif mode == "P":
        pixels = np.array(image.convert("RGBA" if _has_colour_key_transparency(image) else "RGB"))
    elif mode in ("PA", "RGBa"):
        pixels = np.array(image.convert("RGBA"))
    elif mode == "La":
        pixels = np.array(image.convert("LA"))
    elif mode in ("RGBX", "YCbCr"):
        pixels = np.array(image.convert("RGB"))
    elif mode == "CMYK":
        # Pillow's CMYK -> RGB is the naive formula; the file's profile describes ink, not our
        # RGB, so it must not travel with the converted pixels.
        pixels = np.array(image.convert("RGB"))
        keep_profile = False
        logger.warning("%s: CMYK image converted to RGB without colour management", path)
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        pixels = np.array(image).astype(np.uint16)  # native byte order, whatever the file had
    elif mode == "I":
        pixels = _uint16_from_int32(np.array(image), path)
    else:
        raise ImageReadError(f"{path}: unsupported pixel mode {mode!r}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return pixels, keep_profile


def _uint16_from_int32(pixels: np.ndarray, path: Path) -> np.ndarray:
    # Older Pillow (and some TIFF writers) give 16-bit gray as 32-bit "I"; anything outside the
    # 16-bit range is a genuinely different kind of image we cannot represent.
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise ImageReadError(
            f"{path}: unsupported pixel mode 'I' with values outside 0..65535 "
            f"({pixels.min()}..{pixels.max()})"
        )
    return pixels.astype(np.uint16)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def pillow_image_from_pixels(pixels: np.ndarray) -> Image.Image:
    """The Pillow image of HWC pixels Pillow can hold (8-bit any channels, 16-bit gray)."""
    if pixels.shape[2] == 1:
        return Image.fromarray(pixels[:, :, 0])  # uint8 -> "L", uint16 -> "I;16"
    return Image.fromarray(pixels)  # "LA", "RGB" or "RGBA"


def save(
    fp: BinaryIO, pixels: np.ndarray, image_format: str, icc_profile: bytes | None, quality: int
) -> None:
    """Encode `pixels` into `fp` as `image_format` (a Pillow format name); the options below are
    how Pillow is told to encode each format well, nothing about what it can hold (see `formats`)."""
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if image_format == "JPEG":
        # 4:4:4: super-resolved detail lives in the chroma too; 4:2:0 would halve it again.
        options.update(quality=quality, subsampling=0)
    elif image_format == "WEBP":
        options.update(quality=quality)
    elif image_format == "PNG":
        options.update(compress_level=6)
    pillow_image_from_pixels(pixels).save(fp, format=image_format, **options)
