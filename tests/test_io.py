"""Tests for superres.io: reading, writing and listing image files.

Every image is synthetic and tiny, made in `tmp_path`; Pillow writes the files our writer never
produces (palette, 1-bit, CMYK, float), tifffile the 16-bit colour TIFFs in other layouts and
compressions, and the PNG chunk and TIFF helpers craft the hostile ones.
"""

from __future__ import annotations

import io as bytes_io
import logging
import os
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms, ImageOps

from superres import io as sio
from superres.errors import ImageReadError, ImageWriteError, SuperresError
from superres.io import (
    IMAGE_EXTENSIONS,
    LoadedImage,
    from_float,
    list_images,
    read_image,
    to_float,
    write_image,
)

RNG_SEED = 1234
LogCapture = pytest.LogCaptureFixture
MonkeyPatch = pytest.MonkeyPatch


def smooth_image(height: int, width: int, channels: int, dtype: type = np.uint8) -> np.ndarray:
    """A smooth, slightly noisy HWC image: lossy codecs stay close, PNG filters all get used."""
    rng = np.random.default_rng(RNG_SEED)
    y, x = np.mgrid[0:height, 0:width]
    base = (np.sin(x / 5.0) + np.cos(y / 4.0) + 2.0) / 4.0
    weights = np.linspace(0.4, 1.0, channels)
    values = base[:, :, np.newaxis] * weights + rng.normal(0.0, 0.01, (height, width, channels))
    return from_float(values, dtype)


def pillow_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)


def file_named(path: Path) -> str:
    """A regex matching the path in an error message."""
    return re.escape(str(path))


def leftover_temporaries(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if ".tmp-" in entry.name]


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_with_extra_chunk(png: bytes, chunk: bytes) -> bytes:
    """Insert a ready-made chunk right after IHDR (signature 8 bytes + IHDR 25 bytes)."""
    return png[:33] + chunk + png[33:]


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# --------------------------------------------------------------------------------------------
# list_images
# --------------------------------------------------------------------------------------------


def test_list_images_sorted_case_insensitive_and_filtered(tmp_path: Path) -> None:
    images = ["b.PNG", "a.jpg", "c.TIFF", "d.webp", "e.Jpeg", "f.bmp", "g.tif"]
    for name in [*images, "notes.txt", ".hidden.png"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()
    names = [path.name for path in list_images(tmp_path)]
    assert names == ["a.jpg", "b.PNG", "c.TIFF", "d.webp", "e.Jpeg", "f.bmp", "g.tif"]
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def test_list_images_accepts_str(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"x")
    assert list_images(str(tmp_path)) == [tmp_path / "x.png"]


def test_list_images_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ImageReadError, match=f"{file_named(missing)}: folder not found"):
        list_images(missing)


def test_list_images_not_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "image.png"
    file.write_bytes(b"x")
    with pytest.raises(ImageReadError, match=f"{file_named(file)}: not a folder"):
        list_images(file)


def test_list_images_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ImageReadError, match=f"{file_named(tmp_path)}: no images"):
        list_images(tmp_path)


# --------------------------------------------------------------------------------------------
# LoadedImage
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "dtype", "has_alpha", "is_gray", "bit_depth"),
    [
        (1, np.uint8, False, True, 8),
        (2, np.uint16, True, True, 16),
        (3, np.uint8, False, False, 8),
        (4, np.uint16, True, False, 16),
    ],
)
def test_loaded_image_properties(
    channels: int, dtype: type, has_alpha: bool, is_gray: bool, bit_depth: int
) -> None:
    pixels = np.zeros((2, 3, channels), dtype)
    image = LoadedImage(pixels=pixels, icc_profile=None, path=Path("x.png"))
    assert (image.has_alpha, image.is_gray, image.bit_depth) == (has_alpha, is_gray, bit_depth)


# --------------------------------------------------------------------------------------------
# Round trips through our writer and reader
# --------------------------------------------------------------------------------------------

LOSSLESS_ROUND_TRIPS = [
    *[(".png", channels, np.uint8) for channels in (1, 2, 3, 4)],
    *[(".png", channels, np.uint16) for channels in (1, 2, 3, 4)],
    *[(ext, channels, np.uint8) for ext in (".tif", ".tiff") for channels in (1, 2, 3, 4)],
    *[(ext, channels, np.uint16) for ext in (".tif", ".tiff") for channels in (1, 2, 3, 4)],
    (".bmp", 1, np.uint8),
    (".bmp", 3, np.uint8),
]


@pytest.mark.parametrize(("extension", "channels", "dtype"), LOSSLESS_ROUND_TRIPS)
def test_lossless_round_trip(tmp_path: Path, extension: str, channels: int, dtype: type) -> None:
    pixels = smooth_image(13, 17, channels, dtype)
    path = tmp_path / f"image{extension}"
    write_image(path, pixels)
    loaded = read_image(path)
    assert loaded.pixels.dtype == dtype
    assert loaded.pixels.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(loaded.pixels, pixels)
    assert loaded.path == path


@pytest.mark.parametrize(
    ("extension", "channels", "expected_channels"),
    [
        (".jpg", 1, 1),
        (".jpeg", 3, 3),
        (".webp", 3, 3),
        (".webp", 4, 4),
        (".webp", 1, 3),  # WebP has no gray: it comes back as RGB
        (".webp", 2, 4),
    ],
)
def test_lossy_round_trip_stays_close(
    tmp_path: Path, extension: str, channels: int, expected_channels: int
) -> None:
    pixels = smooth_image(24, 32, channels)
    path = tmp_path / f"image{extension}"
    write_image(path, pixels, quality=95)
    loaded = read_image(path).pixels
    assert loaded.shape == (24, 32, expected_channels) and loaded.dtype == np.uint8
    colour = loaded[:, :, : expected_channels - (1 if expected_channels in (2, 4) else 0)]
    source_colour = pixels[:, :, : channels - (1 if channels in (2, 4) else 0)]
    assert np.abs(colour.astype(int) - source_colour.astype(int)).mean() < 3.0
    if channels in (2, 4):  # WebP keeps alpha losslessly by default
        np.testing.assert_array_equal(loaded[:, :, -1], pixels[:, :, -1])


def test_two_dimensional_pixels_are_gray(tmp_path: Path) -> None:
    pixels = smooth_image(5, 6, 1)[:, :, 0]
    write_image(tmp_path / "gray.png", pixels)
    np.testing.assert_array_equal(read_image(tmp_path / "gray.png").pixels[:, :, 0], pixels)


def test_sixteen_bit_png_keeps_low_bytes(tmp_path: Path) -> None:
    # Values that differ only in the low byte: an 8-bit detour would merge them.
    pixels = (np.arange(4 * 5 * 3, dtype=np.uint16).reshape(4, 5, 3) * 7 + 40000).astype(np.uint16)
    write_image(tmp_path / "deep.png", pixels)
    loaded = read_image(tmp_path / "deep.png")
    assert loaded.bit_depth == 16
    np.testing.assert_array_equal(loaded.pixels, pixels)


def test_sixteen_bit_gray_png_written_by_pillow(tmp_path: Path) -> None:
    pixels = smooth_image(9, 11, 1, np.uint16)
    Image.fromarray(pixels[:, :, 0]).save(tmp_path / "gray16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "gray16.png").pixels, pixels)


def test_our_sixteen_bit_gray_png_reads_in_pillow(tmp_path: Path) -> None:
    # Cross-check of our encoder against an independent decoder.
    pixels = smooth_image(9, 11, 1, np.uint16)
    write_image(tmp_path / "gray16.png", pixels)
    with Image.open(tmp_path / "gray16.png") as image:
        np.testing.assert_array_equal(np.array(image).astype(np.uint16), pixels[:, :, 0])


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
    with caplog.at_level(logging.WARNING, logger="superres.io"):
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


def test_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "image.png"
    write_image(path, smooth_image(3, 3, 3))
    assert path.is_file()


def test_written_file_follows_umask(tmp_path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    write_image(tmp_path / "image.png", smooth_image(3, 3, 3))
    assert (tmp_path / "image.png").stat().st_mode & 0o777 == 0o666 & ~umask


def test_overwrite_replaces_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    write_image(path, np.zeros((3, 3, 3), np.uint8))
    write_image(path, np.full((4, 4, 3), 200, np.uint8))
    np.testing.assert_array_equal(read_image(path).pixels, np.full((4, 4, 3), 200, np.uint8))
    assert leftover_temporaries(tmp_path) == []


# --------------------------------------------------------------------------------------------
# What formats cannot hold: 16 bits and alpha
# --------------------------------------------------------------------------------------------


def test_uint16_to_jpeg_gives_rounded_eight_bit(tmp_path: Path, caplog: LogCapture) -> None:
    # 257 * 100 + 129 rounds up to 101; truncation (>> 8 or // 257) would give 100. A flat image
    # survives JPEG exactly (only the DC coefficient, which quality 95 quantizes finely enough).
    pixels = np.full((16, 16, 1), 257 * 100 + 129, np.uint16)
    with caplog.at_level(logging.WARNING, logger="superres.io"):
        write_image(tmp_path / "flat.jpg", pixels)
    assert "8 bits" in caplog.text
    loaded = read_image(tmp_path / "flat.jpg")
    assert loaded.pixels.dtype == np.uint8
    np.testing.assert_array_equal(loaded.pixels, np.full((16, 16, 1), 101, np.uint8))


def test_uint16_to_eight_bit_rounding_is_exact_over_full_range(tmp_path: Path) -> None:
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256, 1)
    write_image(tmp_path / "ramp.bmp", levels)  # BMP is lossless, so the rounding is visible as is
    expected = np.round(levels.astype(np.float64) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "ramp.bmp").pixels, expected)


@pytest.mark.parametrize(
    ("extension", "channels"), [(".jpg", 4), (".jpg", 2), (".bmp", 4), (".bmp", 2)]
)
def test_alpha_dropped_with_warning(
    tmp_path: Path, caplog: LogCapture, extension: str, channels: int
) -> None:
    pixels = smooth_image(8, 8, channels)
    with caplog.at_level(logging.WARNING, logger="superres.io"):
        write_image(tmp_path / f"image{extension}", pixels)
    assert "alpha" in caplog.text
    assert read_image(tmp_path / f"image{extension}").pixels.shape == (8, 8, channels - 1)


def test_icc_profile_dropped_for_bmp(tmp_path: Path, caplog: LogCapture) -> None:
    with caplog.at_level(logging.WARNING, logger="superres.io"):
        write_image(tmp_path / "image.bmp", smooth_image(4, 4, 3), icc_profile=srgb_profile())
    assert "ICC" in caplog.text
    assert read_image(tmp_path / "image.bmp").icc_profile is None


# --------------------------------------------------------------------------------------------
# Modes written by other programs
# --------------------------------------------------------------------------------------------


def palette_image(with_transparency: bool) -> tuple[Image.Image, np.ndarray]:
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    indices = np.tile(np.arange(4, dtype=np.uint8), (3, 2))
    image = Image.frombytes("P", (indices.shape[1], indices.shape[0]), indices.tobytes())
    image.putpalette(colours.flatten().tolist())
    if with_transparency:
        image.info["transparency"] = 2  # palette entry 2 (blue) is transparent
    return image, colours[indices]


@pytest.mark.parametrize("with_transparency", [False, True])
def test_palette_png(tmp_path: Path, with_transparency: bool) -> None:
    image, expected_rgb = palette_image(with_transparency)
    options = {"transparency": 2} if with_transparency else {}
    image.save(tmp_path / "palette.png", **options)
    pixels = read_image(tmp_path / "palette.png").pixels
    if with_transparency:
        assert pixels.shape[2] == 4
        np.testing.assert_array_equal(pixels[:, :, :3], expected_rgb)
        np.testing.assert_array_equal(pixels[:, :, 3] == 0, np.tile(np.arange(4), (3, 2)) == 2)
    else:
        assert pixels.shape[2] == 3
        np.testing.assert_array_equal(pixels, expected_rgb)


@pytest.mark.parametrize("extension", [".bmp", ".tif"])
def test_palette_in_other_formats_becomes_rgb(tmp_path: Path, extension: str) -> None:
    image, expected_rgb = palette_image(with_transparency=False)
    image.save(tmp_path / f"palette{extension}")
    np.testing.assert_array_equal(read_image(tmp_path / f"palette{extension}").pixels, expected_rgb)


def test_la_png_written_by_pillow(tmp_path: Path) -> None:
    pixels = smooth_image(5, 6, 2)
    Image.fromarray(pixels).save(tmp_path / "la.png")
    loaded = read_image(tmp_path / "la.png")
    assert loaded.is_gray and loaded.has_alpha
    np.testing.assert_array_equal(loaded.pixels, pixels)


@pytest.mark.parametrize(("mode", "key", "expected_channels"), [("L", 5, 2), ("RGB", (5, 5, 5), 4)])
def test_colour_key_transparency_becomes_alpha(
    tmp_path: Path, mode: str, key: object, expected_channels: int
) -> None:
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4)
    image = Image.fromarray(gray) if mode == "L" else Image.fromarray(np.stack([gray] * 3, axis=2))
    image.save(tmp_path / "keyed.png", transparency=key)
    pixels = read_image(tmp_path / "keyed.png").pixels
    assert pixels.shape[2] == expected_channels
    np.testing.assert_array_equal(pixels[:, :, -1] == 0, gray == 5)


@pytest.mark.parametrize("extension", [".png", ".bmp", ".tif"])
def test_one_bit_image_becomes_gray(tmp_path: Path, extension: str) -> None:
    bits = (np.indices((6, 9)).sum(axis=0) % 2).astype(bool)
    Image.fromarray(bits).save(tmp_path / f"bits{extension}")
    pixels = read_image(tmp_path / f"bits{extension}").pixels
    assert pixels.shape == (6, 9, 1) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[:, :, 0], np.where(bits, 255, 0))


@pytest.mark.parametrize("extension", [".jpg", ".tif"])
def test_cmyk_becomes_rgb_without_its_profile(tmp_path: Path, extension: str) -> None:
    cmyk = np.zeros((4, 4, 4), np.uint8)
    cmyk[:, :, 1] = 255  # pure magenta ink
    image = Image.frombytes("CMYK", (4, 4), cmyk.tobytes())
    image.save(tmp_path / f"cmyk{extension}", icc_profile=b"not really a CMYK profile")
    loaded = read_image(tmp_path / f"cmyk{extension}")
    assert loaded.pixels.shape == (4, 4, 3)
    assert loaded.icc_profile is None
    red, green, blue = (int(value) for value in loaded.pixels[0, 0])
    assert red > 200 and green < 60 and blue > 200


def test_int32_gray_in_range_becomes_uint16(tmp_path: Path) -> None:
    values = np.array([[0, 1000], [40000, 65535]], np.int32)
    Image.fromarray(values).save(tmp_path / "int32.tif")
    loaded = read_image(tmp_path / "int32.tif")
    assert loaded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(loaded.pixels[:, :, 0], values)


def test_int32_gray_out_of_range_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "negative.tif"
    Image.fromarray(np.array([[-5, 70000]], np.int32)).save(path)
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: unsupported pixel mode 'I'"):
        read_image(path)


def test_float_image_is_unsupported_mode(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((3, 3), np.float32)).save(path)
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: unsupported pixel mode 'F'"):
        read_image(path)


def test_content_decides_format_not_extension(tmp_path: Path) -> None:
    pixels = smooth_image(4, 5, 3)
    Image.fromarray(pixels).save(tmp_path / "really_a_png.jpg", format="PNG")
    np.testing.assert_array_equal(read_image(tmp_path / "really_a_png.jpg").pixels, pixels)


# --------------------------------------------------------------------------------------------
# EXIF orientation and ICC profiles
# --------------------------------------------------------------------------------------------


def test_exif_orientation_six_rotates_jpeg(tmp_path: Path) -> None:
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :5] = 255  # a white band on the left edge
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif_with_orientation(6), quality=95)
    loaded = read_image(path).pixels
    assert loaded.shape == (20, 10, 3)
    # Orientation 6 means "turn 90 degrees clockwise to view": the left edge becomes the top.
    assert loaded[:5].mean() > 200 and loaded[-5:].mean() < 50


@pytest.mark.parametrize("orientation", range(1, 9))
def test_own_orientation_matches_pillow(orientation: int) -> None:
    pixels = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    image = Image.fromarray(pixels)
    image.getexif()[0x0112] = orientation
    expected = np.array(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(sio._apply_exif_orientation(pixels, orientation), expected)


def test_exif_orientation_in_sixteen_bit_png(tmp_path: Path) -> None:
    pixels = smooth_image(4, 7, 3, np.uint16)
    png = sio._encode_png(pixels, None)
    path = tmp_path / "rotated16.png"
    path.write_bytes(png_with_extra_chunk(png, sio._png_chunk(b"eXIf", exif_with_orientation(6))))
    loaded = read_image(path).pixels
    np.testing.assert_array_equal(loaded, np.rot90(pixels, k=-1))


@pytest.mark.parametrize(
    ("extension", "channels", "dtype"),
    [
        (".png", 3, np.uint8),
        (".png", 3, np.uint16),
        (".png", 4, np.uint16),
        (".jpg", 3, np.uint8),
        (".tif", 3, np.uint8),
        (".tif", 3, np.uint16),
        (".tif", 4, np.uint16),
        (".tif", 2, np.uint16),
        (".webp", 3, np.uint8),
    ],
)
def test_icc_profile_round_trip(tmp_path: Path, extension: str, channels: int, dtype: type) -> None:
    profile = srgb_profile()
    path = tmp_path / f"profiled{extension}"
    write_image(path, smooth_image(6, 6, channels, dtype), icc_profile=profile)
    assert read_image(path).icc_profile == profile


def test_no_icc_profile_reads_as_none(tmp_path: Path) -> None:
    write_image(tmp_path / "plain.png", smooth_image(3, 3, 3))
    assert read_image(tmp_path / "plain.png").icc_profile is None


# --------------------------------------------------------------------------------------------
# Our PNG codec against Pillow, every filter type and Adam7 interlacing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_own_decoder_matches_pillow_on_pillow_files(channels: int) -> None:
    pixels = smooth_image(21, 26, channels)
    buffer = bytes_io.BytesIO()
    pillow_image(pixels).save(buffer, format="PNG")  # Pillow's adaptive filtering uses all five
    decoded, _ = sio._read_png_with_own_decoder(buffer.getvalue(), Path("mem.png"), None)
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_own_codec_every_filter_type(channels: int, dtype: type) -> None:
    pixels = smooth_image(15, 12, channels, dtype)
    filter_types = np.arange(15) % 5
    png = sio._encode_png(pixels, None, filter_types)
    decoded, _ = sio._read_png_with_own_decoder(png, Path("mem.png"), None)
    np.testing.assert_array_equal(decoded, pixels)
    if dtype == np.uint8:
        with Image.open(bytes_io.BytesIO(png)) as image:
            np.testing.assert_array_equal(np.array(image).reshape(pixels.shape), pixels)


def interlaced_png(pixels: np.ndarray) -> bytes:
    """An Adam7 PNG of HWC uint16 pixels, built from the encoder's pieces."""
    height, width, channels = pixels.shape
    bpp = channels * 2
    scanlines = []
    for x0, y0, dx, dy, _, pass_height in sio._adam7_pass_sizes(width, height):
        sub_image = np.ascontiguousarray(pixels[y0::dy, x0::dx].astype(">u2"))
        rows = sub_image.view(np.uint8).reshape(pass_height, -1)
        scanlines.append(sio._filter_scanlines(rows, bpp, np.arange(pass_height) % 5).tobytes())
    colour_type = sio._COLOUR_TYPE_BY_CHANNELS[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 1)
    return (
        sio._PNG_SIGNATURE
        + sio._png_chunk(b"IHDR", header)
        + sio._png_chunk(b"IDAT", zlib.compress(b"".join(scanlines)))
        + sio._png_chunk(b"IEND", b"")
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
    png = sio._encode_png(pixels, None)
    path = tmp_path / "keyed16.png"
    path.write_bytes(png_with_extra_chunk(png, sio._png_chunk(b"tRNS", struct.pack(">3H", *key))))
    loaded = read_image(path).pixels
    assert loaded.shape == (4, 4, 4)
    np.testing.assert_array_equal(loaded[:, :, 3] == 0, np.all(pixels == key, axis=2))
    assert set(np.unique(loaded[:, :, 3])) <= {0, 65535}


# --------------------------------------------------------------------------------------------
# Bad input files
# --------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.png"
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: file not found"):
        read_image(path)


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "folder.png"
    path.mkdir()
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: is a directory"):
        read_image(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: file is empty"):
        read_image(path)


@pytest.mark.parametrize("content", [b"just some text, not pixels", b"%!PS-Adobe-3.0 EPSF" + b"\x00" * 40])
def test_not_an_image(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.png"
    path.write_bytes(content)
    expected = f"{file_named(path)}: not a PNG, JPEG, BMP, TIFF, WebP or GIF image"
    with pytest.raises(ImageReadError, match=expected):
        read_image(path)


def test_gif_is_read_with_its_palette_converted(tmp_path: Path) -> None:
    # The README promises palette images are converted; GIF was refused before.
    path = tmp_path / "palette.gif"
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[:, 3:] = (200, 40, 10)
    Image.fromarray(pixels).save(path)
    loaded = read_image(path)
    assert loaded.pixels.shape == (4, 6, 3) and np.array_equal(loaded.pixels, pixels)
    with pytest.raises(ImageWriteError, match="GIF is read but not written"):
        write_image(tmp_path / "out.gif", pixels)


@pytest.mark.parametrize(
    ("extension", "channels", "dtype"),
    [
        *[(extension, 3, np.uint8) for extension in (".png", ".jpg", ".bmp", ".tif", ".webp")],
        (".png", 3, np.uint16),  # our decoder
        (".png", 1, np.uint16),  # Pillow's "I;16"
        (".tif", 1, np.uint16),
        (".tif", 2, np.uint16),  # tifffile from here on
        (".tif", 3, np.uint16),
        (".tif", 4, np.uint16),
    ],
)
def test_truncated_file(tmp_path: Path, extension: str, channels: int, dtype: type) -> None:
    rng = np.random.default_rng(RNG_SEED)
    # Noise does not compress, so cutting the file in half cuts the pixel data, not a trailer.
    pixels = rng.integers(0, np.iinfo(dtype).max, (64, 64, channels), dtype=dtype, endpoint=True)
    path = tmp_path / f"cut{extension}"
    write_image(path, pixels)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: (truncated|corrupt)"):
        read_image(path)


def test_corrupt_crc_in_sixteen_bit_png(tmp_path: Path) -> None:
    path = tmp_path / "bad_crc.png"
    write_image(path, smooth_image(4, 4, 3, np.uint16))
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # inside the first IDAT's data
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: corrupt PNG"):
        read_image(path)


@pytest.mark.parametrize(
    ("extension", "dtype"),
    [
        (".png", np.uint8),
        (".png", np.uint16),
        (".jpg", np.uint8),
        (".tif", np.uint8),
        (".tif", np.uint16),
    ],
)
def test_pixel_limit(tmp_path: Path, extension: str, dtype: type) -> None:
    path = tmp_path / f"big{extension}"
    write_image(path, smooth_image(20, 30, 3, dtype))
    expected = f"{file_named(path)}: 30x20 = 600 pixels exceeds the limit of 599"
    with pytest.raises(ImageReadError, match=expected):
        read_image(path, max_pixels=599)
    assert read_image(path, max_pixels=600).pixels.shape == (20, 30, 3)
    assert read_image(path, max_pixels=None).pixels.shape == (20, 30, 3)


@pytest.mark.parametrize(("bit_depth", "colour_type"), [(8, 0), (8, 2), (16, 2)])
def test_decompression_bomb_header_is_refused_before_decoding(
    tmp_path: Path, bit_depth: int, colour_type: int
) -> None:
    # A 100 000 x 100 000 canvas declared by a file of a few dozen bytes.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, bit_depth, colour_type, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        sio._PNG_SIGNATURE
        + sio._png_chunk(b"IHDR", header)
        + sio._png_chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + sio._png_chunk(b"IEND", b"")
    )
    expected = f"{file_named(path)}: 100000x100000 = .* exceeds the limit of {sio.DEFAULT_MAX_PIXELS}"
    with pytest.raises(ImageReadError, match=expected):
        read_image(path)


def test_pillow_bomb_error_becomes_our_error(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    path = tmp_path / "image.png"
    write_image(path, smooth_image(4, 4, 3))

    def refuse(*args: object, **kwargs: object) -> Image.Image:
        raise Image.DecompressionBombError("Image size exceeds limit")

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: too many pixels"):
        read_image(path)


def test_pillow_bomb_warning_becomes_our_error(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    path = tmp_path / "image.png"
    write_image(path, smooth_image(4, 4, 3))
    real_open = Image.open

    def open_with_warning(*args: object, **kwargs: object) -> Image.Image:
        warnings.warn("could be decompression bomb DOS attack", Image.DecompressionBombWarning)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", open_with_warning)
    with pytest.raises(ImageReadError, match=f"{file_named(path)}: too many pixels"):
        read_image(path)


def test_our_limit_replaces_pillows_global_one(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    path = tmp_path / "image.png"
    write_image(path, smooth_image(10, 10, 3))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)  # Pillow alone would refuse 100 pixels
    assert read_image(path).pixels.shape == (10, 10, 3)
    assert Image.MAX_IMAGE_PIXELS == 20  # and its setting is put back


def test_read_errors_are_superres_errors(tmp_path: Path) -> None:
    with pytest.raises(SuperresError):
        read_image(tmp_path / "missing.png")


# --------------------------------------------------------------------------------------------
# Bad write requests and atomic writes
# --------------------------------------------------------------------------------------------


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "image.xyz"
    expected = f"{file_named(path)}: unknown image extension '.xyz'"
    with pytest.raises(ImageWriteError, match=expected):
        write_image(path, smooth_image(3, 3, 3))
    assert not path.exists()


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((3, 3, 3), np.float32), "uint8 or uint16, got float32"),
        (np.zeros((3, 3, 5), np.uint8), "1 to 4 channels, got shape"),
        (np.zeros((2, 3, 3, 3), np.uint8), "1 to 4 channels, got shape"),
        (np.zeros((0, 3, 3), np.uint8), "got shape"),
        ([[0, 1], [2, 3]], "must be a numpy array"),
    ],
)
def test_invalid_pixels(tmp_path: Path, pixels: object, message: str) -> None:
    path = tmp_path / "image.png"
    with pytest.raises(ImageWriteError, match=f"{file_named(path)}: pixels .*{re.escape(message)}"):
        write_image(path, pixels)  # type: ignore[arg-type]


@pytest.mark.parametrize("quality", [0, 101])
def test_invalid_quality(tmp_path: Path, quality: int) -> None:
    path = tmp_path / "image.jpg"
    expected = f"{file_named(path)}: quality must be between 1 and 100"
    with pytest.raises(ImageWriteError, match=expected):
        write_image(path, smooth_image(3, 3, 3), quality=quality)


def test_destination_is_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "taken.png"
    path.mkdir()
    with pytest.raises(ImageWriteError, match=file_named(path)):
        write_image(path, smooth_image(3, 3, 3))
    assert path.is_dir() and leftover_temporaries(tmp_path) == []


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "image.png"
    with pytest.raises(ImageWriteError, match=file_named(path)):
        write_image(path, smooth_image(3, 3, 3))


def failing_png_encoder(image: Image.Image, fp: object, filename: object) -> None:
    fp.write(b"\x89PNG half an image")  # type: ignore[attr-defined]
    raise OSError("encoder exploded")


def test_failed_pillow_write_keeps_old_file(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    path = tmp_path / "image.png"
    write_image(path, np.full((3, 3, 3), 7, np.uint8))
    old_bytes = path.read_bytes()
    monkeypatch.setitem(Image.SAVE, "PNG", failing_png_encoder)
    expected = f"{file_named(path)}: cannot write image .*encoder exploded"
    with pytest.raises(ImageWriteError, match=expected):
        write_image(path, np.full((3, 3, 3), 200, np.uint8))
    assert path.read_bytes() == old_bytes
    assert leftover_temporaries(tmp_path) == []


@pytest.mark.parametrize("name", ["deep.png", "deep.tif"])  # our PNG encoder, tifffile
def test_failed_sixteen_bit_colour_write_keeps_old_file(
    tmp_path: Path, monkeypatch: MonkeyPatch, name: str
) -> None:
    path = tmp_path / name
    write_image(path, np.full((3, 3, 3), 7, np.uint16))
    old_bytes = path.read_bytes()

    def write_then_fail(fp: object) -> None:
        fp.write(b"partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    real_write_atomically = sio._write_atomically
    monkeypatch.setattr(
        sio, "_write_atomically", lambda target, _: real_write_atomically(target, write_then_fail)
    )
    expected = f"{file_named(path)}: cannot write image .*disk full"
    with pytest.raises(ImageWriteError, match=expected):
        write_image(path, np.full((3, 3, 3), 9, np.uint16))
    assert path.read_bytes() == old_bytes
    assert leftover_temporaries(tmp_path) == []


def test_bug_in_encoder_propagates_and_cleans_up(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    def broken_encoder(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("a bug, not a user mistake")

    monkeypatch.setattr(sio, "_encode_png", broken_encoder)
    path = tmp_path / "deep.png"
    with pytest.raises(RuntimeError, match="a bug"):
        write_image(path, np.zeros((3, 3, 3), np.uint16))
    assert not path.exists() and leftover_temporaries(tmp_path) == []


def test_temporary_file_sits_beside_destination(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    seen: list[Path] = []
    real_replace = os.replace

    def recording_replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        seen.append(Path(source))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    write_image(tmp_path / "image.png", smooth_image(3, 3, 3))
    assert seen and seen[0].parent == tmp_path and seen[0].name.startswith(".image.png.tmp-")


# --------------------------------------------------------------------------------------------
# to_float / from_float
# --------------------------------------------------------------------------------------------


def test_to_float_divides_by_dtype_maximum() -> None:
    assert to_float(np.array([0, 51, 255], np.uint8)).tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert to_float(np.array([0, 65535], np.uint16)).tolist() == [0.0, 1.0]
    assert to_float(np.zeros(2, np.uint8)).dtype == np.float32


def test_to_float_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError, match="uint8 or uint16"):
        to_float(np.zeros(2, np.float32))


def test_from_float_clips_scales_rounds() -> None:
    values = np.array([-0.5, 0.0, 0.49 / 255, 0.51 / 255, 1.0, 2.0, np.nan])
    assert from_float(values, np.uint8).tolist() == [0, 0, 0, 1, 255, 255, 0]
    assert from_float(np.array([0.6 / 255]), np.uint8).tolist() == [1]
    assert from_float(np.array([1.0, 0.5]), np.uint16).tolist() == [65535, 32768]
    assert from_float(np.array([0.5], np.float32), "uint8").dtype == np.uint8


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_float_round_trip_is_exact(dtype: type) -> None:
    levels = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
    np.testing.assert_array_equal(from_float(to_float(levels), dtype), levels)


def test_from_float_rejects_other_dtypes() -> None:
    with pytest.raises(TypeError, match="uint8 or uint16"):
        from_float(np.zeros(2), np.int16)


# --------------------------------------------------------------------------------------------
# More PNG and TIFF corner cases
# --------------------------------------------------------------------------------------------


def test_sixteen_bit_png_over_many_idat_chunks(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(sio, "_IDAT_CHUNK_BYTES", 16)
    pixels = smooth_image(9, 10, 4, np.uint16)
    path = tmp_path / "many_chunks.png"
    write_image(path, pixels)
    assert path.read_bytes().count(b"IDAT") > 3
    np.testing.assert_array_equal(read_image(path).pixels, pixels)


def test_sixteen_bit_png_cut_between_idat_chunks(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(sio, "_IDAT_CHUNK_BYTES", 64)
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
        sio._PNG_SIGNATURE
        + sio._png_chunk(b"IHDR", header)
        + sio._png_chunk(b"IDAT", payload)
        + sio._png_chunk(b"IEND", b"")
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
    broken_icc = sio._png_chunk(b"iCCP", b"name\x00\x00garbage")
    path.write_bytes(png_with_extra_chunk(sio._encode_png(pixels, None), broken_icc))
    with caplog.at_level(logging.WARNING, logger="superres.io"):
        loaded = read_image(path)
    assert loaded.icc_profile is None and "iCCP" in caplog.text
    np.testing.assert_array_equal(loaded.pixels, pixels)


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
    with caplog.at_level(logging.WARNING, logger="superres.io"):
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
    np.testing.assert_array_equal(turned, sio._apply_exif_orientation(pixels, orientation))


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
