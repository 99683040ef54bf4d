"""`superres train`: train a model from a preset, a JSON config and/or flags; `--resume RUN_DIR`."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

# Flag destination -> TrainConfig key, for the flags that override a configuration value.
OVERRIDE_FLAGS = (
    "model", "scale", "model_kwargs", "init_weights", "train_data", "val_data", "patch_size",
    "batch_size", "iterations", "epochs", "learning_rate", "weight_decay", "loss", "schedule",
    "step_size", "gamma", "warmup_steps", "min_learning_rate", "grad_clip", "ema_decay", "val_every",
    "checkpoint_every", "log_every", "seed", "degradation", "channels", "amp", "channels_last",
    "max_minutes", "device", "num_threads", "augment", "compile",
)


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

    model = parser.add_argument_group("model and data")
    model.add_argument("--model", help="registered model name (see `superres models`)")
    model.add_argument("--scale", type=int)
    model.add_argument("--model-kwargs", type=_json_object, help='JSON object, e.g. \'{"num_layers": 15}\'')
    model.add_argument(
        "--init-weights",
        metavar="WEIGHTS",
        help="fine-tune: start from this .safetensors checkpoint or shipped model (e.g. red20); "
        "from another scale only the body is taken",
    )
    model.add_argument("--train-data", nargs="+", metavar="PATH", help="HR folders, packed or prepared .npz")
    model.add_argument("--val-data", metavar="DIR", help="HR folder for validation, or 'none'")
    model.add_argument("--patch-size", type=int, help="LR patch size in pixels")
    model.add_argument("--degradation", choices=["bicubic", "bilinear"])
    model.add_argument("--channels", choices=["Y", "RGB"])
    model.add_argument("--no-augment", dest="augment", action="store_const", const=False, default=None)

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--iterations", type=int)
    optim.add_argument("--epochs", type=float)
    optim.add_argument("--batch-size", type=int, help="pairs per step (per process under torchrun)")
    optim.add_argument("--learning-rate", type=float)
    optim.add_argument("--weight-decay", type=float)
    optim.add_argument("--loss", choices=["mse", "l1"])
    optim.add_argument("--schedule", choices=["constant", "step", "cosine"])
    optim.add_argument("--step-size", type=int, help="steps between decays (schedule step)")
    optim.add_argument("--gamma", type=float, help="decay factor (schedule step)")
    optim.add_argument("--warmup-steps", type=int)
    optim.add_argument("--min-learning-rate", type=float, help="floor of the cosine schedule")
    optim.add_argument("--grad-clip", type=float, help="clip the gradient norm to this")
    optim.add_argument(
        "--ema-decay", type=float, help="keep a moving average of the weights (e.g. 0.999); it is validated and saved as best"
    )
    optim.add_argument("--seed", type=int)

    run_group = parser.add_argument_group("running")
    run_group.add_argument("--val-every", type=int)
    run_group.add_argument("--checkpoint-every", type=int)
    run_group.add_argument("--log-every", type=int)
    run_group.add_argument("--max-minutes", type=float, help="stop cleanly (with a checkpoint) after this")
    run_group.add_argument("--device", choices=["auto", "cpu", "cuda"])
    run_group.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"])
    run_group.add_argument("--channels-last", choices=["auto", "true", "false"])
    run_group.add_argument("--num-threads", type=int, help="CPU threads for PyTorch")
    run_group.add_argument(
        "--compile",
        choices=["off", "default", "reduce-overhead", "max-autotune-no-cudagraphs"],
        help="torch.compile the training network (costs start-up time; default off)",
    )
    parser.set_defaults(run=run)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as {\"num_layers\": 15}")
    return value


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {name: getattr(args, name) for name in OVERRIDE_FLAGS if getattr(args, name) is not None}
    if "channels_last" in overrides:
        choice = overrides["channels_last"]
        overrides["channels_last"] = {"auto": "auto", "true": True, "false": False}[choice]
    return overrides


def _build(args: argparse.Namespace):
    from superres.config import build_config, config_from_dict, load_run_config, merge_settings
    from superres.errors import ConfigError

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
    from superres.config import list_presets
    from superres.train import train

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
