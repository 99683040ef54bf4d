"""`superres export`: write a model as an ONNX file (dynamic batch and size, upscale included)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from superres.errors import ModelError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX",
        description="Export a model to ONNX: input 'lr' (N, C, h, w) float32 in [0, 1], output "
        "'sr' (N, C, scale*h, scale*w), batch and size dynamic, the pre-upsampling inside the "
        "graph, model name/scale/channels in the metadata (--rgb: a Y model as an RGB graph). The "
        "file is checked against PyTorch in ONNX Runtime before it is written.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="shipped pretrained name, registered weight-free model (bicubic), a .safetensors "
        "checkpoint or a community model file (.pth, .pt, .ckpt, .safetensors; the `community` "
        "extra); with --untrained, any registered architecture",
    )
    parser.add_argument("--scale", type=int, default=None, help="scale (default: the checkpoint's, or 2)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    parser.add_argument(
        "--opset",
        type=int,
        default=None,
        # No numbers here: they live in superres.inference.export, whose torch import `--help` must not
        # wait for.
        help="ONNX opset (default: the newest the exporter writes)",
    )
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="export a freshly initialised registered architecture (random weights: for "
        "benchmarks and tests, not for images)",
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --untrained: a model argument, VALUE as JSON (e.g. num_layers=15); repeatable",
    )
    parser.add_argument(
        "--rgb",
        action="store_true",
        help="a Y model (span60, espcn, ...) as a 3-channel RGB graph: BT.601 YCbCr, the network on Y, "
        "Cb and Cr by MATLAB bicubic and back to RGB inside the graph, as `superres upscale` computes "
        "on an RGB image (before clipping and rounding)",
    )
    parser.add_argument(
        "--size",
        type=size_argument,
        default=None,
        metavar="WxH",
        help="a graph for this one LR input size, batch 1 (e.g. 256x256): the form for window-attention "
        "networks (SwinIR, HAT), whose sizes torch freezes when it traces; a multiple of the model's "
        "tile alignment (superres models --inspect) needs no padding inside",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    parser.set_defaults(run=run)


def size_argument(text: str) -> tuple[int, int]:
    """`--size WxH` (as `superres bench --sizes` writes sizes) -> (height, width)."""
    width, separator, height = text.lower().partition("x")
    if not (separator and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 256x256 (width x height)")
    return int(height), int(width)


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """['num_layers=15', 'kernel_sizes=[9,1,5]'] -> {'num_layers': 15, 'kernel_sizes': [9, 1, 5]}."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise ModelError(f"--model-arg {item!r} must look like KEY=VALUE")
        try:
            parsed[key] = json.loads(value)
        except ValueError:
            parsed[key] = value  # a bare word: keep it as a string
    return parsed


def _model(args: argparse.Namespace):
    if args.untrained:
        from superres.models import create_model

        return create_model(
            args.model, 2 if args.scale is None else args.scale, **parse_model_args(args.model_arg)
        )
    if args.model_arg:
        raise ModelError("--model-arg only applies with --untrained (trained models carry their own)")
    from superres.zoo.names import resolve_model

    return resolve_model(args.model, args.scale)


def run(args: argparse.Namespace) -> int:
    from superres.inference.export import DEFAULT_OPSET, export_onnx
    from superres.zoo.names import looks_like_path

    if args.output.suffix.lower() != ".onnx":
        raise ModelError(f"output file {args.output} should end in .onnx")
    model = _model(args)
    # The name the user gave (release name or checkpoint file), so the file says where it came from.
    name = Path(args.model).name if looks_like_path(args.model) else args.model
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    path = export_onnx(
        model, args.output, opset=opset, verify=not args.no_verify, name=name, rgb=args.rgb, size=args.size
    )
    size_kib = path.stat().st_size / 1024
    channels = model.info.channels_for(model.model_kwargs)
    on = "RGB (a Y network, colour conversion in the graph)" if args.rgb else channels
    shape = "" if args.size is None else f", for {args.size[1]}x{args.size[0]} LR input only (batch 1)"
    print(f"wrote {path} ({size_kib:,.0f} KiB): {model.info.name} x{model.scale} on {on}{shape}, "
          f"opset {opset}")
    return 0

