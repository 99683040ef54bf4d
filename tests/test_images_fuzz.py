"""A small seeded fuzz harness of the image readers: damaged files must give `ImageReadError`.

For each readable format, a few hundred mutations of one valid small file (bytes flipped,
overwritten, inserted or deleted, the file cut short, with or without a JPEG end marker after the
cut) are read with `read_image`. Reading may succeed or raise the project's own error; any other
exception (a decoder's OSError, a numpy ValueError, a struct.error...) is a leak and fails the test.
The seed is fixed, so a failure names a reproducible case. Seconds in all.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from superres.errors import ImageReadError
from superres.images import read_image, write_image

MUTATIONS_PER_FORMAT = 300
#: Mutated headers may claim huge canvases; a small limit keeps the harness fast and bounded.
FUZZ_MAX_PIXELS = 1 << 16


def _valid_file(extension: str) -> bytes:
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:12, 0:16]
    pixels = np.stack([x * 15, y * 20, (x + y) * 9], axis=2).astype(np.uint8)
    pixels = (pixels + rng.integers(0, 30, pixels.shape)).astype(np.uint8)
    if extension == ".gif":
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert("P").save(buffer, "GIF")
        return buffer.getvalue()
    buffer = io.BytesIO()
    image_format = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".webp": "WEBP"}
    Image.fromarray(pixels).save(buffer, image_format[extension])
    return buffer.getvalue()


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buffer = bytearray(data)
    kind = rng.integers(6)
    position = int(rng.integers(len(buffer)))
    if kind == 0:  # flip one bit
        buffer[position] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # overwrite a few bytes with random ones
        count = int(rng.integers(1, 9))
        buffer[position : position + count] = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
    elif kind == 2:  # insert random bytes
        buffer[position:position] = rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8).tobytes()
    elif kind == 3:  # delete a run
        del buffer[position : position + int(rng.integers(1, 17))]
    elif kind == 4:  # cut short
        del buffer[max(1, position) :]
    else:  # cut short, then an end-of-image marker (how a lenient JPEG decoder is fooled)
        buffer = buffer[: max(1, position)] + b"\xff\xd9"
    return bytes(buffer)


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".tif", ".webp", ".gif"])
def test_mutated_files_raise_only_our_error(tmp_path: Path, extension: str) -> None:
    original = _valid_file(extension)
    path = tmp_path / f"fuzz{extension}"
    path.write_bytes(original)
    assert read_image(path).pixels.shape[:2] == (12, 16)
    rng = np.random.default_rng(list(extension.encode()))
    for case in range(MUTATIONS_PER_FORMAT):
        mutated = _mutate(original, rng)
        path.write_bytes(mutated)
        try:
            read_image(path, max_pixels=FUZZ_MAX_PIXELS)
        except ImageReadError:
            continue
        except Exception as error:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"{extension} mutation {case}: {type(error).__name__} leaked: {error}")


def test_sixteen_bit_files_of_our_own_decoders(tmp_path: Path) -> None:
    # 16-bit colour PNG and TIFF go through superres's own decoders, not Pillow's.
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    for extension in (".png", ".tif"):
        path = tmp_path / f"deep{extension}"
        write_image(path, pixels)
        original = path.read_bytes()
        for case in range(MUTATIONS_PER_FORMAT // 2):
            path.write_bytes(_mutate(original, rng))
            try:
                read_image(path, max_pixels=FUZZ_MAX_PIXELS)
            except ImageReadError:
                continue
            except Exception as error:  # noqa: BLE001
                pytest.fail(f"16-bit {extension} mutation {case}: {type(error).__name__} leaked: {error}")
