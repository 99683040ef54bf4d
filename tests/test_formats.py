"""The format table `superres.images.formats`: it tells the truth about each format, every list of
formats is derived from it, and adding a format is one row (shown with Pillow's PPM, added at run
time: reading, writing, listing, the server's sniffer, media types, previews and file picker follow).
"""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_helpers import LogCapture, MonkeyPatch, file_named, smooth_image, srgb_profile
from superres import images
from superres.errors import ImageReadError, ImageWriteError
from superres.images import formats, list_images, read_image, write_image
from superres.images.formats import ImageFormat, Magic

#: A format superres does not support, as one row: Pillow reads and writes it, browsers do not show it.
PPM = ImageFormat(
    name="PPM", label="PPM", extensions=(".ppm",), magic=(Magic(b"P6"), Magic(b"P5")),
    mime="image/x-portable-pixmap", can_read=True, can_write=True,
    alpha=False, sixteen_bit=False, icc_profile=False, browser_shows=False,
    pillow=True, codec=None,
)
STATIC = Path(__file__).resolve().parents[1] / "src" / "superres" / "serve" / "static"


def test_the_public_lists_are_the_tables() -> None:
    assert images.IMAGE_EXTENSIONS == (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
    assert images.READ_EXTENSIONS == (*images.IMAGE_EXTENSIONS, ".gif")
    assert images.IMAGE_EXTENSIONS == formats.write_extensions()
    assert images.READ_EXTENSIONS == formats.read_extensions()
    assert formats.in_words(formats.readable()) == "PNG, JPEG, BMP, TIFF, WebP or GIF"
    names = [fmt.name for fmt in formats.FORMATS]
    assert len(set(names)) == len(names)
    extensions = [ext for fmt in formats.FORMATS for ext in fmt.extensions]
    assert len(set(extensions)) == len(extensions) and all(ext == ext.lower() for ext in extensions)


@pytest.mark.parametrize("image_format", formats.FORMATS, ids=lambda fmt: fmt.name)
def test_pillow_agrees_with_the_table(image_format: ImageFormat) -> None:
    assert image_format.pillow  # every format today; a codec of our own alone would need its own check
    Image.init()
    assert Image.MIME[image_format.name] == image_format.mime
    for extension in image_format.extensions:
        assert Image.registered_extensions()[extension] == image_format.name
    # A file Pillow writes is recognised by the table's magic bytes.
    encoded = io.BytesIO()
    Image.fromarray(smooth_image(6, 7, 3)).save(encoded, image_format.name)
    assert formats.sniff(encoded.getvalue()[: formats.head_length()]) is image_format


@pytest.mark.parametrize("image_format", formats.writable(), ids=lambda fmt: fmt.name)
def test_what_a_written_file_keeps_is_what_the_row_says(
    tmp_path: Path, caplog: LogCapture, image_format: ImageFormat
) -> None:
    profile = srgb_profile()
    for extension in image_format.extensions:
        path = tmp_path / f"image{extension.upper()}"
        with caplog.at_level(logging.WARNING, logger="superres.images"):
            write_image(path, smooth_image(8, 9, 4, np.uint16), icc_profile=profile)
        assert formats.sniff(path.read_bytes()) is image_format
        loaded = read_image(path)
        assert loaded.has_alpha == image_format.alpha
        assert loaded.bit_depth == (16 if image_format.sixteen_bit else 8)
        assert (loaded.icc_profile == profile) == image_format.icc_profile
        assert ("cannot store alpha" in caplog.text) != image_format.alpha
        assert ("8 bits per sample" in caplog.text) != image_format.sixteen_bit
        assert ("cannot store an ICC profile" in caplog.text) != image_format.icc_profile
        caplog.clear()


def test_a_read_only_format_says_why_when_written(tmp_path: Path) -> None:
    expected = r"GIF is read but not written \(256 colours .*; use one of .png"
    with pytest.raises(ImageWriteError, match=expected):
        write_image(tmp_path / "out.gif", smooth_image(4, 4, 3))


def test_the_page_holds_no_list_of_formats() -> None:
    # The file picker's accept list and the hint come from /api/models, i.e. from the table.
    for page in ("index.html", "app.js"):
        text = (STATIC / page).read_text(encoding="utf-8")
        assert "image/png" not in text and ".webp" not in text and "WebP" not in text, page


# --------------------------------------------------------------------------- adding a format


def ppm_file(path: Path, pixels: np.ndarray) -> Path:
    """A PPM written by Pillow itself, not through superres."""
    Image.fromarray(pixels).save(path, "PPM")
    return path


def test_a_format_not_in_the_table_is_refused(tmp_path: Path) -> None:
    path = ppm_file(tmp_path / "photo.ppm", smooth_image(5, 6, 3))
    expected = f"{file_named(path)}: not a PNG, JPEG, BMP, TIFF, WebP or GIF image"
    with pytest.raises(ImageReadError, match=expected):
        read_image(path)
    with pytest.raises(ImageWriteError, match="unknown image extension '.ppm'"):
        write_image(tmp_path / "out.ppm", smooth_image(5, 6, 3))
    with pytest.raises(ImageReadError, match="no images"):
        list_images(tmp_path)


def test_adding_a_format_is_one_row(tmp_path: Path, caplog: LogCapture, monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "FORMATS", (*formats.FORMATS, PPM))
    # The public lists.
    assert images.IMAGE_EXTENSIONS[-1] == ".ppm" and images.READ_EXTENSIONS[-1] == ".ppm"
    # Reading a file superres did not write, and listing it.
    pixels = smooth_image(5, 6, 3)
    source = ppm_file(tmp_path / "photo.ppm", pixels)
    np.testing.assert_array_equal(read_image(source).pixels, pixels)
    assert list_images(tmp_path) == [source]
    # Writing: Pillow's encoder, by the row's name; what PPM cannot hold is flattened, with warnings.
    with caplog.at_level(logging.WARNING, logger="superres.images"):
        write_image(
            tmp_path / "out" / "deep.PPM", smooth_image(5, 6, 4, np.uint16), icc_profile=srgb_profile()
        )
    assert "PPM cannot store alpha" in caplog.text and "PPM written with 8 bits" in caplog.text
    assert "PPM cannot store an ICC profile" in caplog.text
    written = tmp_path / "out" / "deep.PPM"
    assert written.read_bytes().startswith(b"P6")
    loaded = read_image(written)
    assert loaded.pixels.shape == (5, 6, 3) and loaded.bit_depth == 8 and loaded.icc_profile is None
    # Messages name it too.
    (tmp_path / "notes.ppm").write_text("not pixels")
    with pytest.raises(ImageReadError, match="not a PNG, JPEG, BMP, TIFF, WebP, GIF or PPM image"):
        read_image(tmp_path / "notes.ppm")
    with pytest.raises(ImageWriteError, match=r"use one of .png .* .webp .ppm\)"):
        write_image(tmp_path / "out.xyz", pixels)


def test_the_server_follows_an_added_row(tmp_path: Path, monkeypatch: MonkeyPatch) -> None:
    pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")
    pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install '.[serve]'")
    from superres.serve.app import BadRequest, accept_list, media_type, sniff_format, start_in_thread
    from superres.serve.jobs import Job

    upload = ppm_file(tmp_path / "photo.ppm", smooth_image(10, 12, 3)).read_bytes()
    gif = io.BytesIO()
    Image.fromarray(smooth_image(4, 4, 3)).save(gif, "GIF")
    for refused in (upload, gif.getvalue()):
        with pytest.raises(BadRequest, match="not a PNG, JPEG, BMP, TIFF or WebP image") as error:
            sniff_format(refused)
        assert error.value.status == 415
    assert accept_list() == (
        "image/png,image/jpeg,image/bmp,image/tiff,image/webp,.png,.jpg,.jpeg,.bmp,.tif,.tiff,.webp"
    )

    monkeypatch.setattr(formats, "FORMATS", (*formats.FORMATS, PPM))
    assert sniff_format(upload) == ("PPM", ".ppm")
    assert accept_list().endswith(
        "image/webp,image/x-portable-pixmap,.png,.jpg,.jpeg,.bmp,.tif,.tiff,.webp,.ppm"
    )
    assert media_type(Path("result.ppm")) == "image/x-portable-pixmap"
    job = Job("photo.ppm", "PPM", ".ppm", tmp_path, "bicubic", 2, False, "auto", {})
    assert job.preview_path("before") == tmp_path / "before.png"  # browsers do not show PPM

    # The whole way: upload, upscale, previews, download, and the page's file picker.
    running = start_in_thread(device="cpu")
    try:
        catalogue = json.loads(urllib.request.urlopen(f"{running.url}api/models", timeout=30).read())
        assert catalogue["upload"] == {
            "accept": accept_list(), "formats": "PNG, JPEG, BMP, TIFF, WebP or PPM"
        }
        request = urllib.request.Request(
            f"{running.url}api/jobs?model=bicubic&scale=2&name=photo.ppm", data=upload, method="POST",
            headers={"Content-Type": "application/octet-stream"},  # as the page sends it
        )
        job_id = json.loads(urllib.request.urlopen(request, timeout=30).read())["id"]
        deadline = time.monotonic() + 60
        while (state := json.loads(urllib.request.urlopen(f"{running.url}api/jobs/{job_id}").read()))[
            "state"
        ] in ("queued", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert state["state"] == "done", state
        assert state["output"]["download_name"] == "photo_x2.ppm"
        with urllib.request.urlopen(f"{running.url}api/jobs/{job_id}/result") as response:
            assert response.headers["content-type"] == "image/x-portable-pixmap"
            with Image.open(io.BytesIO(response.read())) as result:
                assert (result.format, result.size) == ("PPM", (24, 20))
        for which in ("before", "after"):
            with urllib.request.urlopen(f"{running.url}api/jobs/{job_id}/{which}") as response:
                assert response.headers["content-type"] == "image/png"
    finally:
        running.stop()
