"""Copy a finished training run into the package as shipped weights with a model card.

    python tools/publish_weights.py RUN_DIR NAME --eval EVAL.json --hardware "..." --recipe "..."
        [--note "..."] [--earlier-seconds S]

RUN_DIR is a `superres train` run folder (best.safetensors, config.json, history.csv); EVAL.json is
the output of `superres evaluate ... --model RUN_DIR/best.safetensors --format json`. Writes
src/superres/weights/NAME_x<scale>.safetensors (weights only, metadata with the card's facts) and
NAME_x<scale>.json (the model card `superres models` shows).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
from pathlib import Path

from superres.atomic import atomic_write_bytes
from superres.checkpoint import load_model, save_checkpoint
from superres.pretrained import write_model_card

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "superres" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--eval", type=Path, required=True)
    parser.add_argument("--hardware", required=True)
    parser.add_argument("--recipe", required=True, help="the command that trained it")
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--earlier-seconds",
        type=float,
        default=0.0,
        help="training time of the weights this run started from (init_weights), added to its own",
    )
    args = parser.parse_args()

    model, metadata = load_model(args.run_dir / "best.safetensors")
    config = json.loads((args.run_dir / "config.json").read_text())
    history = list(csv.DictReader((args.run_dir / "history.csv").open()))
    training_seconds = float(history[-1]["elapsed_s"]) + args.earlier_seconds
    report = json.loads(args.eval.read_text())
    metrics = {
        row["dataset"]: {"psnr": row["psnr"], "ssim": row["ssim"]}
        for row in report["results"]
        if row["image"] == "(mean)"
    }
    scale = int(metadata["scale"])
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
            "selected_by": "highest Set5 PSNR among the validations of the run (the papers' practice)",
            "training_data": "T91 + BSD200 (the 291 images), Y channel",
            "note": args.note,
            "protocol": report["protocol"],
        }
    )
    atomic_write_bytes(card_path, (json.dumps(card, indent=2) + "\n").encode("utf-8"))
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


if __name__ == "__main__":
    main()
