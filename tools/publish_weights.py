"""Copy a finished training run into the package as shipped weights with a model card.

    python tools/publish_weights.py RUN_DIR NAME --eval EVAL.json --bicubic-eval BICUBIC.json
        --hardware "..." --recipe "..." [--note "..."] [--earlier-seconds S] [--checkpoint last]
    python tools/publish_weights.py --refresh --bicubic-eval BICUBIC.json

RUN_DIR is a `superres train` run folder (best.safetensors, config.json, history.csv); EVAL.json is
the output of `superres evaluate ... --model RUN_DIR/best.safetensors --scale S --format json`, and
BICUBIC.json that of `superres evaluate ... --model bicubic --scale 2 3 4 --format json` on the same
folders: the card records both, so that `--model fast` can ask which models beat bicubic by 1 dB.
A GAN run (`gan: true` in its config) is published from `--checkpoint last` (the EMA of its last
step: the PSNR-best validation of a GAN run is its least perceptual one) with `objective:
perceptual` on its card, which keeps it out of the default and `fast` choices; its EVAL.json should
come from `evaluate --lpips --niqe`, whose LPIPS-approx and NIQE columns the card then records.
Writes src/superres/weights/NAME_x<scale>.safetensors (weights only, metadata with the card's facts)
and NAME_x<scale>.json (the model card `superres models` shows), with the network's convolution
MACs per output pixel (`superres.models.complexity`) and its CPU speed relative to bicubic, timed in one
run on this machine (`superres.lab.frontier.relative_speed`). `--refresh` adds the bicubic scores, the
MAC count and the speed to every shipped card that lacks them; `--refresh --retime` times every
shipped model again, which is what to do on a quiet machine after publishing on a busy one.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
from pathlib import Path
from typing import Any

from superres.atomic import atomic_write_bytes
from superres.lab.frontier import relative_speed
from superres.models.complexity import conv_macs_per_output_pixel
from superres.models.reparam import has_branches, without_branches
from superres.training.ema import averaged_state
from superres.zoo.checkpoint import load_checkpoint, load_model, save_checkpoint
from superres.zoo.pretrained import list_pretrained, load_pretrained, write_model_card

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "superres" / "weights"


def mean_scores(report: dict[str, Any], scale: int | None = None) -> dict[str, dict[str, float]]:
    """{dataset: {"psnr", "ssim"[, "lpips_approx", "niqe"]}} of an evaluate JSON report's mean rows (at
    `scale` if given)."""
    keys = ("psnr", "ssim", "lpips_approx", "niqe")
    return {
        row["dataset"]: {key: row[key] for key in keys if key in row}
        for row in report["results"]
        if row["image"] == "(mean)" and (scale is None or int(row["scale"]) == scale)
    }


def released_model(run_dir: Path, checkpoint: str) -> tuple[Any, dict[str, Any]]:
    """The network to ship and its metadata: best.safetensors, or last.safetensors with the
    run's weight average (its `ema.` tensors) in place of the raw weights."""
    if checkpoint == "best":
        return load_model(run_dir / "best.safetensors")
    path = run_dir / "last.safetensors"
    model, metadata = load_model(path)
    _, _, extra = load_checkpoint(path)
    average = averaged_state(extra)
    if average:
        model.load_state_dict(average)
    return model, metadata


def real_world_fields(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """A run on the real-world chain: `degradation: real` (chosen by name or by the input check,
    never as the default), the Y model whose RGB form is denoise strength 0 (`denoise_base`: the
    shipped name the run started from), and its scores on the `superres degrade` presets."""
    if config.get("degradation") != "real":
        return {}
    fields: dict[str, Any] = {"degradation": "real"}
    init = config.get("init_weights")
    if args.denoise_base:
        fields["denoise_base"] = args.denoise_base
    elif not config.get("gan") and init and "/" not in init and not init.endswith(".safetensors"):
        fields["denoise_base"] = init
    presets = {}
    for item in args.preset_eval:
        preset, _, path = item.partition("=")
        presets[preset] = mean_scores(json.loads(Path(path).read_text()))
    if presets:
        fields["metrics_degraded"] = presets
    return fields


def write_card(card_path: Path, card: dict[str, Any]) -> None:
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode("utf-8"))


def refresh_cards(bicubic_report: dict[str, Any], retime: bool = False) -> None:
    """Add `bicubic` scores, `macs_per_output_pixel` and `speed` to the shipped cards that lack
    them; `retime` measures every card's speed again (on a quiet machine, all in one run)."""
    for entry in list_pretrained():
        card = dict(entry.card)
        card.setdefault("bicubic", mean_scores(bicubic_report, entry.scale))
        model = load_pretrained(entry.name, entry.scale)
        if "macs_per_output_pixel" not in card:
            card["macs_per_output_pixel"] = round(conv_macs_per_output_pixel(model))
        if retime or "speed" not in card:
            card["speed"] = relative_speed(model, entry.scale)
        write_card(WEIGHTS / f"{entry.name}_x{entry.scale}.json", card)
        print(f"refreshed {entry.name} x{entry.scale}")


def publish(args: argparse.Namespace, bicubic_report: dict[str, Any]) -> None:
    model, metadata = released_model(args.run_dir, args.checkpoint)
    if has_branches(model) and model.info.default_kwargs.get("reparam_gain") == 0:
        # Trained with branches, shipped as the plain network they fold into (the card's default).
        model = without_branches(model)
        metadata = {**metadata, "model_kwargs": model.model_kwargs}
    config = json.loads((args.run_dir / "config.json").read_text())
    gan = bool(config.get("gan"))
    history = list(csv.DictReader((args.run_dir / "history.csv").open()))
    training_seconds = float(history[-1]["elapsed_s"]) + args.earlier_seconds
    report = json.loads(args.eval.read_text())
    scale = int(metadata["scale"])
    metrics = mean_scores(report, scale)
    card_path = write_model_card(
        WEIGHTS,
        args.name,
        scale,
        architecture=metadata["model"],
        model_kwargs=metadata["model_kwargs"],
        recipe=args.recipe,
        training_seconds=training_seconds,
        hardware=args.hardware,
        date=datetime.date.today().isoformat(),
        metrics=metrics,
    )
    card = json.loads(card_path.read_text())
    card.update(
        {
            "steps": int(metadata.get("step") or history[-1]["step"]),
            "selected_by": (
                "highest Set5 PSNR among the validations of the run (the papers' practice)"
                if args.checkpoint == "best"
                else "the weight average (EMA) at the run's last step"
            ),
            "objective": "perceptual" if gan else "psnr",
            **({"denoise_base_of": args.denoise_base_of} if args.denoise_base_of else {}),
            **real_world_fields(args, config),
            "training_data": args.training_data
            or f"T91 + BSD200 (the 291 images), channels: {metadata['channels']}",
            "note": args.note,
            "protocol": report["protocol"],
            "bicubic": mean_scores(bicubic_report, scale),
            "macs_per_output_pixel": round(conv_macs_per_output_pixel(model)),
            "speed": relative_speed(model, scale),
        }
    )
    write_card(card_path, card)
    save_checkpoint(
        WEIGHTS / f"{args.name}_x{scale}.safetensors",
        model,
        {
            "model": metadata["model"],
            "scale": scale,
            "model_kwargs": metadata["model_kwargs"],
            "channels": metadata["channels"],
            "metrics": metrics,
            "recipe": args.recipe,
            "training_seconds": training_seconds,
            "hardware": args.hardware,
            "config": config,
            "format_version": metadata.get("format_version", 1),
        },
    )
    print(f"wrote {card_path} and its weights")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, nargs="?")
    parser.add_argument("name", nargs="?")
    parser.add_argument("--eval", type=Path)
    parser.add_argument("--bicubic-eval", type=Path, required=True)
    parser.add_argument("--hardware")
    parser.add_argument("--recipe", help="the command that trained it")
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--training-data",
        help="the card's training_data line, where it is not just the 291 images "
        "(e.g. with the scale augmentation of `superres pack --downscales`)",
    )
    parser.add_argument(
        "--earlier-seconds",
        type=float,
        default=0.0,
        help="training time of the weights this run started from (init_weights), added to its own",
    )
    parser.add_argument(
        "--checkpoint", choices=["best", "last"], default="best",
        help="best.safetensors, or the EMA of last.safetensors (GAN runs)",
    )
    parser.add_argument(
        "--denoise-base", default=None, metavar="NAME",
        help="a real-world model's clean start (a shipped Y model) when its run started from a checkpoint",
    )
    parser.add_argument(
        "--denoise-base-of", default=None, metavar="NAME",
        help="the real-world model whose --denoise slider this network is the 0 end of (real-wdn: real)",
    )
    parser.add_argument(
        "--preset-eval", action="append", default=[], metavar="PRESET=EVAL.json",
        help="a real-world model's `evaluate --lr-preset PRESET --format json` report (repeatable)",
    )
    parser.add_argument("--refresh", action="store_true", help="complete the shipped cards, publish nothing")
    parser.add_argument("--retime", action="store_true", help="with --refresh: time every model again")
    args = parser.parse_args()
    bicubic_report = json.loads(args.bicubic_eval.read_text())
    if args.refresh:
        refresh_cards(bicubic_report, retime=args.retime)
        return
    if not (args.run_dir and args.name and args.eval and args.hardware and args.recipe):
        parser.error("RUN_DIR, NAME, --eval, --hardware and --recipe are required to publish")
    publish(args, bicubic_report)


if __name__ == "__main__":
    main()
