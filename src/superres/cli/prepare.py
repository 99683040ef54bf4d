"""`superres prepare`: draw a fixed set of aligned LR/HR patch pairs into one npz."""

from __future__ import annotations

import argparse
from pathlib import Path

from superres.cli.options import seed_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="make a fixed training set of LR/HR patch pairs",
        description="Cut COUNT random aligned patch pairs from HR images (folders, image files or "
        "`superres pack` files): LR made by MATLAB-exact imresize on uint8, random flips and "
        "rotations. The same seed gives the same pairs as sampling on the fly.",
    )
    parser.add_argument("sources", nargs="+", type=Path, help="HR image folders, images or packed .npz")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--scale", type=int, required=True, help="upscaling factor")
    parser.add_argument("--patch-size", type=int, required=True, help="LR patch size in pixels")
    parser.add_argument("--count", type=int, required=True, help="number of pairs")
    parser.add_argument("--degradation", choices=["bicubic", "bilinear"], default="bicubic")
    parser.add_argument("--channels", choices=["Y", "RGB"], default="Y")
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument("--no-augment", action="store_true", help="no flips or rotations")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from superres.errors import ConfigError
    from superres.training.data import prepare_patches

    for name in ("scale", "patch_size", "count"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    meta = prepare_patches(
        args.sources,
        args.output,
        scale=args.scale,
        patch_size=args.patch_size,
        count=args.count,
        degradation=args.degradation,
        channels=args.channels,
        seed=args.seed,
        augment=not args.no_augment,
    )
    size_mb = args.output.stat().st_size / 1e6
    print(
        f"wrote {meta['count']} pairs ({args.channels}, x{args.scale}, LR {args.patch_size} px) "
        f"from {meta['images_used']} images to {args.output} ({size_mb:.1f} MB)"
    )
    return 0
