"""`superres upscale`: upscale image files, folders or globs with a pretrained model."""

from __future__ import annotations

import argparse

from superres.errors import ModelError

DEFAULT_SCALE = 2


def supported_scales() -> tuple[int, ...]:
    """Every scale some registered model supports: what `superres models` lists (bicubic goes
    to x8; the model chosen then says whether it supports the scale asked for)."""
    from superres.models import get_model_info, list_models

    return tuple(sorted({s for name in list_models() for s in get_model_info(name).scales}))


def positive_int_argument(text: str, also: str = "") -> int:
    """A whole number >= 1 (--max-pixels, --tile); `also` names what else the option takes."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected {also}a positive integer, got '{text}'")
    return value


def add_max_pixels_argument(parser: argparse.ArgumentParser) -> None:
    """--max-pixels, shared by the commands that read images."""
    parser.add_argument(
        "--max-pixels",
        type=positive_int_argument,
        default=None,
        help="refuse images with more pixels than this (decompression bomb guard; default: "
        "what fits this machine's memory, at most 2**28)",
    )


def tile_argument(text: str) -> str | int:
    """`--tile` value: "auto" or a positive number of LR pixels."""
    if text == "auto":
        return text
    return positive_int_argument(text, also="'auto' or ")


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
        help="upscaling factor: 2, 3 or 4 with the trained models, up to 8 with bicubic "
        "(default: 2, or the checkpoint's)",
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
    add_max_pixels_argument(p)
    p.add_argument(
        "--backend", default="torch", help="inference runtime: torch or onnxruntime (default: torch)"
    )
    p.set_defaults(run=run)


def check_scale(scale: int | None) -> None:
    """An unsupported --scale is a ModelError naming it (the CLI prints it as one line)."""
    if scale is not None and scale not in (scales := supported_scales()):
        choices = ", ".join(str(supported) for supported in scales)
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
        max_pixels=args.max_pixels,
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
