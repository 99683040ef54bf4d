"""`superres curves`: the learning curves (validation PSNR against training hours) of run folders."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "curves",
        help="plot validation PSNR against training hours for run folders",
        description="Read history.csv of each training run folder and draw its validation PSNR "
        "against the hours it trained (summed across resumed calls) in one PNG, one panel per scale. "
        "A run that started from another run's weights (init_weights) is drawn after that run, which "
        "is drawn too: its hours count from the end of the runs behind it.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("-o", "--output", type=Path, default=Path("curves.png"), help="PNG to write")
    parser.add_argument("--machine", default="this CPU", help="how the plot names the machine")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from superres.errors import ConfigError
    from superres.lab.curves import plot_learning_curves

    missing = [str(run_dir) for run_dir in args.runs if not (run_dir / "history.csv").is_file()]
    if missing:
        raise ConfigError(f"not a training run folder (no history.csv): {missing[0]}")
    drawn = plot_learning_curves(list(args.runs), args.output, machine=args.machine)
    print(f"wrote {args.output}: {drawn} runs with validation scores, from the {len(args.runs)} "
          "given and the runs they continued")
    return 0
