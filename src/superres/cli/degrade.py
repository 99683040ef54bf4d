"""`superres degrade`: a reproducible LR test set from HR images by a named degradation preset."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.cli.options import add_max_pixels_argument, seed_argument
from superres.errors import ConfigError

#: The presets and what they do, repeated here so that `--help` does not import torch; a test
#: checks it against `superres.ops.degradations.PRESETS`.
PRESET_HELP = {
    "bicubic": "MATLAB bicubic imresize(HR, 1/scale) rounded to uint8 (the benchmark LR)",
    "jpeg": "the bicubic LR saved as JPEG quality 75 (4:2:0)",
    "noise-jpeg": "the bicubic LR + Gaussian noise of sigma 8 (of 255, per colour channel), "
    "then JPEG quality 85",
    "real": "the whole real-world training chain (Real-ESRGAN's defaults) with a fixed seed",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    presets = "; ".join(f"{name}: {text}" for name, text in PRESET_HELP.items())
    parser = subparsers.add_parser(
        "degrade",
        help="make a reproducible LR test set (JPEG, noise, the real-world chain)",
        description="Write the LR image of every HR image by a fixed degradation, as PNG with the "
        "HR's name (NAME.png), for `superres evaluate HR --lr-dir LR_DIR`. HR is cropped to a "
        "multiple of the scale first, as the evaluation protocol does. Each image's random numbers "
        "come from --seed and its file name, so the same command always writes the same files. "
        f"Presets: {presets}.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="HR images or folders of them")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the LR folder to write")
    parser.add_argument(
        "--scale",
        type=int,
        nargs="+",
        default=[4],
        help="scales (default 4); with several, LR_DIR/X{scale}/ each, as `evaluate --lr-dir` reads",
    )
    parser.add_argument(
        "--preset", choices=list(PRESET_HELP), default="real", help="the degradation (default real)"
    )
    parser.add_argument(
        "--seed", type=seed_argument, default=0, help="seed of the random degradations (default 0)"
    )
    add_max_pixels_argument(parser)
    parser.set_defaults(run=run)


def _hr_files(inputs: list[Path]) -> list[Path]:
    from superres.images import list_images

    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files.extend(list_images(path))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{path}: no such file or folder")
    names = [path.stem for path in files]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"two inputs would write the same LR file: {duplicates[0]}.png")
    return files


def run(args: argparse.Namespace) -> int:
    from superres.evaluation.protocol import as_uint8
    from superres.images import read_image, write_image
    from superres.ops.degradations import apply_preset

    if any(scale < 1 for scale in args.scale):
        raise ConfigError(f"scales are positive integers, got {args.scale}")
    files = _hr_files(args.inputs)
    for scale in args.scale:
        folder = args.output / f"X{scale}" if len(args.scale) > 1 else args.output
        for path in files:
            hr = as_uint8(read_image(path, max_pixels=args.max_pixels).pixels)
            lr = apply_preset(hr, scale, args.preset, name=path.name, seed=args.seed)
            write_image(folder / f"{path.stem}.png", lr[..., 0] if lr.shape[2] == 1 else lr)
        print(f"x{scale}: {len(files)} LR images ({args.preset}, seed {args.seed}) in {folder}")
    return 0
