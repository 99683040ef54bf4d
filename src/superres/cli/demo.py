"""`superres demo`: degrade the built-in sample at x2, upscale it, print scores, write a figure."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from superres.cli.options import add_device_argument

DEMO_SCALE = 2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="upscale the built-in sample image and show how it compares to bicubic",
        description="Make an LR image from the built-in sample with MATLAB bicubic at x2, upscale "
        "it with bicubic and with the default pretrained model, print PSNR/SSIM and write the SR "
        "image and a comparison figure.",
    )
    p.add_argument(
        "-o", "--output", default="demo-output", help="folder to write into (default: demo-output)"
    )
    add_device_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from superres.images import write_image
    from superres.images.sample_photo import sample_credit, sample_image
    from superres.inference.backends import make_backend, resolve_device
    from superres.lab.figure import PROTOCOL_NOTE, compare_images, degrade, save_comparison_figure
    from superres.zoo.names import resolve_model
    from superres.zoo.pretrained import FALLBACK_MODEL, default_model_for

    started = time.perf_counter()
    device = resolve_device(args.device)
    spec = default_model_for(DEMO_SCALE)
    model = resolve_model(spec, DEMO_SCALE, device=str(device))
    hr, lr = degrade(sample_image(), DEMO_SCALE)
    print(f"Sample: {sample_credit()}")
    print(
        f"  HR {hr.shape[1]}x{hr.shape[0]} -> LR {lr.shape[1]}x{lr.shape[0]} "
        f"(MATLAB bicubic, x{DEMO_SCALE})"
    )
    if spec == FALLBACK_MODEL:
        print("Model: bicubic (no pretrained weights ship with this version yet)")
    else:
        print(f"Model: {spec} (the shipped x{DEMO_SCALE} model with the best Set5 PSNR)")

    backend = make_backend(model, "torch", device)
    comparison = compare_images(lr, model, hr=hr, backend=backend, model_label=spec)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    sr_path = output / f"sample_{spec}_x{DEMO_SCALE}.png"
    write_image(sr_path, comparison.sr)
    figure_path = save_comparison_figure(comparison, output / f"comparison_x{DEMO_SCALE}.png")

    print(f"{'method':<20}{'PSNR (dB)':>10}{'SSIM':>9}")
    for method, (psnr, ssim) in comparison.scores.items():
        label = "bicubic (MATLAB)" if method == "bicubic" else f"SR: {spec}"
        print(f"{label:<20}{psnr:>10.2f}{ssim:>9.4f}")
    print("Scores: " + PROTOCOL_NOTE.replace("`scale`", str(DEMO_SCALE)) + ".")
    print(f"Wrote {sr_path} and {figure_path} in {time.perf_counter() - started:.1f} s")
    return 0
