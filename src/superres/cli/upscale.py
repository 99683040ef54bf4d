"""`superres upscale`: upscale image files, folders, globs and videos with a pretrained model.

Batches resume after a kill (`superres.batch.journal`'s journal), split into `--shard i/N`, and run on a
Dask cluster with `--dask` / `--scheduler` (`superres.batch.cluster`); videos go through
`superres.batch.video`. The last line is the summary (done, skipped, failed); the exit code is 1 when
anything failed.
"""

from __future__ import annotations

import argparse

from superres.cli.options import (
    add_device_arguments,
    add_max_pixels_argument,
    add_precision_argument,
    colour_argument,
    positive_int_argument,
    quality_argument,
)
from superres.errors import ConfigError, ModelError


def scale_argument(text: str) -> int | float:
    """`--scale`: a whole factor (2) or a fraction above 1 (1.5)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 1 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"the scale must be above 1, got {text}")
    return int(value) if value.is_integer() else value


def supported_scales() -> tuple[int, ...]:
    """Every scale some registered model supports: what `superres models` lists (bicubic goes
    to x8; the model chosen then says whether it supports the scale asked for)."""
    from superres.models import get_model_info, list_models

    return tuple(sorted({s for name in list_models() for s in get_model_info(name).scales}))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "upscale",
        help="upscale images with a pretrained model",
        description="Upscale image files, folders, globs and videos (.mp4, .m4v, .mov, .mkv, .webm, .avi, "
        "with the video extra: frames through the same model, audio copied, resumable). Outputs go "
        "beside each input as <stem>_x<scale><ext>, or into -o (a file for one input, else a folder). "
        "Existing outputs are skipped unless --overwrite; inputs are never overwritten. Examples: "
        "superres upscale photo.jpg; superres upscale photos/ -o out/ --format webp; "
        "superres upscale clip.mp4 --scale 2 -o clip_x2.mp4",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns"
    )
    p.add_argument("-o", "--output", help="output file (one input) or folder")
    p.add_argument(
        "--scale",
        type=scale_argument,
        default=None,
        help="upscaling factor: 2, 3 or 4 with the trained models, up to 8 with bicubic "
        "(default: 2, or the checkpoint's); a fraction such as 1.5 runs the model at the next whole "
        "scale, then downscales (antialiased bicubic)",
    )
    p.add_argument(
        "--width", type=positive_int_argument, default=None, metavar="PIXELS",
        help="output width (the height follows the aspect ratio unless --height is given too); the "
        "model runs at the smallest scale that reaches it, then the result is downscaled",
    )
    p.add_argument(
        "--height", type=positive_int_argument, default=None, metavar="PIXELS", help="output height"
    )
    p.add_argument(
        "--model",
        default=None,
        help="shipped model name ('real' for compressed, noisy or blurred photos), 'fast', 'bicubic', "
        "a .safetensors checkpoint or a community model file (.pth, .pt, .ckpt, .safetensors of any "
        "architecture spandrel recognises) (default: per image, the real-world model 'real' for a JPEG of "
        "quality <= 90, an image whose pixels show a JPEG's 8x8 grid (a JPEG saved again as PNG) or a "
        "noisy image where it ships at the scale, else the best shipped model for "
        "the scale)",
    )
    p.add_argument(
        "--denoise",
        type=float,
        default=None,
        metavar="S",
        help="with a real-world model: denoising strength from 0 (keep noise and JPEG artefacts, sharpest) "
        "to 1 (the trained network), as Real-ESRGAN's --denoise_strength (default: the strength the "
        "model's card names, default_denoise, chosen on Set5; docs/real-world.md lists them)",
    )
    add_device_arguments(p)
    p.add_argument("--half", action="store_true", help="run the network in float16 (CUDA only)")
    add_precision_argument(p)
    p.add_argument(
        "--self-ensemble",
        action="store_true",
        help="average the model over the 8 flips/rotations of each image (8x the time)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--format",
        dest="output_format",
        default=None,
        metavar="EXT",
        help="the outputs' format: png, jpg, webp, tiff or bmp (default: each input's own; GIF becomes PNG)",
    )
    p.add_argument(
        "--quality",
        type=quality_argument,
        default=95,
        metavar="1..100",
        help="JPEG and WebP quality (default 95)",
    )
    p.add_argument(
        "--background",
        type=colour_argument,
        default=(255, 255, 255),
        metavar="COLOUR",
        help="where an image with transparency is written to a format without it (JPEG, BMP): the colour "
        "it is flattened onto, with a warning (a name, #rrggbb or R,G,B; default white)",
    )
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
        "--start", type=float, default=0.0, metavar="SECONDS",
        help="video: begin this many seconds in (to try a model on part of a clip first)",
    )
    scale_out.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS", help="video: upscale this many seconds"
    )
    scale_out.add_argument(
        "--frames", type=positive_int_argument, default=None, metavar="N",
        help="video: upscale at most N frames",
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
    """The --model value to resolve (the best shipped one by default) and the scale to ask for:
    --scale, or the one scale a shipped name ships at (`span-gan`: x4), or the default scale.
    A checkpoint path keeps None: its own scale. Aliases are resolved here so that messages name
    the model that actually runs."""
    from superres.zoo import DEFAULT_ALIAS
    from superres.zoo.names import parse_model

    check_scale(scale)
    choice = parse_model(DEFAULT_ALIAS if spec is None else spec, scale)
    return choice.name, choice.scale


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from superres.batch.files import upscale_files
    from superres.batch.video import is_video
    from superres.batch.worker import DEFAULT_BATCH_SIZE, BatchReport
    from superres.inference.backends import resolve_device

    output_size, model_scale = _output_size(args)
    spec, scale = choose_model(args.model, model_scale)
    if args.denoise is not None:
        spec = _with_denoise(args.model, spec, args.denoise)
    # ONNX Runtime runs on the CPU here: "auto" must not pick a GPU it cannot use.
    cpu_only = args.backend == "onnxruntime" and args.device == "auto"
    device = resolve_device("cpu" if cpu_only else args.device)
    cluster = args.scheduler or ("local" if args.dask else None)
    videos = [Path(item) for item in args.inputs if is_video(item)]
    images = [item for item in args.inputs if not is_video(item)]
    clip_options = args.start or args.duration is not None or args.frames is not None
    if clip_options and not videos:
        raise ConfigError("--start, --duration and --frames choose part of a video; no video was given")
    report = BatchReport()
    # No model named: each image goes to the clean default or, when compressed or noisy, to the
    # real-world model (superres.inference.input_check); a named model takes them all.
    if args.model is None and args.denoise is None:
        routes = _route_by_condition(images, scale, args.max_pixels, args.output, args.output_format)
    else:
        routes = {spec: images}
    for route_spec, route_images in routes.items():
        report.extend(upscale_files(
            route_images,
            args.output,
            scale=scale,
            model=route_spec,
            overwrite=args.overwrite,
            tile=args.tile,
            device=device,
            backend=args.backend,
            half=args.half,
            precision=args.precision,
            self_ensemble=args.self_ensemble,
            max_pixels=args.max_pixels,
            shard=args.shard,
            batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
            cluster=cluster,
            workers=args.workers,
            background=args.background,
            output_format=args.output_format,
            quality=args.quality,
            output_size=output_size,
        ))
    if videos:
        report.extend(_upscale_videos(videos, args, spec, scale, device))
    method = " / ".join(routes) if images else spec
    method = f"{method} (x8 self-ensemble)" if args.self_ensemble else method
    if output_size is not None and images:
        method = f"{method} at x{scale}, then downscaled to {output_size.label()} (antialiased bicubic)"
    print(f"upscaled with {method} on {device}: {report.summary()}")
    if len(report.written) == 1:
        print(f"wrote {report.written[0]}")
    return report.exit_code


def _output_size(args: argparse.Namespace) -> tuple[object | None, int | None]:
    """(`OutputSize` or None, the whole scale to run the model at) from --scale, --width, --height
    (`superres.batch.worker.choose_output_size`; sizes from the image inputs' headers)."""
    from superres.batch.files import input_shapes
    from superres.batch.video import is_video
    from superres.batch.worker import choose_output_size

    shapes = []
    if args.width is not None or args.height is not None:
        shapes = input_shapes([item for item in args.inputs if not is_video(item)])
    return choose_output_size(args.scale, args.width, args.height, shapes)


def _with_denoise(named: str | None, spec: str, strength: float) -> str:
    """The model name for --denoise: the real-world model named, or `real` when none is (then every
    input goes to it: asking for a denoise strength is asking for the real-world model)."""
    from superres.inference.input_check import REAL_WORLD_MODEL
    from superres.zoo.pretrained import denoise_spec

    return denoise_spec(REAL_WORLD_MODEL if named is None else spec, strength)


def _route_by_condition(
    inputs: list, scale: int, max_pixels: int | None, output: str | None, output_format: str | None
) -> dict[str, list]:
    """{model name: the inputs it upscales}: each readable image by its condition
    (`superres.inference.input_check`); unreadable ones go with the default, whose batch reports them."""
    import logging
    from pathlib import Path

    from superres.batch.files import expand_inputs, output_is_single_file, plan_outputs
    from superres.errors import SuperresError
    from superres.images import read_image
    from superres.inference.input_check import inspect_input, models_for_scale

    logger = logging.getLogger("superres.batch.files")
    clean, degraded = models_for_scale(scale)
    if clean == degraded:  # no real-world model at this scale: nothing to look at
        return {clean: list(inputs)}
    named, found, problems = expand_inputs(inputs)
    # The inputs the batch would take: without the previous outputs found beside them.
    planned = plan_outputs(
        named, found, Path(output) if output else None, scale, conflicts=[], output_format=output_format
    )
    routes: dict[str, list] = {clean: [path for path, _ in problems]}
    for path, _ in planned:
        model = clean
        try:
            condition = inspect_input(path, read_image(path, max_pixels=max_pixels).pixels)
            if condition.degraded:
                model = degraded
                logger.info("%s: %s -> %s", path, condition.describe(), model)
        except SuperresError:
            pass  # the batch reads it again and reports why it cannot
        routes.setdefault(model, []).append(path)
    routes = {model: paths for model, paths in routes.items() if paths}
    if len(routes) == 1:
        return {model: list(inputs) for model in routes}  # one model: the batch exactly as named
    if output:  # -o naming a file takes one input, however the inputs were split between models
        output_is_single_file(Path(output), sum(map(len, routes.values())))
    return routes


def _upscale_videos(
    videos: list, args: argparse.Namespace, spec: str, scale: int | None, device: object
) -> object:
    """The videos among the inputs, with a model loaded for them (`superres.batch.video`)."""
    from pathlib import Path

    from superres.batch.video import DEFAULT_SEGMENT_FRAMES, Clip, upscale_videos
    from superres.batch.worker import DEFAULT_BATCH_SIZE, BatchSettings, ImageBatchWorker

    worker = ImageBatchWorker(
        BatchSettings(
            model=spec, scale=scale, tile=args.tile, device=str(device), backend=args.backend,
            half=args.half, self_ensemble=args.self_ensemble, precision=args.precision,
            max_pixels=args.max_pixels,
            batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
        )
    )
    output = Path(args.output) if args.output else None
    return upscale_videos(
        videos, output, worker, overwrite=args.overwrite,
        segment_frames=args.segment_frames or DEFAULT_SEGMENT_FRAMES,
        clip=Clip(args.start, args.duration, args.frames),
    )

