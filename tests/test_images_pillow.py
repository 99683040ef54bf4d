"""Tests for the Pillow path of superres.images: modes other programs write, EXIF, bomb guards.

Pillow writes the files our writer never produces (palette, 1-bit, CMYK, float).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_helpers import (
    MonkeyPatch,
    exif_with_orientation,
    file_named,
    leftover_temporaries,
    smooth_image,
)
from superres.errors import ImageReadError, ImageWriteError
from superres.images import (
    read_image,
    write_image,
)


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


def test_exif_orientation_six_rotates_jpeg(tmp_path: Path) -> None:
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :5] = 255  # a white band on the left edge
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif_with_orientation(6), quality=95)
    loaded = read_image(path).pixels
    assert loaded.shape == (20, 10, 3)
    # Orientation 6 means "turn 90 degrees clockwise to view": the left edge becomes the top.
    assert loaded[:5].mean() > 200 and loaded[-5:].mean() < 50


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
        # stacklevel=2: attributed to the caller, as Pillow's own warning is.
        warnings.warn("could be decompression bomb DOS attack", Image.DecompressionBombWarning, stacklevel=2)
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
