"""`superres train`: train a model from a preset, a JSON config and/or flags; `--resume RUN_DIR`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from superres.errors import ConfigError
from superres.training.config import (
    TrainConfig,
    build_config,
    config_from_dict,
    list_presets,
    load_run_config,
    merge_settings,
)

#: The TrainConfig fields that are flags too (see `superres.training.config.flag`).
FLAG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if "flag" in f.metadata)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (presets, JSON configs, resumable runs)",
        description="Train a super-resolution model on LR/HR patch pairs. Settings come from "
        "--preset or --config, then the flags below. The run folder gets config.json, "
        "last.safetensors (resumable), best.safetensors, history.csv, psnr.png and loss.png.",
    )
    source = parser.add_argument_group("where the settings come from")
    source.add_argument("--preset", help="a shipped preset (see --list-presets)")
    source.add_argument("--config", type=Path, help="a JSON file of TrainConfig keys")
    source.add_argument("--list-presets", action="store_true", help="print the presets and exit")
    source.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    source.add_argument("--run-dir", type=Path, help="folder for this run (default runs/NAME_xS_TIME)")
    _add_config_flags(parser)
    parser.set_defaults(run=run)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field that carries `flag(...)` metadata, in its --help group."""
    groups: dict[str, Any] = {}
    for config_field in dataclasses.fields(TrainConfig):
        if "flag" not in config_field.metadata:
            continue
        options = dict(config_field.metadata["flag"])
        group_name = options.pop("group")
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        names = options.pop("flags", ("--" + config_field.name.replace("_", "-"),))
        # None: "not given", so that a flag overrides the preset or config file only when used.
        groups[group_name].add_argument(*names, dest=config_field.name, default=None, **options)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig values given as flags."""
    return {name: getattr(args, name) for name in FLAG_FIELDS if getattr(args, name) is not None}


def _build(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    overrides = _overrides(args)
    clear_val = str(overrides.get("val_data", "")).lower() == "none"
    if clear_val:
        overrides["val_data"] = None
    if args.resume is not None:
        if args.preset or args.config:
            raise ConfigError("--resume reads RUN_DIR/config.json; do not give --preset or --config")
        if args.run_dir is not None and args.run_dir.resolve() != args.resume.resolve():
            raise ConfigError("--resume already names the run folder; leave out --run-dir")
        base = load_run_config(args.resume).to_dict()
        config = config_from_dict(merge_settings(base, overrides), source=f"{args.resume}/config.json")
        return config, args.resume
    config = build_config(preset=args.preset, config_file=args.config, overrides=overrides)
    if clear_val:
        config = config.replace(val_data=None)
    default_name = f"{args.preset or config.model}_x{config.scale}_{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = args.run_dir or Path("runs") / default_name
    return config, run_dir


def run(args: argparse.Namespace) -> int:
    from superres.training.loop import train  # torch: imported only when a run starts

    if args.list_presets:
        for name, comment in list_presets().items():
            print(f"{name:18s} {comment}")
        return 0
    config, run_dir = _build(args)
    summary = train(config, run_dir, resume=args.resume is not None)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun, rank 0 speaks for the run
    best = (
        f"best val PSNR {summary.best_psnr:.3f} dB / SSIM {summary.best_ssim:.4f} at step {summary.best_step}"
        if summary.best_psnr is not None
        else "no validation"
    )
    print(
        f"{summary.stop_reason}: step {summary.steps}/{summary.total_steps}, {best}, "
        f"{summary.hr_pixels_per_s / 1e6:.2f} M HR px/s, {summary.elapsed_s:.1f} s"
    )
    print(f"run folder: {summary.run_dir}")
    if summary.stop_reason == "interrupted":
        return 130
    return 0
