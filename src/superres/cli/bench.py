"""`superres bench`: inference and training speed per model and backend, against fp32 matmul.

The text table goes to stdout, or the JSON document `superres.lab.bench.run_bench` describes with
`--json`; progress lines go to stderr so that `--json` output stays clean.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from superres.lab.bench import BenchSettings

#: `--scales` when none are given (the pipeline measurement takes the model's own instead).
DEFAULT_SCALES = (2,)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure inference and training speed",
        description="Time each model on each backend at fixed output sizes (batch 1), against plain "
        "PyTorch eager and the machine's fp32 matmul rate measured in the same run; then a "
        "training step, fast path vs eager. Models carry random weights (speed does not depend on "
        "them), at the configuration their card names for benchmarks.",
    )
    parser.add_argument(
        "--models", nargs="+", default=None, help="registered model names (default: all)"
    )
    parser.add_argument(
        "--scales", nargs="+", type=int, default=None,
        help="scales (default 2; with --pipeline and a model file, the file's own)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["torch", "torch-bf16", "onnxruntime"],
        choices=["torch", "torch-bf16", "onnxruntime"],
        help="runtimes and precisions besides the eager baseline: the torch fast path in float32 and "
        "with bf16 inner convolutions (where the CPU has bf16), ONNX Runtime (float32)",
    )
    parser.add_argument(
        "--sizes", nargs="+", default=None, metavar="WxH", help="output sizes (default 512x512 1280x720)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 1)")
    parser.add_argument("--no-training", action="store_true", help="skip the training-step measurements")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one repeat, small test configurations of the models: a smoke test in seconds",
    )
    parser.add_argument("--json", action="store_true", help="print JSON (fields: see superres.lab.bench)")
    parser.add_argument(
        "--folder-throughput",
        metavar="FOLDER",
        default=None,
        help="instead: images/s upscaling FOLDER with the default model at the first --scales, "
        "the overlapped batch runner against a plain read-upscale-write loop",
    )
    parser.add_argument(
        "--pipeline",
        metavar="WxH",
        default=None,
        help="instead: time `superres upscale`'s pipeline on one WxH photo-like image (e.g. 4000x3000) "
        "with --model at the first --scales (default: the model's own), at each --precisions with "
        "auto tiles, and in one pass where that fits in memory; each run a fresh process: time ratios "
        "against the first precision, the tiling overhead (tiled time / one-pass time) and each "
        "run's peak memory",
    )
    parser.add_argument(
        "--model", default="default",
        help="with --pipeline: a shipped model name or a model file (.pth, .pt, .ckpt, .safetensors: a "
        "community model of any architecture spandrel recognises, or a superres checkpoint), run as "
        "`superres upscale --model` runs it (default: the default)",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "auto"],
        choices=["fp32", "bf16", "auto"],
        help="with --pipeline: the precisions, the first the baseline (default: fp32 auto)",
    )
    parser.add_argument(
        "--no-one-pass", action="store_true", help="with --pipeline: skip the one-pass (tiling overhead) runs"
    )
    parser.set_defaults(run=run)


def settings_from(args: argparse.Namespace) -> BenchSettings:
    """The `BenchSettings` the command line asks for."""
    # Imported here, not at the top: superres.lab.bench loads torch, which `--help` must not wait for.
    from superres.lab.bench import DEFAULT_MODELS, BenchSettings, parse_size

    overrides: dict = {
        "models": tuple(args.models) if args.models else DEFAULT_MODELS,
        "scales": tuple(args.scales or DEFAULT_SCALES),
        "backends": tuple(dict.fromkeys(args.backends)),
        "training": not args.no_training,
    }
    if args.sizes:
        overrides["sizes"] = tuple(parse_size(text) for text in args.sizes)
    if args.repeats is not None:
        overrides["repeats"] = args.repeats
        overrides["training_repeats"] = args.repeats
    if args.warmup is not None:
        overrides["warmup"] = args.warmup
    return BenchSettings.quick_run(**overrides) if args.quick else BenchSettings(**overrides)


def run(args: argparse.Namespace) -> int:
    if args.pipeline is not None:
        return _run_pipeline(args)
    if args.folder_throughput is not None:
        from superres.lab.bench_batch import format_throughput, measure_folder_throughput

        scale = (args.scales or DEFAULT_SCALES)[0]
        result = measure_folder_throughput(args.folder_throughput, scale=scale, device="cpu")
        print(json.dumps(result, indent=2) if args.json else format_throughput(result))
        return 0
    from superres.lab.bench import format_table, run_bench

    settings = settings_from(args)

    def progress(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    result = run_bench(settings, progress=progress)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _run_pipeline(args: argparse.Namespace) -> int:
    from superres.lab.bench import parse_size
    from superres.lab.bench_pipeline import format_pipeline, measure_pipeline

    height, width = parse_size(args.pipeline)

    def progress(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    # No --scales: the model's own scale (a file's, or the one a shipped name ships at), else 2.
    result = measure_pipeline(
        width, height, model=args.model, scale=args.scales[0] if args.scales else None,
        precisions=tuple(dict.fromkeys(args.precisions)), repeats=args.repeats or 1,
        tiling=not args.no_one_pass, progress=progress,
    )
    print(json.dumps(result, indent=2) if args.json else format_pipeline(result))
    return 0
