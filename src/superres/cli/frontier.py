"""`superres frontier`: Set5 PSNR against measured CPU speed for every shipped model (and any model
files named with `--model`), plotted and tabled."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_SET5 = Path("../shared/data/benchmark/Set5/HR")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "frontier",
        help="plot quality against speed for the shipped models",
        description="Time bicubic and every shipped model on this machine's CPU (fast path, one "
        "320x240 LR image per scale, median of several calls), pair each with its card's Set5 "
        "PSNR, and write a PNG (Set5 PSNR against output MP/s, log scale, one panel per scale) and "
        "a markdown table. Speeds are also given as a ratio to bicubic measured in the same run. "
        "--model adds model files (a community .pth/.safetensors, a superres checkpoint), timed the "
        "same way at their own scale and scored on --set5 on the spot.",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("frontier.png"), help="PNG to write")
    parser.add_argument("--table", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument(
        "--model",
        dest="models",
        nargs="+",
        action="extend",
        default=[],
        metavar="FILE",
        help="also place these models: files (.pth, .pt, .ckpt, .safetensors of any architecture "
        "spandrel recognises, or superres checkpoints) or other model names, each timed beside the "
        "shipped models of its scale (added to --scales) and scored on --set5 (no PSNR without it)",
    )
    parser.add_argument(
        "--set5",
        type=Path,
        default=DEFAULT_SET5,
        help=f"Set5 HR folder, to score bicubic on the spot (default {DEFAULT_SET5}; skipped if absent)",
    )
    parser.add_argument("--machine", default="this CPU", help="how the plot names the machine")
    parser.add_argument("--quick", action="store_true", help="a rough timing: 160x120 LR, one call per model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from superres.lab.frontier import QUICK_TIMING, Timing, frontier_markdown, measure_frontier, plot_frontier

    timing = QUICK_TIMING if args.quick else Timing()
    points = measure_frontier(args.scales, args.set5 if args.set5.is_dir() else None, timing, args.models)
    table = frontier_markdown(points)
    plot_frontier(points, args.output, machine=args.machine)
    if args.table is not None:
        from superres.atomic import atomic_write_bytes

        atomic_write_bytes(args.table, table.encode("utf-8"))
    print(table, end="")
    print(f"wrote {args.output}" + (f" and {args.table}" if args.table else ""))
    return 0
