"""`superres evaluate`: mean PSNR/SSIM of a model on benchmark folders at several scales."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from superres.cli.options import (
    add_device_argument,
    add_max_pixels_argument,
    add_precision_argument,
    seed_argument,
)
from superres.errors import ConfigError

#: How the LPIPS column is made (kept here so that `--help` does not import torch).
LPIPS_LABEL = "LPIPS-approx: LPIPS's v0.1 VGG linear layers over the HED VGG16 trunk, Y as gray"
GRID_LABEL = "grid: std over the scale x scale output phases of the mean Y error (gray levels)"
NIQE_LABEL = "NIQE of SR alone (no reference; the MATLAB release's model, lower is more natural)"

if TYPE_CHECKING:
    from superres.evaluation.protocol import EvalResult, ImageScore, Protocol


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on benchmark folders (paper protocol)",
        description="Score a model on folders of HR images. LR images are made on the fly by "
        "MATLAB-compatible bicubic downscaling (or read from --lr-dir), and PSNR/SSIM are computed "
        "on the BT.601 Y channel with the border shaved, as the SR papers do.",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="folders of HR images (e.g. Set5/HR)")
    parser.add_argument(
        "--model", default="bicubic",
        help="registered or shipped model name, a .safetensors checkpoint or a community model file "
        "(.pth, .pt, .ckpt, .safetensors)",
    )
    parser.add_argument("--scale", type=int, nargs="+", default=[2, 3, 4], help="scales (default 2 3 4)")
    parser.add_argument(
        "--lr-dir",
        type=Path,
        help="read LR images from this folder instead (with one folder: LR_DIR/X{scale}/NAME or LR_DIR/NAME)",
    )
    parser.add_argument(
        "--lr-preset",
        choices=["jpeg", "noise-jpeg", "real"],
        help="make the LR by this fixed degradation in memory, exactly as `superres degrade --preset` "
        "writes it (with --lr-seed)",
    )
    parser.add_argument("--lr-seed", type=seed_argument, default=0, help="seed of --lr-preset (default 0)")
    parser.add_argument("--per-image", action="store_true", help="also print every image's score")
    parser.add_argument("--format", choices=["table", "markdown", "csv", "json"], default="table")
    parser.add_argument("--save-dir", type=Path, help="write the SR images here")
    add_device_argument(parser)
    add_precision_argument(parser, default="fp32")
    add_max_pixels_argument(parser)
    parser.add_argument("--shave", type=int, help="border pixels left out (default: the scale)")
    parser.add_argument("--rgb", action="store_true", help="score all RGB channels instead of Y")
    parser.add_argument(
        "--no-round-y", action="store_true", help="keep Y unrounded (MATLAB rounds it for uint8 images)"
    )
    parser.add_argument(
        "--gray-through-rgb",
        action="store_true",
        help="score gray images as R=G=B through BT.601 instead of as their own Y",
    )
    parser.add_argument("--quantize-lr", action="store_true", help="round the synthetic LR to uint8")
    parser.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the model over the 8 flips/rotations (reported as MODEL+x8, like EDSR+)",
    )
    parser.add_argument(
        "--lpips",
        action="store_true",
        help="also score LPIPS-approx (lower is better) on the same planes: LPIPS's linear layers over a "
        "locally installed VGG16 trunk (make perceptual-metric; superres.evaluation.lpips says how it "
        "differs)",
    )
    parser.add_argument(
        "--niqe",
        action="store_true",
        help="also score NIQE of the SR plane alone (no reference, lower is more natural; "
        "superres.evaluation.niqe)",
    )
    parser.add_argument(
        "--grid",
        action="store_true",
        help="also the sub-pixel lattice: the spread over the scale x scale output phases of the mean "
        "error, in gray levels (a pixel-shuffle grid; ~0.1-0.2 for a model without one)",
    )
    parser.set_defaults(run=run)


def _lr_dir_for(lr_dir: Path | None, scale: int) -> Path | None:
    if lr_dir is None:
        return None
    scaled = lr_dir / f"X{scale}"
    return scaled if scaled.is_dir() else lr_dir


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: they load torch, which `superres --help` must not wait for.
    from superres.evaluation.protocol import Protocol, dataset_name, evaluate_model
    from superres.inference.backends import make_backend, resolve_device
    from superres.ops.ensemble import ENSEMBLE_LABEL
    from superres.zoo.names import resolve_model

    protocol = Protocol(
        y_only=not args.rgb,
        shave=args.shave,
        round_y=not args.no_round_y,
        gray_as_y=not args.gray_through_rgb,
        quantize_lr=args.quantize_lr,
        lr_preset=args.lr_preset,
        lr_seed=args.lr_seed,
    )
    if args.lr_dir is not None and args.lr_preset is not None:
        raise ConfigError("--lr-dir reads LR files, --lr-preset makes them: give one")
    if args.lr_dir is not None and len(args.folders) != 1:
        raise ConfigError("--lr-dir goes with exactly one HR folder")
    device = resolve_device(args.device)
    perceptual = None
    if args.lpips:
        from superres.evaluation.lpips import LpipsApprox

        perceptual = LpipsApprox().planes
    no_reference = None
    if args.niqe:
        if args.rgb:
            raise ConfigError("--niqe scores the Y plane; leave out --rgb")
        from superres.evaluation.niqe import loaded_niqe

        no_reference = loaded_niqe()
    results: list[EvalResult] = []
    model_name = args.model
    if args.self_ensemble:
        model_name += ENSEMBLE_LABEL
    for scale in args.scale:
        model = resolve_model(args.model, scale, device=str(device))
        backend = make_backend(
            model, "torch", device, self_ensemble=args.self_ensemble, precision=args.precision
        )
        for folder in args.folders:
            save_dir = args.save_dir / dataset_name(folder) if args.save_dir else None
            results.append(
                evaluate_model(
                    model,
                    folder,
                    scale,
                    protocol=protocol,
                    lr_dir=_lr_dir_for(args.lr_dir, scale),
                    save_dir=save_dir,
                    model_name=model_name,
                    backend=backend,
                    max_pixels=args.max_pixels,
                    perceptual=perceptual,
                    no_reference=no_reference,
                    grid=args.grid,
                )
            )
    print(format_results(results, args.format, per_image=args.per_image, protocol=protocol), end="")
    return 0


def _row(result: EvalResult, score: EvalResult | ImageScore, image: str) -> dict:
    """One output row: `score` is the result itself (its means) or one of its images."""
    row = {"model": result.model, "dataset": result.dataset, "scale": result.scale, "image": image,
           "psnr": round(score.psnr, 4), "ssim": round(score.ssim, 4)}
    if result.precision != "fp32":  # the cards' scores are fp32: say when a row is not
        row["precision"] = result.precision
    for key, value in (("lpips_approx", score.lpips), ("niqe", score.niqe), ("grid", score.grid)):
        if value is not None:
            row[key] = round(value, 4)
    return row


def _rows(results: list[EvalResult], per_image: bool) -> list[dict]:
    rows = []
    for result in results:
        rows.append(_row(result, result, "(mean)"))
        if per_image:
            rows.extend(_row(result, image, image.name) for image in result.per_image)
    return rows


def format_results(results: list[EvalResult], fmt: str, *, per_image: bool, protocol: Protocol) -> str:
    """Render results as a text table, markdown, CSV or JSON, with the protocol stated."""
    rows = _rows(results, per_image)
    perceptual = any("lpips_approx" in row for row in rows)
    natural = any("niqe" in row for row in rows)
    lattice = any("grid" in row for row in rows)
    described = protocol.describe() + (f"; {LPIPS_LABEL} on the same planes" if perceptual else "")
    described += f"; {NIQE_LABEL} on the same planes" if natural else ""
    described += f"; {GRID_LABEL}" if lattice else ""
    lowered = sorted({row["precision"] for row in rows if "precision" in row})
    if lowered:
        described += f"; the network computed in {', '.join(lowered)} (superres.inference.precision)"
    if fmt == "json":
        return json.dumps({"protocol": described, "results": rows}, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["model"])
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    header = ["model", "dataset", "scale", "image", "PSNR (dB)", "SSIM"]
    header += ["LPIPS-approx"] if perceptual else []
    header += ["NIQE"] if natural else []
    header += ["grid"] if lattice else []
    lines = [
        [r["model"] + (f" [{r['precision']}]" if "precision" in r else ""), r["dataset"], f"x{r['scale']}",
         r["image"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"]
        + ([f"{r['lpips_approx']:.4f}"] if perceptual else [])
        + ([f"{r['niqe']:.3f}"] if natural else [])
        + ([f"{r['grid']:.3f}"] if lattice else [])
        for r in rows
    ]
    if not per_image:
        header.remove("image")
        lines = [line[:3] + line[4:] for line in lines]
    if fmt == "markdown":
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
    else:
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
        out = [
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *lines]
        ]
    return "\n".join(out) + f"\n\nProtocol: {described}.\n"
