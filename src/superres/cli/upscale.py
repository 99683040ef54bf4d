"""`superres upscale`: upscale image files, folders, globs and videos with a pretrained model.

Batches resume after a kill (`superres.batch`'s journal), split into `--shard i/N`, and run on a
Dask cluster with `--dask` / `--scheduler` (`superres.cluster`); videos go through
`superres.video`. The last line is the summary (done, skipped, failed); the exit code is 1 when
anything failed.
"""

from __future__ import annotations

import argparse

from superres.cli.options import add_device_arguments, add_max_pixels_argument, positive_int_argument
from superres.errors import ModelError

DEFAULT_SCALE = 2


def supported_scales() -> tuple[int, ...]:
    """Every scale some registered model supports: what `superres models` lists (bicubic goes
    to x8; the model chosen then says whether it supports the scale asked for)."""
    from superres.models import get_model_info, list_models

    return tuple(sorted({s for name in list_models() for s in get_model_info(name).scales}))


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
    scale_out = p.add_argument_group("batches, clusters and video")
    scale_out.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="upscale only the I-th of N parts of the batch (0 <= I < N), e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT: every file falls in exactly one part",
    )
    scale_out.add_argument(
        "--batch-size",
        type=positive_int_argument,
        default=None,
        help="most small images of one size per network call (default: 8)",
    )
    scale_out.add_argument(
        "--dask", action="store_true", help="run the batch on a local Dask cluster (the dask extra)"
    )
    scale_out.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="run the batch on this Dask scheduler"
    )
    scale_out.add_argument(
        "--workers",
        type=positive_int_argument,
        default=None,
        help="worker processes of the local Dask cluster (default: 2)",
    )
    scale_out.add_argument(
        "--segment-frames",
        type=positive_int_argument,
        default=None,
        help="video frames per resumable segment (default: 120)",
    )
    p.set_defaults(run=run)


def check_scale(scale: int | None) -> None:
    """An unsupported --scale is a ModelError naming it (the CLI prints it as one line)."""
    if scale is not None and scale not in (scales := supported_scales()):
        choices = ", ".join(str(supported) for supported in scales)
        raise ModelError(f"scale {scale} is not supported; choose one of {choices}")


def choose_model(spec: str | None, scale: int | None) -> tuple[str, int | None]:
    """The --model value to resolve (the best shipped one by default) and the scale to ask for."""
    from superres.pretrained import FAST_ALIAS, default_model_for, fastest_model_for

    check_scale(scale)
    # The aliases are resolved here so that messages name the model that actually runs.
    if spec is None or spec == FAST_ALIAS:
        scale = DEFAULT_SCALE if scale is None else scale
        return (default_model_for if spec is None else fastest_model_for)(scale), scale
    return spec, scale


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from superres.backends import resolve_device
    from superres.upscale import DEFAULT_BATCH_SIZE, BatchReport, upscale_files
    from superres.video import is_video

    spec, scale = choose_model(args.model, args.scale)
    # ONNX Runtime runs on the CPU here: "auto" must not pick a GPU it cannot use.
    cpu_only = args.backend == "onnxruntime" and args.device == "auto"
    device = resolve_device("cpu" if cpu_only else args.device)
    cluster = args.scheduler or ("local" if args.dask else None)
    videos = [Path(item) for item in args.inputs if is_video(item)]
    images = [item for item in args.inputs if not is_video(item)]
    report = BatchReport()
    if images:
        report = upscale_files(
            images,
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
            shard=args.shard,
            batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
            cluster=cluster,
            workers=args.workers,
        )
    if videos:
        report.extend(_upscale_videos(videos, args, spec, scale, device))
    method = f"{spec} (x8 self-ensemble)" if args.self_ensemble else spec
    print(f"upscaled with {method} on {device}: {report.summary()}")
    if len(report.written) == 1:
        print(f"wrote {report.written[0]}")
    return report.exit_code


def _upscale_videos(
    videos: list, args: argparse.Namespace, spec: str, scale: int | None, device: object
) -> object:
    """The videos among the inputs, with a model loaded for them (`superres.video`)."""
    from pathlib import Path

    from superres.upscale import DEFAULT_BATCH_SIZE, BatchSettings, ImageBatchWorker
    from superres.video import DEFAULT_SEGMENT_FRAMES, upscale_videos

    worker = ImageBatchWorker(
        BatchSettings(
            model=spec, scale=scale, tile=args.tile, device=str(device), backend=args.backend,
            half=args.half, self_ensemble=args.self_ensemble, max_pixels=args.max_pixels,
            batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
        )
    )
    output = Path(args.output) if args.output else None
    return upscale_videos(
        videos, output, worker, overwrite=args.overwrite,
        segment_frames=args.segment_frames or DEFAULT_SEGMENT_FRAMES,
    )

