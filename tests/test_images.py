"""Tests for superres.images: listing, reading and writing image files through the public API.

Every image is synthetic and tiny, made in `tmp_path`. The codec paths have their own files:
test_images_pillow.py, test_images_png.py, test_images_tiff.py (and test_images_fuzz.py).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from image_helpers import (
    RNG_SEED,
    LogCapture,
    MonkeyPatch,
    exif_with_orientation,
    file_named,
    leftover_temporaries,
    png_with_extra_chunk,
    smooth_image,
    srgb_profile,
)
from superres import images
from superres.errors import ImageReadError, ImageWriteError, SuperresError
from superres.images import (
    IMAGE_EXTENSIONS,
    LoadedImage,
    from_float,
    list_images,
    read_image,
    to_float,
    write_image,
)
from superres.images.decoded import apply_orientation


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


def test_uint16_to_jpeg_gives_rounded_eight_bit(tmp_path: Path, caplog: LogCapture) -> None:
    # 257 * 100 + 129 rounds up to 101; truncation (>> 8 or // 257) would give 100. A flat image
    # survives JPEG exactly (only the DC coefficient, which quality 95 quantizes finely enough).
    pixels = np.full((16, 16, 1), 257 * 100 + 129, np.uint16)
    with caplog.at_level(logging.WARNING, logger="superres.images"):
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
    with caplog.at_level(logging.WARNING, logger="superres.images"):
        write_image(tmp_path / f"image{extension}", pixels)
    assert "alpha" in caplog.text
    assert read_image(tmp_path / f"image{extension}").pixels.shape == (8, 8, channels - 1)


def test_icc_profile_dropped_for_bmp(tmp_path: Path, caplog: LogCapture) -> None:
    with caplog.at_level(logging.WARNING, logger="superres.images"):
        write_image(tmp_path / "image.bmp", smooth_image(4, 4, 3), icc_profile=srgb_profile())
    assert "ICC" in caplog.text
    assert read_image(tmp_path / "image.bmp").icc_profile is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_own_orientation_matches_pillow(orientation: int) -> None:
    pixels = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    image = Image.fromarray(pixels)
    image.getexif()[0x0112] = orientation
    expected = np.array(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(apply_orientation(pixels, orientation), expected)


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


def test_read_errors_are_superres_errors(tmp_path: Path) -> None:
    with pytest.raises(SuperresError):
        read_image(tmp_path / "missing.png")


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

    real_write_atomically = images._write_atomically
    monkeypatch.setattr(
        images, "_write_atomically", lambda target, *_: real_write_atomically(target, write_then_fail)
    )
    expected = f"{file_named(path)}: cannot write image .*disk full"
    with pytest.raises(ImageWriteError, match=expected):
        write_image(path, np.full((3, 3, 3), 9, np.uint16))
    assert path.read_bytes() == old_bytes
    assert leftover_temporaries(tmp_path) == []


def test_temporary_file_sits_beside_destination(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    seen: list[Path] = []
    real_replace = os.replace

    def recording_replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        seen.append(Path(source))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    write_image(tmp_path / "image.png", smooth_image(3, 3, 3))
    assert seen and seen[0].parent == tmp_path and seen[0].name.startswith(".image.png.tmp-")


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


@pytest.mark.parametrize(
    ("suffix", "channels", "dtype", "expected"),
    [(".png", 4, np.uint16, 8), (".png", 1, np.uint16, 2), (".png", 3, np.uint8, 3),
     (".tif", 3, np.uint16, 8), (".jpg", 3, np.uint8, 3), (".bmp", 4, np.uint8, 3)],  # BMP: alpha flattened
)
def test_probe_reads_size_and_bytes_a_pixel_from_the_header(
    tmp_path: Path, suffix: str, channels: int, dtype: type, expected: int
) -> None:
    from superres.images import probe_image

    pixels = np.zeros((5, 7, channels), dtype=dtype)
    path = tmp_path / f"a{suffix}"
    write_image(path, pixels[:, :, 0] if channels == 1 else pixels)
    width, height, pixel_bytes = probe_image(path)
    assert (width, height) == (7, 5) and pixel_bytes >= pixel_bytes_of(read_image(path).pixels)
    assert pixel_bytes == expected


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("kind", ["jpeg", "png16", "tiff16"])
def test_probe_gives_the_upright_size_read_image_returns(tmp_path: Path, kind: str, orientation: int) -> None:
    # A server admits and a batch groups by the probed size: it must be the size that comes out.
    from superres.images import png, probe_image

    pixels = smooth_image(5, 8, 3, np.uint8 if kind == "jpeg" else np.uint16)
    path = tmp_path / f"turned-{kind}"
    if kind == "jpeg":
        Image.fromarray(pixels).save(path, "JPEG", exif=exif_with_orientation(orientation))
    elif kind == "png16":
        exif_chunk = png.chunk(b"eXIf", exif_with_orientation(orientation))
        path.write_bytes(png_with_extra_chunk(png.encode(pixels, None), exif_chunk))
    else:
        tifffile.imwrite(path, pixels, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
    height, width = read_image(path).pixels.shape[:2]
    assert probe_image(path)[:2] == (width, height)
    assert (width, height) == ((5, 8) if orientation in (6, 8) else (8, 5))


def test_probe_of_a_png_decodes_nothing_to_find_its_orientation(
    tmp_path: Path, monkeypatch: MonkeyPatch
) -> None:
    # An eXIf chunk after the pixels is known only once they are read: the probe gives the
    # stored size then, rather than decoding (Pillow's own getexif() would load the image).
    from PIL import ImageFile

    from superres.images import png, probe_image

    encoded = png.encode(smooth_image(5, 8, 3), None)
    exif_chunk = png.chunk(b"eXIf", exif_with_orientation(6))
    before, after = tmp_path / "before.png", tmp_path / "after.png"
    before.write_bytes(png_with_extra_chunk(encoded, exif_chunk))
    after.write_bytes(encoded[:-12] + exif_chunk + encoded[-12:])  # IEND is the last 12 bytes
    assert read_image(after).pixels.shape[:2] == (8, 5)

    def no_decoding(self: object) -> None:
        raise AssertionError("the probe decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    assert probe_image(before)[:2] == (5, 8)
    assert probe_image(after)[:2] == (8, 5)


def pixel_bytes_of(pixels: np.ndarray) -> int:
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return channels * pixels.dtype.itemsize
