"""`superres pack`: HR image folders -> one compressed npz in the training colour (Y or RGB)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pack",
        help="pack HR training images into one npz",
        description="Read every HR image of the folders (recursively), convert it to the training "
        "colour (Y: BT.601 luma rounded to uint8; RGB: kept) and store all of them in one compressed "
        ".npz that `superres train --train-data` loads in a second.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="folders of HR images")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--channels", choices=["Y", "RGB"], default="Y", help="training colour (default Y)")
    parser.add_argument(
        "--downscales",
        nargs="+",
        type=float,
        default=[],
        metavar="FACTOR",
        help="also store a MATLAB-bicubic downscaled copy of every image at each factor (0 < f < 1), "
        "the scale augmentation of VDSR and FSRCNN, e.g. --downscales 0.9 0.8 0.7 0.6",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from superres.training.data import pack_images

    meta = pack_images(args.folders, args.output, channels=args.channels, downscales=args.downscales)
    size_mb = args.output.stat().st_size / 1e6
    print(f"packed {meta['count']} images ({args.channels}) into {args.output} ({size_mb:.1f} MB)")
    return 0
