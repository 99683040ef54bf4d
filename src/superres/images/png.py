"""Our own PNG codec (pure numpy + zlib), for what Pillow cannot represent.

Pillow has no 16-bit gray+alpha, RGB or RGBA mode and would silently drop the low byte of every
sample of such a PNG. `read_image` therefore decodes those files here (`own_decoder`; the format
table's PNG row names this codec), and `write_image` encodes every 16-bit PNG here (`writes`).
The decoder covers every non-palette 8/16-bit layout, all five filter types, Adam7 interlacing,
iCCP, eXIf and tRNS colour keys; it checks every chunk's CRC and inflates no more than the header
promised (a zlib bomb stops there).

`open_decoder` parses the chunks (the size is then known), `.decode()` inflates and unfilters
them; orientation is returned, not applied (see `superres.images.decoded`). `encode` writes a
complete file in memory, which `write_image` then writes atomically.
"""

from __future__ import annotations

import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from superres.errors import ImageReadError
from superres.images import formats
from superres.images.decoded import Decoded
from superres.images.pillow import orientation_from_exif

logger = logging.getLogger(__name__)

#: The 8 bytes every PNG file starts with (the format table's magic for PNG).
SIGNATURE = formats.PNG.magic[0].prefix
_CHANNELS_BY_COLOUR_TYPE = {0: 1, 2: 3, 4: 2, 6: 4}
COLOUR_TYPE_BY_CHANNELS = {1: 0, 2: 4, 3: 2, 4: 6}
# Adam7 passes: (first column, first row, column step, row step).
_ADAM7_PASSES = (
    (0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)
)
#: Bytes of compressed data per IDAT chunk that `encode` writes.
IDAT_CHUNK_BYTES = 1 << 20
# Rows filtered at once: bounds the int16 working copy of a large image.
_FILTER_BLOCK_ROWS = 64


def own_decoder(fp: BinaryIO, path: Path) -> PngDecoder | None:
    """The PNG in `fp`, header parsed, if it is one Pillow would cut to 8 bits; else None (Pillow
    reads it). `fp` is left at its start when None."""
    return open_decoder(fp.read(), path) if needs_own_decoder(fp) else None


def writes(pixels: np.ndarray) -> bool:
    """True for the pixels written here rather than by Pillow: every 16-bit PNG."""
    return pixels.dtype == np.uint16


def needs_own_decoder(fp: BinaryIO) -> bool:
    """True for PNGs with 16 bits per sample and more than one channel (Pillow keeps 8 of them).

    `fp` is left at its start.
    """
    header = fp.read(len(SIGNATURE) + 8 + 13)
    fp.seek(0)
    if len(header) < 29 or not header.startswith(SIGNATURE) or header[12:16] != b"IHDR":
        return False
    bit_depth, colour_type = header[24], header[25]
    return bit_depth == 16 and colour_type in (2, 4, 6)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _chunks(data: bytes, path: Path) -> Iterator[tuple[bytes, bytes]]:
    """(type, body) for each chunk, CRC-checked; stops after IEND or at the end of the data."""
    if not data.startswith(SIGNATURE):
        raise ImageReadError(f"{path}: not a PNG file")
    position = len(SIGNATURE)
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
class _Header:
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


def _parse_header(body: bytes, path: Path) -> _Header:
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
        raise ImageReadError(
            f"{path}: corrupt PNG header (size {width}x{height}, methods "
            f"{compression}/{filter_method}/{interlace})"
        )
    return _Header(width, height, bit_depth, colour_type, interlaced=interlace == 1)


@dataclass(frozen=True)
class PngDecoder:
    """A PNG whose chunks are read and checked; nothing inflated yet (see `Decoder`)."""

    header: _Header
    image_data: bytes  # the IDAT chunks, joined
    icc_profile: bytes | None
    orientation: int
    colour_key: bytes | None
    path: Path

    @property
    def width(self) -> int:
        return self.header.width

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def bytes_per_pixel(self) -> int:
        # A colour key (tRNS on gray or RGB) becomes an alpha channel.
        channels = self.header.channels + (self.colour_key is not None)
        return channels * (2 if self.header.bit_depth == 16 else 1)

    def decode(self) -> Decoded:
        pixels = _decode_pixels(self.image_data, self.header, self.path)
        if self.colour_key is not None and self.header.colour_type in (0, 2):
            pixels = _alpha_from_colour_key(pixels, self.colour_key, self.header)
        return Decoded(pixels, self.icc_profile, self.orientation)


def open_decoder(data: bytes, path: Path) -> PngDecoder:
    """Read the chunks of a non-palette 8/16-bit PNG file's `data`; ImageReadError if damaged."""
    header: _Header | None = None
    idat_parts: list[bytes] = []
    icc_profile: bytes | None = None
    orientation = 1
    colour_key: bytes | None = None
    for chunk_type, body in _chunks(data, path):
        if chunk_type == b"IHDR":
            header = _parse_header(body, path)
        elif chunk_type == b"IDAT":
            idat_parts.append(body)
        elif chunk_type == b"iCCP":
            icc_profile = _icc_profile_from_chunk(body, path)
        elif chunk_type == b"eXIf":
            orientation = orientation_from_exif(body)
        elif chunk_type == b"tRNS":
            colour_key = body
    if header is None:
        raise ImageReadError(f"{path}: corrupt PNG (no IHDR chunk)")
    if not idat_parts:
        raise ImageReadError(f"{path}: truncated PNG (no image data)")
    return PngDecoder(header, b"".join(idat_parts), icc_profile, orientation, colour_key, path)


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


def _alpha_from_colour_key(pixels: np.ndarray, colour_key: bytes, header: _Header) -> np.ndarray:
    """tRNS on a gray/RGB PNG names one fully transparent colour: turn it into an alpha channel."""
    samples = struct.unpack(f">{header.channels}H", colour_key[: 2 * header.channels])
    maximum = np.iinfo(pixels.dtype).max
    transparent = np.all(pixels == np.asarray(samples, dtype=pixels.dtype), axis=2, keepdims=True)
    alpha = np.where(transparent, 0, maximum).astype(pixels.dtype)
    return np.concatenate([pixels, alpha], axis=2)


def adam7_pass_sizes(width: int, height: int) -> list[tuple[int, int, int, int, int, int]]:
    """(x0, y0, dx, dy, pass width, pass height) for each non-empty Adam7 pass."""
    sizes = []
    for x0, y0, dx, dy in _ADAM7_PASSES:
        pass_width = (width - x0 + dx - 1) // dx if width > x0 else 0
        pass_height = (height - y0 + dy - 1) // dy if height > y0 else 0
        if pass_width and pass_height:
            sizes.append((x0, y0, dx, dy, pass_width, pass_height))
    return sizes


def _decode_pixels(compressed: bytes, header: _Header, path: Path) -> np.ndarray:
    bpp = header.bytes_per_pixel
    if header.interlaced:
        passes = adam7_pass_sizes(header.width, header.height)
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


def _predictions(
    kind: np.ndarray, left: np.ndarray, up: np.ndarray, up_left: np.ndarray
) -> np.ndarray:
    """What PNG filter type `kind` (0..4, broadcast) predicts from the neighbours (int16)."""
    return np.select(
        [kind == 1, kind == 2, kind == 3, kind == 4],
        [left, up, (left + up) >> 1, _paeth_predictor(left, up, up_left)],
        default=0,
    )


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
        left, up, up_left = recon[ys + 1, xs], recon[ys, xs + 1], recon[ys, xs]
        prediction = _predictions(types16[ys][:, np.newaxis], left, up, up_left)
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
# Encoding, used for every 16-bit PNG
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


def filter_scanlines(rows: np.ndarray, bpp: int, filter_types: np.ndarray) -> np.ndarray:
    """Apply PNG filter `filter_types[y]` to each byte row -> (rows, 1 + row bytes) uint8."""
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = filter_types
    for start, block, previous_row in _row_blocks(rows):
        left, up, up_left = _neighbours(block, previous_row, bpp)
        kind = np.asarray(filter_types[start : start + block.shape[0]])[:, np.newaxis]
        prediction = _predictions(kind, left, up, up_left)
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


def chunk(chunk_type: bytes, body: bytes) -> bytes:
    """One complete chunk: length, type, body and CRC."""
    crc = zlib.crc32(chunk_type + body)
    return struct.pack(">I", len(body)) + chunk_type + body + struct.pack(">I", crc)


def encode(
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
    compressed = zlib.compress(filter_scanlines(rows, bpp, filter_types).tobytes(), 6)
    colour_type = COLOUR_TYPE_BY_CHANNELS[channels]
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = [chunk(b"IHDR", header)]
    if icc_profile:
        chunks.append(chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc_profile)))
    for start in range(0, len(compressed), IDAT_CHUNK_BYTES):
        chunks.append(chunk(b"IDAT", compressed[start : start + IDAT_CHUNK_BYTES]))
    chunks.append(chunk(b"IEND", b""))
    return SIGNATURE + b"".join(chunks)
