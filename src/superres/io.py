"""Reading and writing image files: the only module in superres that touches image files.

Images leave this module as numpy HWC arrays (uint8 or uint16, C in {1, 2, 3, 4}: gray,
gray+alpha, RGB, RGBA) and enter it the same way. Pillow does most of the work; a small pure
numpy + zlib PNG codec covers what Pillow cannot represent: 16-bit gray+alpha and colour PNGs
(Pillow has no 16-bit LA/RGB/RGBA mode and would silently drop the low byte of every sample), and
`superres.tiff` does the same for 16-bit gray+alpha and colour TIFFs.

GIF is read (its first frame, palette converted) but never written: an upscaled photo does not
fit a 256-colour palette. JPEG's decoder (libjpeg) pads a file that ends early with flat gray and
only warns, which Pillow does not pass on; `_check_jpeg_is_complete` catches it instead.

Public API: `IMAGE_EXTENSIONS`, `READ_EXTENSIONS`, `list_images`, `LoadedImage`, `read_image`,
`write_image`, `to_float`, `from_float`, `DEFAULT_MAX_PIXELS`, `default_max_pixels`.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from superres import tiff
from superres.atomic import atomic_write, describe_os_error
from superres.errors import ImageReadError, ImageWriteError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: What can be read: the writable formats and GIF.
READ_EXTENSIONS: tuple[str, ...] = (*IMAGE_EXTENSIONS, ".gif")

# Pillow format names, by extension; reading is restricted to these formats too, so a file is
# never handed to a plugin that shells out (EPS) or that we never tested.
_FORMAT_BY_EXTENSION: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
_READABLE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
_FORMATS_IN_WORDS = "PNG, JPEG, BMP, TIFF, WebP or GIF"

#: Never more than 2**28 = 268M pixels: a 16384 x 16384 image fits, a hostile 64k x 64k header not.
_MAX_PIXELS_CEILING = 2**28
#: Bytes of memory one input pixel costs in the heaviest use (upscaling x4 to 16-bit RGBA with its
#: float copies: about 130 B measured); the default limit keeps that within the machine's memory.
_BYTES_PER_PIXEL_AT_WORST = 160


def _memory_bytes() -> int | None:
    """Physical memory, or the container's cgroup limit when that is lower; None if unknown."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def default_max_pixels() -> int:
    """The pixel limit that fits this machine: a 23 KB file claiming 16000x16000 pixels must not
    be decoded into gigabytes the rest of the pipeline cannot hold."""
    memory = _memory_bytes()
    if memory is None:
        return _MAX_PIXELS_CEILING
    return max(1, min(_MAX_PIXELS_CEILING, memory // _BYTES_PER_PIXEL_AT_WORST))


DEFAULT_MAX_PIXELS = default_max_pixels()

_EXIF_ORIENTATION_TAG = 0x0112

# Formats that cannot store 16 bits per sample, and the ones that cannot store alpha.
_EIGHT_BIT_ONLY_FORMATS = frozenset({"JPEG", "BMP", "WEBP"})
_NO_ALPHA_FORMATS = frozenset({"JPEG", "BMP"})

# Errors Pillow's decoders raise for damaged data (truncated, bad chunk, bad Huffman table...).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


# --------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly inside `folder`, sorted by name.

    Extensions are matched case-insensitively against `IMAGE_EXTENSIONS`; hidden files are
    skipped (macOS "._name.png" resource forks and our own temporary files are not images).
    """
    folder = Path(folder)
    if not folder.exists():
        raise ImageReadError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: not a folder")
    try:
        images = sorted(
            entry
            for entry in folder.iterdir()
            if entry.suffix.lower() in READ_EXTENSIONS
            and not entry.name.startswith(".")
            and entry.is_file()
        )
    except OSError as exc:  # an unreadable folder: one line naming it, not a traceback
        raise ImageReadError(f"{folder}: cannot list folder ({exc.strerror or exc})") from exc
    if not images:
        raise ImageReadError(f"{folder}: no images ({' '.join(READ_EXTENSIONS)}) in folder")
    return images


# --------------------------------------------------------------------------------------------
# The loaded image
# --------------------------------------------------------------------------------------------


# eq=False: comparing two images field by field would compare arrays, which has no single truth.
@dataclass(frozen=True, eq=False)
class LoadedImage:
    """Pixels read from a file, with the colour profile that tells how to interpret them.

    `pixels` is HWC, C in {1, 2, 3, 4} (gray, gray+alpha, RGB, RGBA), uint8 or uint16,
    C-contiguous, with any EXIF orientation already applied.
    """

    pixels: np.ndarray
    icc_profile: bytes | None
    path: Path

    @property
    def has_alpha(self) -> bool:
        return self.pixels.shape[2] in (2, 4)

    @property
    def is_gray(self) -> bool:
        return self.pixels.shape[2] in (1, 2)

    @property
    def bit_depth(self) -> int:
        return 16 if self.pixels.dtype == np.uint16 else 8


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Read a PNG, JPEG, BMP, TIFF, WebP or GIF file into a `LoadedImage`.

    The file's content decides the format, not its extension. `max_pixels` (None: no limit)
    guards against decompression bombs: a tiny file that declares a gigantic canvas.
    Every problem with the file raises `ImageReadError` naming it.
    """
    path = Path(path)
    _check_is_nonempty_file(path)
    try:
        with open(path, "rb") as fp:
            if _is_png_pillow_cannot_hold(fp):
                pixels, icc_profile = _read_png_with_own_decoder(fp.read(), path, max_pixels)
            elif (layout := tiff.probe_sixteen_bit_colour(fp)) is not None:
                pixels, icc_profile = _read_sixteen_bit_colour_tiff(fp, path, layout, max_pixels)
            else:
                pixels, icc_profile = _read_with_pillow(fp, path, max_pixels)
    except OSError as exc:
        # Only opening/reading the file itself lands here; decoder errors are handled inside.
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    return LoadedImage(pixels=np.ascontiguousarray(pixels), icc_profile=icc_profile, path=path)


def _check_is_nonempty_file(path: Path) -> None:
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot access file ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(status.st_mode):
        raise ImageReadError(f"{path}: is a directory, not an image file")
    if not stat.S_ISREG(status.st_mode):
        # A FIFO or a device reports size 0 and would block or never end: not "empty".
        raise ImageReadError(f"{path}: not a regular file (a pipe, socket or device)")
    if status.st_size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")


def _check_pixel_count(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            f"{path}: {width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels} (decompression bomb guard; raise it with --max-pixels)"
        )


# Pillow's pixel limit is a module global. We replace it by our own, per-call check; the lock
# keeps two threads of this module from restoring each other's value in the wrong order.
_PILLOW_LIMIT_LOCK = threading.Lock()


@contextmanager
def _pillow_limit_disabled() -> Iterator[None]:
    """Switch Pillow's global limit off while a header is parsed; we check the size ourselves.

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


_PILLOW_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def _bomb_error(path: Path, exc: Exception) -> ImageReadError:
    return ImageReadError(f"{path}: too many pixels (decompression bomb guard: {exc})")


def _open_with_pillow(fp: BinaryIO, path: Path) -> Image.Image:
    try:
        with _pillow_limit_disabled():
            return Image.open(fp, formats=_READABLE_FORMATS)
    except _PILLOW_BOMB_ERRORS as exc:
        raise _bomb_error(path, exc) from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(f"{path}: not a {_FORMATS_IN_WORDS} image") from exc
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"{path}: truncated or corrupt image header ({exc})") from exc


def _read_with_pillow(
    fp: BinaryIO, path: Path, max_pixels: int | None
) -> tuple[np.ndarray, bytes | None]:
    with _open_with_pillow(fp, path) as image:
        _check_pixel_count(path, image.width, image.height, max_pixels)
        try:
            # A full decode now: a truncated file must fail here rather than come back with a
            # grey bottom (Pillow pads only when ImageFile.LOAD_TRUNCATED_IMAGES is set).
            image.load()
        except _PILLOW_BOMB_ERRORS as exc:
            raise _bomb_error(path, exc) from exc
        except _DECODE_ERRORS as exc:
            raise ImageReadError(f"{path}: truncated or corrupt image data ({exc})") from exc
        if image.format == "JPEG":
            _check_jpeg_is_complete(fp, image, path)
        elif getattr(image, "n_frames", 1) > 1:
            logger.warning("%s: %d frames; only the first is upscaled", path, image.n_frames)
        icc_profile = image.info.get("icc_profile") or None
        upright = _exif_transposed(image, path)
        pixels, keep_profile = _pixels_from_pillow_image(upright, path)
    return pixels, (icc_profile if keep_profile else None)


# A marker outside entropy-coded data: 0xFF, then neither a stuffed 0x00, a restart marker nor fill.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_END_OF_IMAGE = b"\xff\xd9"
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
    except _DECODE_ERRORS + _PILLOW_BOMB_ERRORS:
        same = False
    if not same:
        raise ImageReadError(f"{path}: truncated JPEG (image data ends before the last pixel)")


def _exif_transposed(image: Image.Image, path: Path) -> Image.Image:
    """The image turned the way its EXIF orientation says; a broken EXIF block is only logged."""
    try:
        # Most files have no orientation; skipping exif_transpose then saves a full-image copy.
        if image.getexif().get(_EXIF_ORIENTATION_TAG, 1) == 1:
            return image
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS + (KeyError, TypeError) as exc:
        logger.warning("%s: ignoring unreadable EXIF orientation (%s)", path, exc)
        return image


def _read_sixteen_bit_colour_tiff(
    fp: BinaryIO, path: Path, layout: tiff.SixteenBitColourTiff, max_pixels: int | None
) -> tuple[np.ndarray, bytes | None]:
    """A 16-bit gray+alpha or colour TIFF through tifffile, or through Pillow at 8 bits if its
    compression needs the optional imagecodecs package (8 bits beat refusing a file we can read).
    """
    _check_pixel_count(path, layout.width, layout.height, max_pixels)
    if not layout.decodable:
        logger.warning(
            "%s: %s-compressed 16-bit TIFF read as 8 bits per sample (16 bits need the "
            "optional imagecodecs package)",
            path,
            layout.compression,
        )
        return _read_with_pillow(fp, path, max_pixels)
    decoded = tiff.read_sixteen_bit_colour(fp, path)
    return _apply_exif_orientation(decoded.pixels, decoded.orientation), decoded.icc_profile


def _has_colour_key_transparency(image: Image.Image) -> bool:
    """Palette alpha, or a tRNS colour key on an L/RGB image (what PNG and GIF-style files use)."""
    if image.info.get("transparency") is not None:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _pixels_from_pillow_image(image: Image.Image, path: Path) -> tuple[np.ndarray, bool]:
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


def _apply_exif_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """The same turn `ImageOps.exif_transpose` makes, on an HWC array (orientation tag 1..8)."""
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


# --------------------------------------------------------------------------------------------
# Our own PNG decoder (pure numpy + zlib), used for 16-bit gray+alpha and colour PNGs
# --------------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS_BY_COLOUR_TYPE = {0: 1, 2: 3, 4: 2, 6: 4}
_COLOUR_TYPE_BY_CHANNELS = {1: 0, 2: 4, 3: 2, 4: 6}
# Adam7 passes: (first column, first row, column step, row step).
_ADAM7_PASSES = (
    (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)
)
_IDAT_CHUNK_BYTES = 1 << 20
_FILTER_BLOCK_ROWS = 64


def _is_png_pillow_cannot_hold(fp: BinaryIO) -> bool:
    """True for PNGs with 16 bits per sample and more than one channel (Pillow keeps 8 of them)."""
    header = fp.read(len(_PNG_SIGNATURE) + 8 + 13)
    fp.seek(0)
    if len(header) < 29 or not header.startswith(_PNG_SIGNATURE) or header[12:16] != b"IHDR":
        return False
    bit_depth, colour_type = header[24], header[25]
    return bit_depth == 16 and colour_type in (2, 4, 6)


def _png_chunks(data: bytes, path: Path) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) for each chunk, CRC-checked; stops after IEND or at the end of the data."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ImageReadError(f"{path}: not a PNG file")
    position = len(_PNG_SIGNATURE)
    while position < len(data):
        if position + 8 > len(data):
            raise ImageReadError(f"{path}: truncated PNG (cut inside a chunk header)")
        length, chunk_type = struct.unpack(">I4s", data[position : position + 8])
        body_end = position + 8 + length
        if body_end + 4 > len(data):
            raise ImageReadError(f"{path}: truncated PNG (chunk {chunk_type!r} is cut short)")
        body = data[position + 8 : body_end]
        (stored_crc,) = struct.unpack(">I", data[body_end : body_end + 4])
        if zlib.crc32(chunk_type + body) != stored_crc:
            raise ImageReadError(f"{path}: corrupt PNG (CRC mismatch in chunk {chunk_type!r})")
        yield chunk_type, body
        if chunk_type == b"IEND":
            return
        position = body_end + 4


@dataclass(frozen=True)
class _PngHeader:
    width: int
    height: int
    bit_depth: int
    colour_type: int
    interlaced: bool

    @property
    def channels(self) -> int:
        return _CHANNELS_BY_COLOUR_TYPE[self.colour_type]

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.bit_depth // 8


def _parse_png_header(body: bytes, path: Path) -> _PngHeader:
    if len(body) != 13:
        raise ImageReadError(f"{path}: corrupt PNG (IHDR has {len(body)} bytes, not 13)")
    width, height, bit_depth, colour_type, compression, filter_method, interlace = struct.unpack(
        ">IIBBBBB", body
    )
    if colour_type not in _CHANNELS_BY_COLOUR_TYPE or bit_depth not in (8, 16):
        raise ImageReadError(
            f"{path}: unsupported PNG layout (bit depth {bit_depth}, colour type {colour_type})"
        )
    if width == 0 or height == 0 or compression != 0 or filter_method != 0 or interlace > 1:
        raise ImageReadError(f"{path}: corrupt PNG header (size {width}x{height}, methods "
                             f"{compression}/{filter_method}/{interlace})")
    return _PngHeader(width, height, bit_depth, colour_type, interlaced=interlace == 1)


def _read_png_with_own_decoder(
    data: bytes, path: Path, max_pixels: int | None
) -> tuple[np.ndarray, bytes | None]:
    """Decode a non-palette 8/16-bit PNG to HWC pixels, with its ICC profile and orientation."""
    header: _PngHeader | None = None
    idat_parts: list[bytes] = []
    icc_profile: bytes | None = None
    orientation = 1
    colour_key: bytes | None = None
    for chunk_type, body in _png_chunks(data, path):
        if chunk_type == b"IHDR":
            header = _parse_png_header(body, path)
            # Checked before a single byte is inflated: this is the decompression bomb guard.
            _check_pixel_count(path, header.width, header.height, max_pixels)
        elif chunk_type == b"IDAT":
            idat_parts.append(body)
        elif chunk_type == b"iCCP":
            icc_profile = _icc_profile_from_chunk(body, path)
        elif chunk_type == b"eXIf":
            orientation = _orientation_from_exif(body)
        elif chunk_type == b"tRNS":
            colour_key = body
    if header is None:
        raise ImageReadError(f"{path}: corrupt PNG (no IHDR chunk)")
    if not idat_parts:
        raise ImageReadError(f"{path}: truncated PNG (no image data)")
    pixels = _decode_png_pixels(b"".join(idat_parts), header, path)
    if colour_key is not None and header.colour_type in (0, 2):
        pixels = _alpha_from_colour_key(pixels, colour_key, header)
    return _apply_exif_orientation(pixels, orientation), icc_profile


def _icc_profile_from_chunk(body: bytes, path: Path) -> bytes | None:
    name_end = body.find(b"\x00")
    if name_end < 0 or name_end + 2 > len(body):
        logger.warning("%s: ignoring malformed iCCP chunk", path)
        return None
    try:
        return zlib.decompress(body[name_end + 2 :])
    except zlib.error:
        logger.warning("%s: ignoring iCCP chunk whose profile does not inflate", path)
        return None


def _orientation_from_exif(body: bytes) -> int:
    exif = Image.Exif()
    try:
        exif.load(body)
        orientation = int(exif.get(_EXIF_ORIENTATION_TAG, 1))
    except (_DECODE_ERRORS + (TypeError, KeyError)):
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _alpha_from_colour_key(pixels: np.ndarray, colour_key: bytes, header: _PngHeader) -> np.ndarray:
    """tRNS on a gray/RGB PNG names one fully transparent colour: turn it into an alpha channel."""
    samples = struct.unpack(f">{header.channels}H", colour_key[: 2 * header.channels])
    maximum = np.iinfo(pixels.dtype).max
    transparent = np.all(pixels == np.asarray(samples, dtype=pixels.dtype), axis=2, keepdims=True)
    alpha = np.where(transparent, 0, maximum).astype(pixels.dtype)
    return np.concatenate([pixels, alpha], axis=2)


def _adam7_pass_sizes(width: int, height: int) -> list[tuple[int, int, int, int, int, int]]:
    """(x0, y0, dx, dy, pass width, pass height) for each non-empty Adam7 pass."""
    sizes = []
    for x0, y0, dx, dy in _ADAM7_PASSES:
        pass_width = (width - x0 + dx - 1) // dx if width > x0 else 0
        pass_height = (height - y0 + dy - 1) // dy if height > y0 else 0
        if pass_width and pass_height:
            sizes.append((x0, y0, dx, dy, pass_width, pass_height))
    return sizes


def _decode_png_pixels(compressed: bytes, header: _PngHeader, path: Path) -> np.ndarray:
    bpp = header.bytes_per_pixel
    if header.interlaced:
        passes = _adam7_pass_sizes(header.width, header.height)
    else:
        passes = [(0, 0, 1, 1, header.width, header.height)]
    expected_bytes = sum(h * (1 + w * bpp) for *_, w, h in passes)
    raw = _inflate_exactly(compressed, expected_bytes, path)
    sample_type = np.dtype(">u2") if header.bit_depth == 16 else np.dtype(np.uint8)
    pixels = np.empty(
        (header.height, header.width, header.channels), dtype=sample_type.newbyteorder("=")
    )
    offset = 0
    for x0, y0, dx, dy, pass_width, pass_height in passes:
        size = pass_height * (1 + pass_width * bpp)
        scanlines = np.frombuffer(raw, dtype=np.uint8, count=size, offset=offset)
        offset += size
        try:
            pass_bytes = _unfilter_scanlines(scanlines.reshape(pass_height, -1), bpp)
        except ValueError as exc:
            raise ImageReadError(f"{path}: corrupt PNG ({exc})") from exc
        samples = pass_bytes.reshape(pass_height, -1).view(sample_type)
        pixels[y0::dy, x0::dx] = samples.reshape(pass_height, pass_width, header.channels)
    return pixels


def _inflate_exactly(compressed: bytes, expected_bytes: int, path: Path) -> bytes:
    # max_length caps memory: a zlib bomb cannot inflate past what the header promised.
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, expected_bytes)
    except zlib.error as exc:
        raise ImageReadError(f"{path}: corrupt PNG image data ({exc})") from exc
    if len(raw) < expected_bytes:
        raise ImageReadError(
            f"{path}: truncated PNG image data ({len(raw)} of {expected_bytes} bytes)"
        )
    return raw


def _unfilter_scanlines(scanlines: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG filtering: (rows, 1 + row bytes), filter type first -> (rows, row bytes)."""
    filter_types = scanlines[:, 0]
    if filter_types.size and filter_types.max() > 4:
        raise ValueError(f"unknown scanline filter type {int(filter_types.max())}")
    filtered = scanlines[:, 1:].reshape(scanlines.shape[0], -1, bpp)
    if np.all(filter_types <= 2):
        return _unfilter_row_by_row(filtered, filter_types).reshape(scanlines.shape[0], -1)
    return _unfilter_by_antidiagonals(filtered, filter_types).reshape(scanlines.shape[0], -1)


def _unfilter_row_by_row(filtered: np.ndarray, filter_types: np.ndarray) -> np.ndarray:
    """None/Sub/Up only: each row is one vectorised step (uint8 arithmetic wraps mod 256)."""
    rows = np.empty_like(filtered)
    previous = np.zeros_like(filtered[0])
    for y, filter_type in enumerate(filter_types):
        if filter_type == 0:
            rows[y] = filtered[y]
        elif filter_type == 1:
            np.cumsum(filtered[y], axis=0, dtype=np.uint8, out=rows[y])
        else:
            np.add(filtered[y], previous, out=rows[y])
        previous = rows[y]
    return rows


def _unfilter_by_antidiagonals(filtered: np.ndarray, filter_types: np.ndarray) -> np.ndarray:
    """Any filter mix: pixel (y, x) needs only its left, upper and upper-left neighbours, so all
    pixels on one anti-diagonal (y + x constant) can be reconstructed together in one numpy step.
    """
    height, width, bpp = filtered.shape
    # One row and one column of zeros in front: the neighbours PNG defines outside the image.
    recon = np.zeros((height + 1, width + 1, bpp), dtype=np.int16)
    filtered16 = filtered.astype(np.int16)
    types16 = filter_types.astype(np.int16)
    for diagonal in range(height + width - 1):
        ys = np.arange(max(0, diagonal - width + 1), min(height, diagonal + 1))
        xs = diagonal - ys
        left = recon[ys + 1, xs]
        up = recon[ys, xs + 1]
        up_left = recon[ys, xs]
        kind = types16[ys][:, np.newaxis]
        prediction = np.select(
            [kind == 1, kind == 2, kind == 3, kind == 4],
            [left, up, (left + up) >> 1, _paeth_predictor(left, up, up_left)],
            default=0,
        )
        recon[ys + 1, xs + 1] = (filtered16[ys, xs] + prediction) & 0xFF
    return recon[1:, 1:].astype(np.uint8)


def _paeth_predictor(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    """PNG's Paeth predictor on int16 arrays: the neighbour closest to left + up - up_left."""
    distance_left = np.abs(up - up_left)
    distance_up = np.abs(left - up_left)
    distance_up_left = np.abs(left + up - 2 * up_left)
    return np.where(
        (distance_left <= distance_up) & (distance_left <= distance_up_left),
        left,
        np.where(distance_up <= distance_up_left, up, up_left),
    )


# --------------------------------------------------------------------------------------------
# Our own PNG encoder, used for every 16-bit PNG
# --------------------------------------------------------------------------------------------


def _neighbours(
    block: np.ndarray, previous_row: np.ndarray | None, bpp: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Left, upper and upper-left bytes of each byte of an int16 row block (zero outside)."""
    left = np.zeros_like(block)
    left[:, bpp:] = block[:, :-bpp]
    up = np.zeros_like(block)
    up[1:] = block[:-1]
    if previous_row is not None:
        up[0] = previous_row
    up_left = np.zeros_like(block)
    up_left[:, bpp:] = up[:, :-bpp]
    return left, up, up_left


def _row_blocks(rows: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """(first row, int16 block, the row above it) in blocks, to bound the int16 working memory."""
    for start in range(0, rows.shape[0], _FILTER_BLOCK_ROWS):
        block = rows[start : start + _FILTER_BLOCK_ROWS].astype(np.int16)
        previous_row = rows[start - 1].astype(np.int16) if start else None
        yield start, block, previous_row


def _filter_scanlines(rows: np.ndarray, bpp: int, filter_types: np.ndarray) -> np.ndarray:
    """Apply PNG filter `filter_types[y]` to each byte row -> (rows, 1 + row bytes) uint8."""
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = filter_types
    for start, block, previous_row in _row_blocks(rows):
        left, up, up_left = _neighbours(block, previous_row, bpp)
        kind = np.asarray(filter_types[start : start + block.shape[0]])[:, np.newaxis]
        prediction = np.select(
            [kind == 1, kind == 2, kind == 3, kind == 4],
            [left, up, (left + up) >> 1, _paeth_predictor(left, up, up_left)],
            default=0,
        )
        filtered[start : start + block.shape[0], 1:] = (block - prediction) & 0xFF
    return filtered


def _choose_filter_types(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Per row, the cheapest of None/Sub/Up by libpng's minimum-sum-of-absolute-values rule.

    Avg and Paeth are left out on purpose: rows using only None/Sub/Up decode in one numpy step
    each in `_unfilter_row_by_row`, and they compress almost as well on 16-bit data.
    """
    chosen = np.empty(rows.shape[0], dtype=np.uint8)
    for start, block, previous_row in _row_blocks(rows):
        left, up, _ = _neighbours(block, previous_row, bpp)
        residuals = np.stack([block, block - left, block - up])  # None, Sub, Up
        signed = ((residuals + 128) & 0xFF) - 128  # the byte read as a signed int8
        costs = np.abs(signed).sum(axis=2, dtype=np.int64)
        chosen[start : start + block.shape[0]] = np.argmin(costs, axis=0)
    return chosen


def _png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(chunk_type + body)
    return struct.pack(">I", len(body)) + chunk_type + body + struct.pack(">I", crc)


def _encode_png(
    pixels: np.ndarray, icc_profile: bytes | None, filter_types: np.ndarray | None = None
) -> bytes:
    """A complete non-interlaced PNG file for HWC uint8/uint16 pixels (C in 1..4)."""
    height, width, channels = pixels.shape
    bit_depth = 16 if pixels.dtype == np.uint16 else 8
    bpp = channels * bit_depth // 8
    big_endian = pixels.astype(">u2" if bit_depth == 16 else np.uint8, copy=False)
    rows = np.ascontiguousarray(big_endian).view(np.uint8).reshape(height, width * bpp)
    if filter_types is None:
        filter_types = _choose_filter_types(rows, bpp)
    compressed = zlib.compress(_filter_scanlines(rows, bpp, filter_types).tobytes(), 6)
    colour_type = _COLOUR_TYPE_BY_CHANNELS[channels]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    for start in range(0, len(compressed), _IDAT_CHUNK_BYTES):
        chunks.append(_png_chunk(b"IDAT", compressed[start : start + _IDAT_CHUNK_BYTES]))
    chunks.append(_png_chunk(b"IEND", b""))
    return _PNG_SIGNATURE + b"".join(chunks)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    quality: int = 95,
) -> None:
    """Write HW or HWC uint8/uint16 pixels to `path`, the format chosen by its extension.

    16 bits are kept in PNG and TIFF (any channel count); formats that cannot hold them get 8 bits,
    rounded, with a warning. JPEG and BMP cannot hold alpha: it is dropped, with a warning.
    `quality` (1..100) applies to JPEG and WebP. The write is atomic: a temporary file in the same
    folder is renamed over `path` only once complete, so a failure leaves any old file untouched.
    """
    path = Path(path)
    image_format = _format_for_path(path)
    pixels = _validated_pixels(pixels, path)
    if not 1 <= quality <= 100:
        raise ImageWriteError(f"{path}: quality must be between 1 and 100, got {quality}")
    pixels = _fit_pixels_to_format(pixels, image_format, path)
    if image_format == "BMP" and icc_profile:
        logger.warning("%s: BMP cannot store an ICC profile; it is dropped", path)
        icc_profile = None
    if image_format == "PNG" and pixels.dtype == np.uint16:
        encoded = _encode_png(pixels, icc_profile)
        _write_atomically(path, lambda fp: fp.write(encoded))
    elif image_format == "TIFF" and tiff.holds_sixteen_bit_colour(pixels):
        encoded = tiff.encode_sixteen_bit_colour(pixels, icc_profile)
        _write_atomically(path, lambda fp: fp.write(encoded))
    else:
        pil_image = _pillow_image_from_pixels(pixels)
        options = _pillow_save_options(image_format, icc_profile, quality)
        _write_atomically(path, lambda fp: pil_image.save(fp, format=image_format, **options))


def _format_for_path(path: Path) -> str:
    image_format = _FORMAT_BY_EXTENSION.get(path.suffix.lower())
    if path.suffix.lower() == ".gif":
        raise ImageWriteError(
            f"{path}: GIF is read but not written (256 colours would undo the upscale); "
            f"use one of {' '.join(IMAGE_EXTENSIONS)}"
        )
    if image_format is None:
        raise ImageWriteError(
            f"{path}: unknown image extension {path.suffix!r} "
            f"(use one of {' '.join(IMAGE_EXTENSIONS)})"
        )
    return image_format


def _validated_pixels(pixels: np.ndarray, path: Path) -> np.ndarray:
    if not isinstance(pixels, np.ndarray):
        raise ImageWriteError(f"{path}: pixels must be a numpy array, got {type(pixels).__name__}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageWriteError(
            f"{path}: pixels must be uint8 or uint16, got {pixels.dtype} (convert with from_float)"
        )
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4) or 0 in pixels.shape:
        raise ImageWriteError(
            f"{path}: pixels must be HW or HWC with 1 to 4 channels, got shape {pixels.shape}"
        )
    return np.ascontiguousarray(pixels)


def _fit_pixels_to_format(pixels: np.ndarray, image_format: str, path: Path) -> np.ndarray:
    """Drop what the format cannot store (alpha, 16 bits), with a warning."""
    if image_format in _NO_ALPHA_FORMATS and pixels.shape[2] in (2, 4):
        logger.warning("%s: %s cannot store alpha; alpha is dropped", path, image_format)
        pixels = pixels[:, :, : pixels.shape[2] - 1]
    if pixels.dtype == np.uint16 and image_format in _EIGHT_BIT_ONLY_FORMATS:
        logger.warning(
            "%s: %s written with 8 bits per sample (16-bit input rounded)", path, image_format
        )
        pixels = _uint16_to_uint8(pixels)
    return np.ascontiguousarray(pixels)


def _uint16_to_uint8(pixels: np.ndarray) -> np.ndarray:
    # Nearest 8-bit level: 257 = 65535 / 255; uint32 because x + 128 overflows uint16.
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _pillow_image_from_pixels(pixels: np.ndarray) -> Image.Image:
    if pixels.shape[2] == 1:
        return Image.fromarray(pixels[:, :, 0])  # uint8 -> "L", uint16 -> "I;16"
    return Image.fromarray(pixels)  # "LA", "RGB" or "RGBA"


def _pillow_save_options(
    image_format: str, icc_profile: bytes | None, quality: int
) -> dict[str, object]:
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
    return options


def _write_atomically(path: Path, write_to: Callable[[BinaryIO], object]) -> None:
    """`superres.atomic.atomic_write`, with file-system errors as one-line ImageWriteErrors."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(
            f"{path}: cannot create folder {path.parent} ({exc.strerror or exc})"
        ) from exc
    try:
        atomic_write(path, write_to)
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write image ({describe_os_error(exc)})") from exc
    except (ValueError, KeyError) as exc:
        raise ImageWriteError(f"{path}: cannot write image ({exc})") from exc


# --------------------------------------------------------------------------------------------
# Conversions used by the rest of superres
# --------------------------------------------------------------------------------------------


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
