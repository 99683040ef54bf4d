"""Tests for superres.images.tiff: 16-bit colour TIFFs through tifffile, in the layouts and
compressions other programs write, hand-made files, orientation and damaged files.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from image_helpers import (
    LogCapture,
    file_named,
    smooth_image,
    srgb_profile,
)
from superres.errors import ImageReadError
from superres.images import (
    read_image,
    write_image,
)
from superres.images.decoded import apply_orientation


def test_sixteen_bit_tiff_gray_is_kept(tmp_path: Path) -> None:
    pixels = smooth_image(6, 7, 1, np.uint16)
    write_image(tmp_path / "gray16.tiff", pixels)
    with Image.open(tmp_path / "gray16.tiff") as image:
        assert image.mode.startswith("I;16")


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_tiff_keeps_low_bytes(
    tmp_path: Path, caplog: LogCapture, channels: int
) -> None:
    # Values that differ only in the low byte: an 8-bit detour would merge them.
    pixels = np.arange(4 * 5 * channels).reshape(4, 5, channels).astype(np.uint16) * 7 + 40000
    path = tmp_path / "deep.tif"
    with caplog.at_level(logging.WARNING, logger="superres.images"):
        write_image(path, pixels, icc_profile=srgb_profile())
        loaded = read_image(path)
    assert caplog.text == ""
    assert loaded.bit_depth == 16 and loaded.icc_profile == srgb_profile()
    np.testing.assert_array_equal(loaded.pixels, pixels)


@pytest.mark.parametrize("channels", [3, 4])
def test_our_sixteen_bit_colour_tiff_reads_in_pillow(tmp_path: Path, channels: int) -> None:
    # Cross-check against libtiff through Pillow, which keeps the high byte of each sample.
    pixels = smooth_image(9, 11, channels, np.uint16)
    write_image(tmp_path / "deep.tif", pixels, icc_profile=srgb_profile())
    with Image.open(tmp_path / "deep.tif") as image:
        assert image.mode == ("RGB" if channels == 3 else "RGBA")
        assert image.info["icc_profile"] == srgb_profile()
        np.testing.assert_array_equal(np.array(image), (pixels >> 8).astype(np.uint8))


def test_big_endian_sixteen_bit_gray_tiff(tmp_path: Path) -> None:
    pixels = smooth_image(5, 4, 1, np.uint16)
    Image.fromarray(pixels[:, :, 0].astype(">u2")).save(tmp_path / "big_endian.tif")
    loaded = read_image(tmp_path / "big_endian.tif").pixels
    assert loaded.dtype == np.uint16 and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, pixels)


def lzw_literals(data: bytes) -> bytes:
    """TIFF LZW that codes every byte as a 9-bit literal: valid, uncompressed, easy to get right.

    A Clear code every 250 literals keeps the decoder's table (and so the code width) small.
    """
    clear, end_of_information = 256, 257
    codes = [clear]
    for start in range(0, len(data), 250):
        codes.extend(data[start : start + 250])
        codes.append(clear)
    codes.append(end_of_information)
    bits = "".join(f"{code:09b}" for code in codes)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def rgb16_tiff(pixels: np.ndarray, compression: int = 1, orientation: int = 1) -> bytes:
    """A minimal little-endian one-strip 16-bit RGB TIFF: 1 uncompressed, 5 LZW, 8 Deflate.

    Written by hand so that the test does not depend on the code under test, nor on an encoder
    tifffile only has with imagecodecs (LZW).
    """
    height, width, _ = pixels.shape
    raw = pixels.astype("<u2").tobytes()
    strip = {1: raw, 5: lzw_literals(raw), 8: zlib.compress(raw)}[compression]
    entries = [  # tag, type (3 SHORT, 4 LONG), count, value or offset
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, 8 + len(strip)),  # BitsPerSample: three values, stored after the strip
        (259, 3, 1, compression),
        (262, 3, 1, 2),  # RGB
        (273, 4, 1, 8),  # the strip starts right after the 8-byte header
        (274, 3, 1, orientation),
        (277, 3, 1, 3),
        (278, 4, 1, height),
        (279, 4, 1, len(strip)),
    ]
    bits_per_sample = struct.pack("<3H", 16, 16, 16)
    ifd_offset = 8 + len(strip) + len(bits_per_sample)
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        short_inline = kind == 3 and count == 1
        packed_value = struct.pack("<HH", value, 0) if short_inline else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed_value
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + strip + bits_per_sample + ifd


@pytest.mark.parametrize("compression", [1, 8])
def test_hand_made_sixteen_bit_colour_tiff(tmp_path: Path, compression: int) -> None:
    pixels = smooth_image(4, 6, 3, np.uint16)
    path = tmp_path / "rgb16.tif"
    path.write_bytes(rgb16_tiff(pixels, compression))
    loaded = read_image(path).pixels
    assert loaded.dtype == np.uint16
    np.testing.assert_array_equal(loaded, pixels)


def imagecodecs_is_installed() -> bool:
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def test_lzw_sixteen_bit_colour_tiff(tmp_path: Path, caplog: LogCapture) -> None:
    pixels = smooth_image(30, 20, 3, np.uint16)  # 3600 bytes: several Clear codes
    path = tmp_path / "lzw16.tif"
    path.write_bytes(rgb16_tiff(pixels, compression=5))
    with caplog.at_level(logging.WARNING, logger="superres.images"):
        loaded = read_image(path).pixels
    if imagecodecs_is_installed():
        np.testing.assert_array_equal(loaded, pixels)
    else:
        # tifffile needs imagecodecs for LZW: Pillow reads the file, at 8 bits, and we say so.
        assert "LZW-compressed 16-bit TIFF read as 8 bits" in caplog.text
        assert "imagecodecs" in caplog.text
        np.testing.assert_array_equal(loaded, (pixels >> 8).astype(np.uint8))


def tifffile_rgb16(path: Path, pixels: np.ndarray, **options: object) -> Path:
    tifffile.imwrite(path, pixels, photometric="rgb", metadata=None, **options)
    return path


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"compression": "zlib"},
        {"compression": "zlib", "predictor": True, "rowsperstrip": 3},
        {"compression": "adobe_deflate", "tile": (16, 16)},
        {"compression": "lzma"},
        {"byteorder": ">"},
        {"bigtiff": True},
    ],
    ids=["none", "deflate", "deflate-predictor-strips", "deflate-tiles", "lzma", "big-endian",
         "bigtiff"],
)
@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_tiff_written_by_tifffile(
    tmp_path: Path, options: dict[str, object], channels: int
) -> None:
    pixels = smooth_image(9, 7, channels, np.uint16)
    extrasamples = {"extrasamples": ["unassalpha"]} if channels == 4 else {}
    path = tifffile_rgb16(tmp_path / "other.tif", pixels, **options, **extrasamples)
    loaded = read_image(path).pixels
    assert loaded.dtype == np.uint16 and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, pixels)


def test_planar_sixteen_bit_colour_tiff(tmp_path: Path) -> None:
    pixels = smooth_image(5, 8, 3, np.uint16)
    planes = np.ascontiguousarray(np.moveaxis(pixels, -1, 0))
    path = tifffile_rgb16(tmp_path / "planar.tif", planes, planarconfig="separate")
    np.testing.assert_array_equal(read_image(path).pixels, pixels)


def test_premultiplied_alpha_is_made_straight(tmp_path: Path) -> None:
    straight = np.array([[[65535, 32768, 0, 32768], [1000, 2000, 3000, 0]]], dtype=np.uint16)
    premultiplied = np.array([[[32768, 16384, 0, 32768], [0, 0, 0, 0]]], dtype=np.uint16)
    path = tifffile_rgb16(tmp_path / "assoc.tif", premultiplied, extrasamples=["assocalpha"])
    expected = straight.copy()
    expected[0, 1, :3] = 0  # the colour of a fully transparent pixel is lost
    np.testing.assert_array_equal(read_image(path).pixels, expected)


def test_unspecified_extra_sample_is_dropped(tmp_path: Path) -> None:
    pixels = smooth_image(4, 5, 4, np.uint16)
    path = tifffile_rgb16(tmp_path / "rgbx.tif", pixels, extrasamples=["unspecified"])
    np.testing.assert_array_equal(read_image(path).pixels, pixels[:, :, :3])


def test_icc_profile_of_tifffile_written_file(tmp_path: Path) -> None:
    pixels = smooth_image(4, 5, 3, np.uint16)
    path = tifffile_rgb16(tmp_path / "tagged.tif", pixels, iccprofile=srgb_profile())
    assert read_image(path).icc_profile == srgb_profile()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_sixteen_bit_colour_tiff_orientation_matches_pillow(
    tmp_path: Path, orientation: int
) -> None:
    # The same picture at 8 bits goes through Pillow's exif_transpose: both must turn alike.
    pixels = (np.arange(3 * 5 * 3).reshape(3, 5, 3) * 1000 + 123).astype(np.uint16)
    deep = tmp_path / "deep.tif"
    deep.write_bytes(rgb16_tiff(pixels, orientation=orientation))
    shallow = tmp_path / "shallow.tif"
    Image.fromarray((pixels >> 8).astype(np.uint8)).save(shallow, tiffinfo={274: orientation})
    turned = read_image(deep).pixels
    np.testing.assert_array_equal(turned >> 8, read_image(shallow).pixels)
    np.testing.assert_array_equal(turned, apply_orientation(pixels, orientation))


def test_sixteen_bit_colour_tiff_with_too_few_uncompressed_bytes(tmp_path: Path) -> None:
    # The strip's byte count says less than the image needs: tifffile alone would pad with zeros.
    data = bytearray(rgb16_tiff(smooth_image(4, 6, 3, np.uint16)))
    strip_byte_count_value = data.rindex(struct.pack("<HHI", 279, 4, 1)) + 8
    data[strip_byte_count_value : strip_byte_count_value + 4] = struct.pack("<I", 100)
    path = tmp_path / "short.tif"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: truncated TIFF .*100 of 144"):
        read_image(path)


def test_sixteen_bit_colour_tiff_with_garbage_deflate_data(tmp_path: Path) -> None:
    data = bytearray(rgb16_tiff(smooth_image(4, 6, 3, np.uint16), compression=8))
    data[10:30] = bytes(range(20))  # inside the one Deflate strip
    path = tmp_path / "garbage.tif"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=f"^{file_named(path)}: truncated or corrupt TIFF"):
        read_image(path)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, before it gives up
def test_sixteen_bit_colour_tiff_cut_inside_its_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    write_image(path, smooth_image(4, 6, 3, np.uint16))
    path.write_bytes(path.read_bytes()[:12])
    # tifffile cannot parse it either way: Pillow reports it as it does any broken TIFF.
    with pytest.raises(ImageReadError, match=f"^{file_named(path)}: "):
        read_image(path)
