"""Tests for superres.images.png, our own PNG codec: against Pillow, every filter type, Adam7,
colour keys, and damaged or hostile files crafted chunk by chunk.
"""

from __future__ import annotations

import io as bytes_io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_helpers import (
    RNG_SEED,
    LogCapture,
    MonkeyPatch,
    exif_with_orientation,
    file_named,
    leftover_temporaries,
    pillow_image,
    png_with_extra_chunk,
    smooth_image,
)
from superres import images
from superres.errors import ImageReadError
from superres.images import (
    png,
    read_image,
    write_image,
)


def test_sixteen_bit_png_keeps_low_bytes(tmp_path: Path) -> None:
    # Values that differ only in the low byte: an 8-bit detour would merge them.
    pixels = (np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 7 + 40000).astype(np.uint16)
    write_image(tmp_path / "deep.png", pixels)
    loaded = read_image(tmp_path / "deep.png")
    assert loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.pixels, pixels)


def test_exif_orientation_in_sixteen_bit_png(tmp_path: Path) -> None:
    pixels = smooth_image(4, 7, 3, np.uint16)
    encoded = png.encode(pixels, None)
    path = tmp_path / "rotated16.png"
    path.write_bytes(png_with_extra_chunk(encoded, png.chunk(b"eXIf", exif_with_orientation(6))))
    loaded = read_image(path).pixels
    np.testing.assert_array_equal(loaded, np.rot90(pixels, k=-1))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_own_decoder_matches_pillow_on_pillow_files(channels: int) -> None:
    pixels = smooth_image(21, 26, channels)
    buffer = bytes_io.BytesIO()
    pillow_image(pixels).save(buffer, format="PNG")  # Pillow's adaptive filtering uses all five
    decoded = png.open_decoder(buffer.getvalue(), Path("mem.png")).decode().pixels
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_own_codec_every_filter_type(channels: int, dtype: type) -> None:
    pixels = smooth_image(15, 12, channels, dtype)
    filter_types = np.arange(15) % 5
    encoded = png.encode(pixels, None, filter_types)
    decoded = png.open_decoder(encoded, Path("mem.png")).decode().pixels
    np.testing.assert_array_equal(decoded, pixels)
    if dtype == np.uint8:
        with Image.open(bytes_io.BytesIO(encoded)) as image:
            np.testing.assert_array_equal(np.array(image).reshape(pixels.shape), pixels)


def interlaced_png(pixels: np.ndarray) -> bytes:
    """An Adam7 PNG of HWC uint16 pixels, built from the encoder's pieces."""
    height, width, channels = pixels.shape
    bpp = channels * 2
    scanlines = []
    for x0, y0, dx, dy, _, pass_height in png.adam7_pass_sizes(width, height):
        sub_image = np.ascontiguousarray(pixels[y0::dy, x0::dx].astype(">u2"))
        rows = sub_image.view(np.uint8).reshape(pass_height, -1)
        scanlines.append(png.filter_scanlines(rows, bpp, np.arange(pass_height) % 5).tobytes())
    colour_type = png.COLOUR_TYPE_BY_CHANNELS[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 1)
    return (
        png.SIGNATURE
        + png.chunk(b"IHDR", header)
        + png.chunk(b"IDAT", zlib.compress(b"".join(scanlines)))
        + png.chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("height", "width"), [(11, 13), (1, 1), (3, 9)])
def test_interlaced_sixteen_bit_png(tmp_path: Path, height: int, width: int) -> None:
    pixels = smooth_image(height, width, 3, np.uint16)
    path = tmp_path / "interlaced.png"
    path.write_bytes(interlaced_png(pixels))
    np.testing.assert_array_equal(read_image(path).pixels, pixels)


def test_sixteen_bit_colour_key_becomes_alpha(tmp_path: Path) -> None:
    pixels = smooth_image(4, 4, 3, np.uint16)
    key = pixels[1, 2]
    encoded = png.encode(pixels, None)
    path = tmp_path / "keyed16.png"
    path.write_bytes(png_with_extra_chunk(encoded, png.chunk(b"tRNS", struct.pack(">3H", *key))))
    loaded = read_image(path).pixels
    assert loaded.shape == (4, 4, 4)
    np.testing.assert_array_equal(loaded[:, :, 3] == 0, np.all(pixels == key, axis=2))
    assert set(np.unique(loaded[:, :, 3])) <= {0, 65535}


def test_corrupt_crc_in_sixteen_bit_png(tmp_path: Path) -> None:
    path = tmp_path / "bad_crc.png"
    write_image(path, smooth_image(4, 4, 3, np.uint16))
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # inside the first IDAT's data
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: corrupt PNG"):
        read_image(path)


@pytest.mark.parametrize(("bit_depth", "colour_type"), [(8, 0), (8, 2), (16, 2)])
def test_decompression_bomb_header_is_refused_before_decoding(
    tmp_path: Path, bit_depth: int, colour_type: int
) -> None:
    # A 100 000 x 100 000 canvas declared by a file of a few dozen bytes.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, bit_depth, colour_type, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        png.SIGNATURE
        + png.chunk(b"IHDR", header)
        + png.chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + png.chunk(b"IEND", b"")
    )
    expected = f"{file_named(path)}: 100000x100000 = .* exceeds the limit of {images.DEFAULT_MAX_PIXELS}"
    with pytest.raises(ImageReadError, match=expected):
        read_image(path)


def test_sixteen_bit_png_over_many_idat_chunks(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(png, "IDAT_CHUNK_BYTES", 16)
    pixels = smooth_image(9, 10, 4, np.uint16)
    path = tmp_path / "many_chunks.png"
    write_image(path, pixels)
    assert path.read_bytes().count(b"IDAT") > 3
    np.testing.assert_array_equal(read_image(path).pixels, pixels)


def test_sixteen_bit_png_cut_between_idat_chunks(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(png, "IDAT_CHUNK_BYTES", 64)
    rng = np.random.default_rng(RNG_SEED)
    path = tmp_path / "cut.png"
    write_image(path, rng.integers(0, 65535, (16, 16, 3), dtype=np.uint16))
    data = path.read_bytes()
    second_idat = data.index(b"IDAT", data.index(b"IDAT") + 4) - 4  # its length field
    path.write_bytes(data[:second_idat])
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: truncated PNG image data"):
        read_image(path)


def sixteen_bit_png_with_idat(payload: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", 2, 2, 16, 2, 0, 0, 0)
    return (
        png.SIGNATURE
        + png.chunk(b"IHDR", header)
        + png.chunk(b"IDAT", payload)
        + png.chunk(b"IEND", b"")
    )


def test_sixteen_bit_png_with_unknown_filter_type(tmp_path: Path) -> None:
    path = tmp_path / "bad_filter.png"
    # Two scanlines of 2 RGB16 pixels (12 bytes), the first claiming filter type 7.
    scanlines = b"\x07" + bytes(12) + b"\x00" + bytes(12)
    path.write_bytes(sixteen_bit_png_with_idat(zlib.compress(scanlines)))
    expected = f"{file_named(path)}: corrupt PNG \\(unknown scanline filter type 7"
    with pytest.raises(ImageReadError, match=expected):
        read_image(path)


def test_sixteen_bit_png_with_garbage_image_data(tmp_path: Path) -> None:
    path = tmp_path / "garbage.png"
    path.write_bytes(sixteen_bit_png_with_idat(b"this is not zlib data"))
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: corrupt PNG image data"):
        read_image(path)


def test_sixteen_bit_png_with_broken_icc_chunk_reads(tmp_path: Path, caplog: LogCapture) -> None:
    pixels = smooth_image(3, 3, 3, np.uint16)
    path = tmp_path / "broken_icc.png"
    broken_icc = png.chunk(b"iCCP", b"name\x00\x00garbage")
    path.write_bytes(png_with_extra_chunk(png.encode(pixels, None), broken_icc))
    with caplog.at_level(logging.WARNING, logger="superres.images"):
        loaded = read_image(path)
    assert loaded.icc_profile is None and "iCCP" in caplog.text
    np.testing.assert_array_equal(loaded.pixels, pixels)


def test_bug_in_encoder_propagates_and_cleans_up(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    def broken_encoder(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(png, "encode", broken_encoder)
    path = tmp_path / "deep.png"
    with pytest.raises(RuntimeError, match="a bug"):
        write_image(path, np.zeros((3, 3, 3), np.uint16))
    assert not path.exists() and leftover_temporaries(tmp_path) == []
