"""`superres compare`: the LR / bicubic / SR / HR figure with zoomed crops and PSNR/SSIM."""

from __future__ import annotations

import argparse

from superres.cli.options import add_device_arguments, add_max_pixels_argument
from superres.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="draw LR, bicubic, SR and HR side by side with zoomed crops and PSNR/SSIM",
        description="Upscale an LR image with bicubic and with one or more models (e.g. a PSNR "
        "model and a perceptual one) and draw them side by side (with the HR image when --hr is "
        "given, or when --from-hr makes the LR from IMAGE), each with a zoomed crop and, against "
        "HR, PSNR/SSIM by the paper protocol (and LPIPS-approx with --lpips).",
    )
    p.add_argument(
        "image", metavar="LR_OR_HR_IMAGE", help="the LR image (or the HR one with --from-hr)"
    )
    p.add_argument("--hr", help="HR reference for the LR image (its size must be scale x LR)")
    p.add_argument(
        "--from-hr",
        action="store_true",
        help="IMAGE is the HR image: make the LR from it with MATLAB bicubic "
        "(modcrop, imresize 1/scale)",
    )
    p.add_argument(
        "--scale", type=int, default=None, help="2, 3 or 4 (default: 2, or the checkpoint's)"
    )
    p.add_argument(
        "--model",
        nargs="+",
        default=None,
        help="one or more shipped model names, 'bicubic', .safetensors checkpoints or community "
        "model files (.pth, .pt, .ckpt, .safetensors), drawn in "
        "this order (default: the default model of the scale)",
    )
    p.add_argument("-o", "--output", required=True, help="figure file to write (PNG)")
    p.add_argument(
        "--crop", default=None, help="zoomed region x,y,w,h in SR pixels (default: most detailed)"
    )
    p.add_argument(
        "--lpips",
        action="store_true",
        help="also print and caption LPIPS-approx to HR (lower is closer; superres.evaluation.lpips)",
    )
    p.add_argument(
        "--niqe",
        action="store_true",
        help="also print and caption NIQE of each output (no reference, lower is more natural; "
        "superres.evaluation.niqe)",
    )
    add_device_arguments(p)
    add_max_pixels_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # The model choice `superres upscale` makes (the best shipped model for the scale).
    from superres.cli.upscale import choose_model
    from superres.images import DEFAULT_MAX_PIXELS, read_image
    from superres.inference.backends import make_backend, resolve_device
    from superres.lab.figure import (
        PROTOCOL_NOTE,
        compare_images,
        degrade,
        parse_crop,
        save_comparison_figure,
        to_uint8,
    )
    from superres.ops.resize import modcrop
    from superres.zoo.names import resolve_model

    if args.from_hr and args.hr:
        raise ConfigError("give either --hr or --from-hr, not both")
    crop = parse_crop(args.crop) if args.crop else None
    device = resolve_device(args.device)
    specs, scale, models = [], args.scale, []
    for requested in args.model or [None]:
        spec, scale = choose_model(requested, scale)
        model = resolve_model(spec, scale, device=str(device))
        scale = int(model.scale)  # the first model fixes the scale of the others
        specs.append(spec)
        models.append(model)
    perceptual = None
    if args.lpips:
        from superres.evaluation.lpips import LpipsApprox

        perceptual = LpipsApprox().planes
    no_reference = None
    if args.niqe:
        from superres.evaluation.niqe import loaded_niqe

        no_reference = loaded_niqe()

    limit = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    image = to_uint8(read_image(args.image, max_pixels=limit).pixels)
    if args.from_hr:
        hr, lr = degrade(image, scale)
    else:
        lr = image
        hr = modcrop(to_uint8(read_image(args.hr, max_pixels=limit).pixels), scale) if args.hr else None
    runs = [(spec, model, make_backend(model, "torch", device)) for spec, model in zip(specs, models)]
    comparison = compare_images(
        lr, runs[0][1], hr=hr, crop=crop, tile=args.tile, backend=runs[0][2], model_label=runs[0][0],
        more_models=runs[1:], perceptual=perceptual, no_reference=no_reference,
    )
    path = save_comparison_figure(comparison, args.output)

    for method in dict.fromkeys([*comparison.scores, *comparison.naturalness]):  # in panel order
        label = "bicubic (MATLAB)" if method == "bicubic" else f"SR: {method}"
        psnr_ssim = comparison.scores.get(method)
        distance, natural = comparison.distances.get(method), comparison.naturalness.get(method)
        columns = [] if psnr_ssim is None else [f"PSNR {psnr_ssim[0]:.2f} dB  SSIM {psnr_ssim[1]:.4f}"]
        columns += [] if distance is None else [f"LPIPS-approx {distance:.4f}"]
        columns += [] if natural is None else [f"NIQE {natural:.3f}"]
        print(f"{label:<24} " + "  ".join(columns))
    if comparison.scores:
        print("Scores: " + PROTOCOL_NOTE.replace("`scale`", str(scale)) + ".")
    print(f"wrote {path}")
    return 0
