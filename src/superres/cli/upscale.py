"""`superres upscale`: upscale image files, folders or globs with a pretrained model."""

from __future__ import annotations

import argparse

from superres.errors import ModelError

#: Scales the command accepts (those the shipped architectures are built for).
SCALES = (2, 3, 4)
DEFAULT_SCALE = 2


def tile_argument(text: str) -> str | int:
    """`--tile` value: "auto" or a positive number of LR pixels."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive integer, got '{text}'")
    return value


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """--device and --tile, shared by the commands that run a model on images."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu or cuda (default: auto)"
    )
    parser.add_argument(
        "--tile",
        type=tile_argument,
        default="auto",
        help="tile size in LR pixels, or 'auto' to fit a memory budget (default: auto)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "upscale",
        help="upscale images with a pretrained model",
        description="Upscale image files, folders and globs. Outputs go beside each input as "
        "<stem>_x<scale><ext>, or into -o (a file for one input, else a folder). Existing "
        "outputs are skipped unless --overwrite; inputs are never overwritten.",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns"
    )
    p.add_argument("-o", "--output", help="output file (one input) or folder")
    p.add_argument(
        "--scale",
        type=int,
        default=None,
        help="upscaling factor: 2, 3 or 4 (default: 2, or the checkpoint's)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="shipped model name, 'bicubic', or a .safetensors checkpoint "
        "(default: the best shipped model for the scale)",
    )
    add_device_arguments(p)
    p.add_argument("--half", action="store_true", help="run the network in float16 (CUDA only)")
    p.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the model over the 8 flips/rotations of each image (8x the time)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--backend", default="torch", help="inference runtime: torch or onnxruntime (default: torch)"
    )
    p.set_defaults(run=run)


def check_scale(scale: int | None) -> None:
    """An unsupported --scale is a ModelError naming it (the CLI prints it as one line)."""
    if scale is not None and scale not in SCALES:
        choices = ", ".join(str(supported) for supported in SCALES)
        raise ModelError(f"scale {scale} is not supported; choose one of {choices}")


def choose_model(spec: str | None, scale: int | None) -> tuple[str, int | None]:
    """The --model value to resolve (the best shipped one by default) and the scale to ask for."""
    from superres.pretrained import default_model_for

    check_scale(scale)
    if spec is None:
        scale = DEFAULT_SCALE if scale is None else scale
        return default_model_for(scale), scale
    return spec, scale


def run(args: argparse.Namespace) -> int:
    from superres.backends import resolve_device
    from superres.upscale import upscale_files

    spec, scale = choose_model(args.model, args.scale)
    # ONNX Runtime runs on the CPU here: "auto" must not pick a GPU it cannot use.
    cpu_only = args.backend == "onnxruntime" and args.device == "auto"
    device = resolve_device("cpu" if cpu_only else args.device)
    report = upscale_files(
        args.inputs,
        args.output,
        scale=scale,
        model=spec,
        overwrite=args.overwrite,
        tile=args.tile,
        device=device,
        backend=args.backend,
        half=args.half,
        self_ensemble=args.self_ensemble,
    )
    method = f"{spec} (x8 self-ensemble)" if args.self_ensemble else spec
    parts = [f"upscaled {len(report.written)} image(s) with {method} on {device}"]
    if report.skipped:
        parts.append(f"skipped {len(report.skipped)} existing")
    if report.failed:
        parts.append(f"failed {len(report.failed)}")
    print(", ".join(parts))
    if len(report.written) == 1:
        print(f"wrote {report.written[0]}")
    return report.exit_code
