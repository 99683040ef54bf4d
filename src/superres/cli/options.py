"""Flags that several sub-commands share, declared once (--device, --tile, --max-pixels), and the
argument types of the whole-number options (seeds, --quality).

Nothing here imports torch or a pipeline: `superres --help` builds every sub-command's parser.
"""

from __future__ import annotations

import argparse


def _whole_number(text: str, expected: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        raise argparse.ArgumentTypeError(f"expected {expected}, got '{text}'")
    return value


def positive_int_argument(text: str, also: str = "") -> int:
    """A whole number >= 1 (--max-pixels, --tile); `also` names what else the option takes."""
    return _whole_number(text, f"{also}a positive integer", 1)


def seed_argument(text: str) -> int:
    """A seed: a whole number >= 0 (numpy's generators take no negative one)."""
    return _whole_number(text, "an integer >= 0", 0)


def quality_argument(text: str) -> int:
    """`--quality`: a JPEG / WebP quality, 1..100."""
    return _whole_number(text, "a quality from 1 to 100", 1, 100)


def tile_argument(text: str) -> str | int:
    """`--tile` value: "auto" or a positive number of LR pixels."""
    if text == "auto":
        return text
    return positive_int_argument(text, also="'auto' or ")


def colour_argument(text: str) -> tuple[int, int, int]:
    """`--background` value: a CSS colour name, #rrggbb / #rgb, or R,G,B (0..255 each)."""
    from PIL import ImageColor

    try:
        parts = [int(part) for part in text.split(",")] if "," in text else list(ImageColor.getrgb(text))[:3]
    except ValueError:
        parts = []
    if len(parts) != 3 or not all(0 <= part <= 255 for part in parts):
        raise argparse.ArgumentTypeError(
            f"expected a colour such as white, #ffffff or 255,255,255, got '{text}'"
        )
    return (parts[0], parts[1], parts[2])


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """--device, for every command that runs a model."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu or cuda (default: auto)"
    )


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device and --tile, for the commands that run a model on whole images."""
    add_device_argument(parser)
    parser.add_argument(
        "--tile",
        type=tile_argument,
        default="auto",
        help="tile size in LR pixels, or 'auto' to fit a memory budget (default: auto)",
    )


#: `--precision` values (`superres.inference.precision.PRECISIONS`, repeated here so that `--help`
#: does not import torch; a test keeps the two equal).
PRECISION_CHOICES = ("auto", "fp32", "bf16", "int8")


def add_precision_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """--precision, for the commands that run a model on the CPU."""
    parser.add_argument(
        "--precision",
        choices=PRECISION_CHOICES,
        default=default,
        help="what the network computes in on the CPU: fp32; bf16 (inner layers in bf16, on a CPU with "
        "bf16 instructions); auto: bf16 where the model's card measured it to change Set5 and Set14 "
        "PSNR by at most 0.02 dB and to run faster, and the CPU has the instructions, else fp32; int8 "
        f"is refused (no shipped model has an int8 form; docs/precision.md) (default: {default})",
    )


def add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    """--max-pixels, for the commands that read images."""
    parser.add_argument(
        "--max-pixels",
        type=positive_int_argument,
        default=None,
        help="refuse images with more pixels than this (decompression bomb guard; default: "
        "what fits this machine's memory, at most 2**28)",
    )
