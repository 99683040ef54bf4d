"""Reading and writing image files: the only package in superres that touches image files.

Images leave it as numpy HWC arrays (uint8 or uint16, C in {1, 2, 3, 4}: gray, gray+alpha, RGB,
RGBA) and enter it the same way. Which formats, and what each can hold, is one table:

    formats.py  the formats read and written, their extensions, magic bytes and media types, what
                each can store, and which codec does the work; every list of formats comes from it

Three codec paths do the work, one module each:

    pillow.py   every file Pillow can hold (most of them)
    png.py      our own PNG codec: 16-bit gray+alpha and colour PNGs, which Pillow would cut to 8
                bits, and every 16-bit PNG we write
    tiff.py     16-bit gray+alpha and colour TIFFs through tifffile, for the same reason

Each decoder parses a header, then decodes pixels plus their orientation and ICC profile
(`decoded.Decoder`); `read_image`, above them, applies the pixel limit between the two steps
(`limits`: the decompression-bomb guard) and the orientation after, once for every format.

GIF is read (its first frame, palette converted) but never written (see `formats`).

Public API: `IMAGE_EXTENSIONS` (the extensions written), `READ_EXTENSIONS` (those read; both
computed from `formats.FORMATS` on every access), `list_images`, `LoadedImage`, `read_image`,
`write_image`, `to_float`, `from_float`, `DEFAULT_MAX_PIXELS`, `default_max_pixels`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from superres.atomic import atomic_write, describe_os_error
from superres.errors import ImageReadError, ImageWriteError
from superres.images import formats, pillow, png, tiff
from superres.images.decoded import Decoder, apply_orientation, upright_size
from superres.images.limits import DEFAULT_MAX_PIXELS, default_max_pixels
from superres.images.samples import from_float, to_float, uint16_to_uint8

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "READ_EXTENSIONS",
    "LoadedImage",
    "default_max_pixels",
    "flatten_for_format",
    "probe_image",
    "from_float",
    "list_images",
    "read_image",
    "to_float",
    "write_image",
]

logger = logging.getLogger(__name__)

#: Computed from the format table whenever they are looked up, so they cannot drift from it.
_DERIVED_FROM_THE_TABLE: dict[str, Callable[[], tuple[str, ...]]] = {
    "IMAGE_EXTENSIONS": formats.write_extensions,  # (".png", ".jpg", ".jpeg", ".bmp", ...)
    "READ_EXTENSIONS": formats.read_extensions,  # the same and ".gif"
}


def __getattr__(name: str) -> tuple[str, ...]:
    if name in _DERIVED_FROM_THE_TABLE:
        return _DERIVED_FROM_THE_TABLE[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_DERIVED_FROM_THE_TABLE})


class _OwnCodec(Protocol):
    """One of our own codecs (a module), which a format table row names in its `codec` column."""

    def own_decoder(self, fp: BinaryIO, path: Path) -> Decoder | None:
        """A decoder for the file in `fp` (header parsed), or None: a file Pillow reads. `fp` is
        left at its start when None."""

    def writes(self, pixels: np.ndarray) -> bool:
        """Whether it (rather than Pillow) writes these pixels."""

    def encode(self, pixels: np.ndarray, icc_profile: bytes | None) -> bytes:
        """A complete file for the pixels, in memory (`write_image` writes it atomically)."""


# Modules, looked up when used (a test may replace one of their functions).
_OWN_CODECS: dict[str, _OwnCodec] = {"png": png, "tiff": tiff}


# --------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly inside `folder`, sorted by name.

    Extensions are matched case-insensitively against `READ_EXTENSIONS`; hidden files are
    skipped (macOS "._name.png" resource forks and our own temporary files are not images).
    """
    folder = Path(folder)
    extensions = formats.read_extensions()
    if not folder.exists():
        raise ImageReadError(f"{folder}: folder not found")
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: not a folder")
    try:
        images = sorted(
            entry
            for entry in folder.iterdir()
            if entry.suffix.lower() in extensions
            and not entry.name.startswith(".")
            and entry.is_file()
        )
    except OSError as exc:  # an unreadable folder: one line naming it, not a traceback
        raise ImageReadError(f"{folder}: cannot list folder ({exc.strerror or exc})") from exc
    if not images:
        raise ImageReadError(f"{folder}: no images ({' '.join(extensions)}) in folder")
    return images


# --------------------------------------------------------------------------------------------
# Reading
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


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> LoadedImage:
    """Read an image file of any format `formats.FORMATS` reads into a `LoadedImage`.

    The file's content decides the format, not its extension. `max_pixels` (None: no limit)
    guards against decompression bombs: a tiny file that declares a gigantic canvas.
    Every problem with the file raises `ImageReadError` naming it.
    """
    path = Path(path)
    _check_is_nonempty_file(path)
    try:
        with open(path, "rb") as fp, _open_decoder(fp, path) as decoder:
            # Checked before a single pixel is decoded: this is the decompression bomb guard.
            _check_pixel_count(path, decoder.width, decoder.height, max_pixels)
            decoded = decoder.decode()
    except OSError as exc:
        # Only opening/reading the file itself lands here; decoder errors are handled inside.
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    pixels = apply_orientation(decoded.pixels, decoded.orientation)
    return LoadedImage(np.ascontiguousarray(pixels), decoded.icc_profile, path)


def probe_image(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """(width, height, bytes per decoded pixel at most) of an image file, read from its header:
    nothing is decoded, so a server can refuse by memory before it commits any. The size is the
    upright one `read_image` returns (an EXIF quarter turn swaps it) where the header tells the
    orientation, as JPEG's and TIFF's do."""
    path = Path(path)
    _check_is_nonempty_file(path)
    try:
        with open(path, "rb") as fp, _open_decoder(fp, path) as decoder:
            width, height = upright_size(decoder.width, decoder.height, decoder.orientation)
            return width, height, decoder.bytes_per_pixel
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror or exc})") from exc


def _open_decoder(fp: BinaryIO, path: Path) -> AbstractContextManager[Decoder]:
    """The codec path for the file in `fp`: the own codec of its format (by its magic bytes) if
    that codec takes the file, else Pillow."""
    head = fp.read(formats.head_length())
    fp.seek(0)
    image_format = formats.sniff(head)
    if image_format is not None and image_format.codec is not None:
        decoder = _OWN_CODECS[image_format.codec].own_decoder(fp, path)
        if decoder is not None:
            return contextlib.nullcontext(decoder)
    return pillow.open_decoder(fp, path)


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


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


#: The background an image with alpha is flattened onto for a format without alpha.
WHITE = (255, 255, 255)


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    quality: int = 95,
    background: tuple[int, int, int] = WHITE,
    replace: bool = True,
) -> None:
    """Write HW or HWC uint8/uint16 pixels to `path`, the format chosen by its extension.

    What each format can hold is its row in `formats.FORMATS`. 16 bits are kept where the format
    holds them (PNG, TIFF: any channel count); others get 8 bits, rounded, with a warning. Where a
    format cannot hold alpha (JPEG, BMP) the image is composited over `background` (8-bit RGB;
    white by default, as browsers and image editors flatten), with a warning, rather than its
    transparent pixels' leftover colours showing; an ICC profile it cannot hold is dropped, with a
    warning.
    `quality` (1..100) applies to JPEG and WebP. The write is atomic: a temporary file in the same
    folder is renamed over `path` only once complete, so a failure leaves any old file untouched.
    `replace=False`: never over an existing file, not even one another process wrote meanwhile
    (ImageWriteError saying so).
    """
    path = Path(path)
    image_format = _format_for_path(path)
    pixels = _validated_pixels(pixels, path)
    if not 1 <= quality <= 100:
        raise ImageWriteError(f"{path}: quality must be between 1 and 100, got {quality}")
    pixels = _fit_pixels_to_format(pixels, image_format, path, background)
    if icc_profile and not image_format.icc_profile:
        logger.warning("%s: %s cannot store an ICC profile; it is dropped", path, image_format.label)
        icc_profile = None
    codec = _OWN_CODECS[image_format.codec] if image_format.codec is not None else None
    if codec is not None and (codec.writes(pixels) or not image_format.pillow):
        encoded = codec.encode(pixels, icc_profile)
        _write_atomically(path, lambda fp: fp.write(encoded), replace)
    else:
        _write_atomically(
            path, lambda fp: pillow.save(fp, pixels, image_format.name, icc_profile, quality), replace
        )


def _format_for_path(path: Path) -> formats.ImageFormat:
    image_format = formats.for_extension(path.suffix)
    choices = " ".join(formats.write_extensions())
    if image_format is not None and not image_format.can_write:
        why = f" ({image_format.why_read_only})" if image_format.why_read_only else ""
        raise ImageWriteError(
            f"{path}: {image_format.label} is read but not written{why}; use one of {choices}"
        )
    if image_format is None:
        raise ImageWriteError(f"{path}: unknown image extension {path.suffix!r} (use one of {choices})")
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


def _fit_pixels_to_format(
    pixels: np.ndarray,
    image_format: formats.ImageFormat,
    path: Path,
    background: tuple[int, int, int] = WHITE,
) -> np.ndarray:
    """Flatten what the format cannot store (alpha: over `background`; 16 bits), with a warning."""
    pixels, lost = flatten_for_format(pixels, image_format, background)
    if "alpha" in lost:
        logger.warning(
            "%s: %s cannot store alpha; transparent areas composited on RGB %s (--background)",
            path, image_format.label, tuple(background),
        )
    if "16-bit" in lost:
        logger.warning(
            "%s: %s written with 8 bits per sample (16-bit input rounded)", path, image_format.label
        )
    return np.ascontiguousarray(pixels)


def flatten_for_format(
    pixels: np.ndarray, image_format: formats.ImageFormat, background: tuple[int, int, int] = WHITE
) -> tuple[np.ndarray, tuple[str, ...]]:
    """`pixels` (HW or HWC) as `image_format` can store them, and what was lost: "alpha"
    (composited over `background`) and "16-bit" (rounded to 8 bits). Callers word it their way."""
    lost = []
    if not image_format.alpha and pixels.ndim == 3 and pixels.shape[2] in (2, 4):
        pixels = composite_on(pixels, background)
        lost.append("alpha")
    if pixels.dtype == np.uint16 and not image_format.sixteen_bit:
        pixels = uint16_to_uint8(pixels)
        lost.append("16-bit")
    return pixels, tuple(lost)


def composite_on(pixels: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """HWC pixels with alpha (gray+alpha or RGBA) composited over an 8-bit RGB `background`
    (gray: its BT.601 luma), in the pixels' own type; straight (not premultiplied) alpha."""
    top = int(np.iinfo(pixels.dtype).max)
    colour = pixels[..., :-1].astype(np.float64)
    alpha = pixels[..., -1:].astype(np.float64) / top
    fill = np.asarray(background, dtype=np.float64) * (top / 255.0)
    if colour.shape[2] == 1:
        fill = np.array([fill @ np.array([0.299, 0.587, 0.114])])
    flat = colour * alpha + fill * (1.0 - alpha)
    return np.clip(np.floor(flat + 0.5), 0, top).astype(pixels.dtype)


def _write_atomically(path: Path, write_to: Callable[[BinaryIO], object], replace: bool = True) -> None:
    """`superres.atomic.atomic_write`, with file-system errors as one-line ImageWriteErrors."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageWriteError(
            f"{path}: cannot create folder {path.parent} ({exc.strerror or exc})"
        ) from exc
    try:
        atomic_write(path, write_to, replace=replace)
    except FileExistsError as exc:
        raise ImageWriteError(f"{path}: exists (another run wrote it meanwhile); not replaced") from exc
    except OSError as exc:
        raise ImageWriteError(f"{path}: cannot write image ({describe_os_error(exc)})") from exc
    except (ValueError, KeyError) as exc:
        raise ImageWriteError(f"{path}: cannot write image ({exc})") from exc
