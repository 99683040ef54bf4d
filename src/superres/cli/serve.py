"""`superres serve`: a local web page for upscaling (needs the `serve` extra)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from superres.cli.options import add_device_argument
from superres.errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a local web page for upscaling images",
        description="Start a web page on this machine: drop images, pick a model and scale, "
        "compare before and after, download. Listens on 127.0.0.1 unless --host says otherwise; "
        "the page loads nothing from anywhere else.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default: 8000)")
    add_device_argument(p)
    p.add_argument(
        "--max-upload-mb", type=int, default=64, help="largest file accepted, in MiB (default: 64)"
    )
    p.add_argument(
        "--max-megapixels", type=float, default=2**24 / 1e6,
        help="largest image accepted, in millions of pixels (default: 16.78, i.e. 4096 x 4096)",
    )
    p.add_argument(
        "--models-dir", metavar="DIR",
        help="also offer the model files in DIR (.pth, .pt, .ckpt, .safetensors: community models of any "
        "architecture spandrel recognises, and superres checkpoints), by file name",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"superres serve needs {' and '.join(missing)}: pip install 'superres[serve]'"
        )
    if args.max_upload_mb < 1 or args.max_megapixels <= 0:
        raise ConfigError("--max-upload-mb and --max-megapixels must be positive")
    from superres.serve.app import Limits, serve_forever

    pixels = round(args.max_megapixels * 1e6)
    limits = Limits(
        max_upload_bytes=args.max_upload_mb * 1024**2,
        max_pixels=pixels,
        max_output_pixels=max(Limits().max_output_pixels, pixels * 4),
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: other machines can reach this page")

    def ready(url: str) -> None:
        print(f"superres serve: open {url} (Ctrl-C stops)", flush=True)

    if args.models_dir is not None and not Path(args.models_dir).is_dir():
        raise ConfigError(f"--models-dir {args.models_dir}: no such folder")
    serve_forever(
        args.host, args.port, on_ready=ready, limits=limits, device=args.device, models_dir=args.models_dir
    )
    return 0
