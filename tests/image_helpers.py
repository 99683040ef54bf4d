"""Helpers shared by the test_images*.py files: synthetic images, profiles and PNG pieces."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from superres.images import from_float

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


@functools.cache
def srgb_profile() -> bytes:
    # Made once: a new profile's header holds its creation time, so two made a second apart differ.
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def png_with_extra_chunk(png: bytes, chunk: bytes) -> bytes:
    """Insert a ready-made chunk right after IHDR (signature 8 bytes + IHDR 25 bytes)."""
    return png[:33] + chunk + png[33:]


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def blocky_benchmark_folder(root: Path, blocks: int, block_size: int) -> Path:
    """root/Tiny/HR with one RGB image of random `block_size`-pixel squares: texture at every scale."""
    folder = root / "Tiny" / "HR"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    squares = rng.integers(0, 256, (blocks, blocks, 3), dtype=np.uint8)
    Image.fromarray(np.kron(squares, np.ones((block_size, block_size, 1), np.uint8))).save(folder / "img.png")
    return folder
