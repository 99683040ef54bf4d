"""`superres models`: the registered architectures and the pretrained weights that ship."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from superres.zoo.pretrained import PretrainedEntry


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from superres.cli.doc_tables import DEFAULT_SECTION, SECTIONS  # plain data and re: no torch

    p = subparsers.add_parser(
        "models",
        help="list model architectures and shipped pretrained weights",
        description="List the registered architectures and the pretrained weights in this package, "
        "with the Set5/Set14 scores from their model cards.",
    )
    p.add_argument(
        "--time", dest="speed", action="store_true",
        help="also time every shipped model on this machine now (a few seconds per model); without it "
        "the speed column is the card's, measured against bicubic when the model was published",
    )
    p.add_argument(
        "--architectures", action="store_true",
        help="also list the registered architectures with their parameters, MACs per pixel and "
        "receptive field (builds each network: a second or two)",
    )
    sections = ", ".join(f"{name} ({what})" for name, (_, what) in SECTIONS.items())
    p.add_argument(
        "--markdown", nargs="?", const=DEFAULT_SECTION, choices=list(SECTIONS), metavar="SECTION",
        help=f"print a table of results as Markdown, from the model cards and superres.zoo.records: "
        f"{sections}; {DEFAULT_SECTION} without SECTION. The docs hold each between generated-markers; "
        "tests/test_docs.py keeps them equal, tools/regenerate_docs.py rewrites them",
    )
    p.add_argument(
        "--inspect", metavar="FILE",
        help="print what a model file holds instead: for a community .pth/.pt/.ckpt/.safetensors, the "
        "architecture spandrel detects, scale, channels, size requirements and parameters, and the "
        "receptive field, grid and memory superres measures (once per file, cached)",
    )
    # The default before --time existed; kept so that scripts that pass it keep working.
    p.add_argument("--no-speed", dest="speed", action="store_false", help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, with a dashed rule under the headers."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(cell).ljust(width) for cell, width in zip(cells, widths)).rstrip()

    return [line(headers), line(["-" * width for width in widths]), *(line(row) for row in rows)]


def architecture_rows() -> list[list[str]]:
    """name, channels, where it works, scales, parameters and MACs per output pixel (default
    kwargs, smallest scale), receptive field (LR pixels)."""
    from superres.models import create_model, get_model_info, list_models
    from superres.models.complexity import conv_macs_per_output_pixel

    rows = []
    for name in list_models():
        info = get_model_info(name)
        model = create_model(name, min(info.scales))
        parameters = sum(parameter.numel() for parameter in model.parameters())
        rows.append(
            [
                name,
                info.channels_for(),
                "pre-upsampled" if info.pre_upsample else "LR",
                ",".join(str(scale) for scale in info.scales),
                f"{parameters:,}",
                f"{conv_macs_per_output_pixel(model) / 1000:,.1f}k",
                str(info.receptive_field),
            ]
        )
    return rows


def _perceptual_score(entry: PretrainedEntry, dataset: str) -> str:
    lpips, niqe = entry.metric(dataset, "lpips_approx"), entry.metric(dataset, "niqe")
    return f"{'-' if lpips is None else f'{lpips:.4f}'} / {'-' if niqe is None else f'{niqe:.2f}'}"


def measured_speeds() -> tuple[dict[tuple[str, int], float], dict[int, float]]:
    """Output MP/s of every shipped model, and of bicubic per scale, timed now on this machine."""
    from superres.lab.frontier import QUICK_TIMING, measure_frontier
    from superres.zoo.pretrained import list_pretrained

    scales = sorted({entry.scale for entry in list_pretrained()})
    points = measure_frontier(scales, timing=QUICK_TIMING)
    speeds = {(point.name, point.scale): point.output_mp_per_s for point in points}
    bicubic = {point.scale: point.output_mp_per_s for point in points if point.name == "bicubic"}
    return speeds, bicubic


def _print_real_world(entries: list[PretrainedEntry]) -> None:
    """The real-world models' scores on the `superres degrade` presets, and the rule that sends
    an image to them when no model is named."""
    from superres.cli.doc_tables import _format_score
    from superres.inference.input_check import (
        JPEG_BLOCK_SCORE_LIMIT,
        JPEG_QUALITY_LIMIT,
        NOISE_SIGMA_LIMIT,
        REAL_WORLD_MODEL,
    )
    from superres.zoo.pretrained import card_metric

    rows = []
    for entry in entries:
        degraded = entry.card.get("metrics_degraded") or {}
        for preset, scores in degraded.items():
            metrics = {"metrics": scores}  # one preset's scores, read as a card's
            rows.append([entry.name, f"x{entry.scale}", preset, *(
                _format_score(card_metric(metrics, dataset, "psnr"), card_metric(metrics, dataset, "ssim"))
                for dataset in ("Set5", "Set14")
            )])
    if rows:
        print("Real-world models on degraded LR (`superres degrade --preset P`; PSNR / SSIM on Y):")
        for line in format_table(["name", "scale", "preset", "Set5", "Set14"], rows):
            print("  " + line)
    print(
        f"  Without --model, `superres upscale` sends a JPEG of quality <= {JPEG_QUALITY_LIMIT}, any other "
        f"image whose pixels show a JPEG's 8x8 grid (block score >= {JPEG_BLOCK_SCORE_LIMIT:g}) or an "
        f"image with noise sigma >= {NOISE_SIGMA_LIMIT:g} (of 255) to '{REAL_WORLD_MODEL}' where it ships "
        "at the scale, every other image to the default (superres.inference.input_check)."
    )


def inspect_rows(path: str) -> list[tuple[str, str]]:
    """(field, value) rows describing the model in the file at `path`: a community model file as
    detected and measured (`superres.zoo.community.describe`), a superres checkpoint by its card."""
    from superres.zoo import community
    from superres.zoo.names import load_choice, parse_model

    if community.is_community_file(path):
        return community.describe(community.load_community_model(path))
    model = load_choice(parse_model(path))
    info = model.info
    kwargs = getattr(model, "model_kwargs", {}) or {}
    return [
        ("file", path),
        ("architecture", f"{info.name} (a superres checkpoint)"),
        ("scale", str(model.scale)),
        ("channels", info.channels_for(kwargs)),
        ("model kwargs", ", ".join(f"{key}={value}" for key, value in kwargs.items()) or "-"),
        ("receptive field", f"{info.receptive_field_for(model.scale, **kwargs)} LR pixels each side"),
        ("parameters", f"{sum(parameter.numel() for parameter in model.parameters()):,}"),
    ]


def run(args: argparse.Namespace) -> int:
    from superres.cli.doc_tables import pretrained_rows, stated_protocol
    from superres.zoo.pretrained import list_pretrained

    if args.inspect:
        rows = inspect_rows(args.inspect)
        width = max(len(key) for key, _ in rows)
        for key, value in rows:
            print(f"{key.ljust(width)}  {value}")
        return 0
    if args.markdown:
        from superres.cli.doc_tables import markdown_section

        print("\n".join(markdown_section(args.markdown)))
        return 0
    # From the cards alone unless asked: answering must not wait for torch (tests/test_trip_ups.py).
    if args.architectures:
        print(
            "Architectures (parameters and MACs per output pixel at default settings and the smallest "
            "scale; receptive field: LR pixels each side, the most any scale needs):"
        )
        headers = ["name", "channels", "works on", "scales", "parameters", "MACs/px", "receptive field"]
        for line in format_table(headers, architecture_rows()):
            print("  " + line)
        print()
    rows = pretrained_rows()
    if not rows:
        print("Pretrained weights: none ship with this version; `superres upscale` uses bicubic.")
        return 0
    headers = ["name", "scale", "architecture", "Set5 PSNR / SSIM", "Set14 PSNR / SSIM", "MACs/px", "speed"]
    bicubic: dict[int, float] = {}
    if args.speed:
        speeds, bicubic = measured_speeds()
        rows = pretrained_rows(speeds)
        headers.append("output MP/s here")
    print(
        "Pretrained weights (default: what `superres upscale` uses; best: the highest Set5 PSNR; "
        "fast: `--model fast`; seed: the SRCNN and RED-Net superres started from; "
        "perceptual: GAN-trained for detail, not PSNR, used by name only; real-world: for "
        "compressed, noisy or blurred images; NAME at denoise 0: the 0 end of that real-world model's "
        "--denoise slider, used by name only; speed: output pixels per second as a multiple of "
        "bicubic's, from the card):"
    )
    for line in format_table(headers, rows):
        print("  " + line)
    if bicubic:
        rates = ", ".join(f"x{scale} {rate:.1f}" for scale, rate in sorted(bicubic.items()))
        print(
            "  Speed: 1 thread set of this machine, fast CPU path, 160x120 LR input; "
            f"bicubic in the same run: {rates} MP/s."
        )
    entries = list_pretrained()
    perceptual_rows = [
        [entry.name, f"x{entry.scale}", _perceptual_score(entry, "Set5"), _perceptual_score(entry, "Set14")]
        for entry in entries
        if entry.perceptual
    ]
    if perceptual_rows:
        print(
            "Perceptual models (lower is better: LPIPS-approx to HR, superres.evaluation.lpips; NIQE of the "
            "output alone, superres.evaluation.niqe):"
        )
        headers = ["name", "scale", "Set5 LPIPS-approx / NIQE", "Set14 LPIPS-approx / NIQE"]
        for line in format_table(headers, perceptual_rows):
            print("  " + line)
    _print_real_world(entries)
    # The cards state the protocol their scores follow; they all come from `superres evaluate`.
    protocol = stated_protocol(entries)
    print(f"  Scores: {protocol.rstrip('.')}.")
    return 0
