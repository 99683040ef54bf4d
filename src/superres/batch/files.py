"""Upscaling batches of files: inputs, outputs, shards, the journal and the overlapped runner.

`upscale_files` runs a batch of files, folders and globs with atomic writes, skips existing
outputs, never overwrites an input, and reports unreadable files, unreadable folders and entries
a glob reaches twice (through a symlink) without stopping the batch. It removes the temporary
files a killed earlier run left beside its outputs, and shows per-tile progress with an ETA
once an image takes more than a second. `plan_batch` pairs inputs with outputs, keeps one
`--shard` and sets aside what a journal (`superres.batch.journal`) says an earlier run finished; the
`ImageBatchWorker` reads, upscales (several small images of one size per network call:
`upscale_images`) and writes, with decoding and encoding overlapped on their own threads
locally (`run_locally`) or as Dask tasks on a cluster (`superres.batch.cluster`).
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from superres.batch.worker import (
    DEFAULT_BATCH_SIZE,
    BatchPlan,
    BatchReport,
    BatchSettings,
    ImageBatchWorker,
    OutputSize,
    resolve_batch_model,
)
from superres.errors import ConfigError, ImageReadError
from superres.inference.backends import resolve_device

logger = logging.getLogger(__name__)

#: Characters that make an input a glob pattern rather than a file name.
_GLOB_CHARACTERS = frozenset("*?[")


def _is_glob(text: str) -> bool:
    return any(character in _GLOB_CHARACTERS for character in text)


def expand_inputs(
    inputs: Iterable[str | Path],
) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """Files, folders and globs -> (named files, files found in folders or globs, problems).

    Globs are expanded here so that shells that do not expand them (Windows) work too. A
    literal name that does not exist stays in the named files: reading it reports the failure.
    """
    from superres.images import READ_EXTENSIONS, list_images

    named: list[Path] = []
    found: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            try:
                found.extend(list_images(path))
            except ImageReadError as error:  # an empty or unreadable folder: say so, do the rest
                problems.append((path, str(error)))
        elif not path.exists() and _is_glob(str(item)):
            matches = sorted(Path(match) for match in glob.glob(str(item), recursive=True))
            images = [m for m in matches if m.is_file() and m.suffix.lower() in READ_EXTENSIONS]
            if not images:
                problems.append((path, f"no images match {item}"))
            found.extend(images)
        else:
            named.append(path)
    return named, _without_aliases(named, found), problems


def _without_aliases(named: Sequence[Path], found: Sequence[Path]) -> list[Path]:
    """`found` without the files already reached under another name (a symlinked folder)."""
    seen = {_resolved(path) for path in named}
    unique = []
    for path in found:
        real = _resolved(path)
        if real in seen:
            logger.info("not upscaling %s: the same file as another input", path)
            continue
        seen.add(real)
        unique.append(path)
    return unique


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the name is all there is
        return path.absolute()


def output_name(input_path: Path, scale: int | str, output_format: str | None = None) -> str:
    """`photo.jpg` -> `photo_x2.jpg`: the default output name keeps the extension (a GIF, which
    is not written, becomes a PNG); `output_format` ("webp", "png", ...) replaces it. `scale` may
    be an `OutputSize` label instead (`photo_w3840.jpg`)."""
    from superres.images import IMAGE_EXTENSIONS

    suffix = input_path.suffix if input_path.suffix.lower() in IMAGE_EXTENSIONS else ".png"
    if output_format is not None:
        suffix = "." + output_format.lower().lstrip(".")
        if suffix not in IMAGE_EXTENSIONS:
            choices = " ".join(IMAGE_EXTENSIONS)
            raise ConfigError(f"cannot write {output_format} files; choose one of {choices}")
    label = scale if isinstance(scale, str) else f"x{scale}"
    return f"{input_path.stem}_{label}{suffix}"


def input_shapes(inputs: Iterable[str | Path]) -> list[tuple[int, int]]:
    """(height, width) of each image the inputs name, from the file headers
    (`superres.images.probe_image`: nothing decoded); unreadable files are left out (the batch
    reports them)."""
    from superres.errors import SuperresError
    from superres.images import probe_image

    named, found, _ = expand_inputs(inputs)
    shapes = []
    for path in [*named, *found]:
        try:
            width, height, _ = probe_image(path)
        except SuperresError:
            continue
        shapes.append((height, width))
    return shapes


def output_is_single_file(output: Path, count: int) -> bool:
    """Whether `-o output` names one output file; ConfigError when it names a file for several
    inputs, or a file of a format that is read but not written."""
    from superres.images import IMAGE_EXTENSIONS, READ_EXTENSIONS

    names_a_file = output.suffix.lower() in IMAGE_EXTENSIONS and not output.is_dir()
    if names_a_file and count > 1:
        raise ConfigError(
            f"-o {output} names a file, but {count} images are being upscaled; give a folder"
        )
    if count == 1 and output.suffix.lower() in READ_EXTENSIONS and not names_a_file:
        if not output.is_dir():  # e.g. out.gif: a file the user wants, not a folder to create
            raise ConfigError(
                f"-o {output}: cannot write {output.suffix} files; "
                f"use one of {' '.join(IMAGE_EXTENSIONS)}"
            )
    return names_a_file


def plan_outputs(
    named: Sequence[Path],
    found: Sequence[Path],
    output: Path | None,
    scale: int | str,
    conflicts: list[tuple[Path, str]] | None = None,
    output_format: str | None = None,
) -> list[tuple[Path, Path]]:
    """(input, output) pairs. Folder and glob finds that are another input's output (a previous
    run's results lying beside the inputs) are dropped; writing over any input is a ConfigError.
    A second input bound for an output already claimed is left out and, with `conflicts` given,
    reported there (else a ConfigError)."""
    inputs = list(dict.fromkeys([*named, *found]))  # order kept, duplicates dropped
    single_file = output is not None and output_is_single_file(output, len(inputs))

    def target(path: Path) -> Path:
        if output is None:
            return path.with_name(output_name(path, scale, output_format))
        return output if single_file else output / output_name(path, scale, output_format)

    planned = {path: target(path) for path in inputs}
    outputs = {out.resolve() for out in planned.values()}
    named_set = set(named)
    jobs = []
    for path, out in planned.items():
        if path not in named_set and path.resolve() in outputs:
            logger.info("not upscaling %s: it is the output of another input", path)
            continue
        jobs.append((path, out))

    # Only what will actually be read must survive; a dropped previous output may be replaced.
    resolved_inputs = {path.resolve(): path for path, _ in jobs}
    claimed: dict[Path, Path] = {}
    for path, out in jobs:
        if out.resolve() in resolved_inputs:
            victim = resolved_inputs[out.resolve()]
            raise ConfigError(f"refusing to overwrite input {victim} with the output of {path}")
        if out.resolve() in claimed:
            message = f"{claimed[out.resolve()]} and {path} would both be written to {out}"
            if conflicts is None:
                raise ConfigError(message)
            conflicts.append((path, message))
            continue
        claimed[out.resolve()] = path
    return [(path, out) for path, out in jobs if claimed.get(out.resolve()) == path]


def plan_batch(
    inputs: Iterable[str | Path],
    output: str | Path | None,
    network: nn.Module,
    settings: BatchSettings,
    *,
    overwrite: bool = False,
    shard: object = None,
) -> BatchPlan:
    """Expand `inputs`, pair them with outputs, keep this shard's, and set aside what is done:
    outputs the journal records (even with `overwrite`) and, without it, existing outputs."""
    from superres.batch.journal import Journal, Shard

    shard = Shard.parse(shard) if isinstance(shard, str) else (shard or Shard())
    named, found, problems = expand_inputs(inputs)
    output_path = Path(output) if output is not None else None
    planned = plan_outputs(
        named,
        found,
        output_path,
        settings.output_size.label() if settings.output_size else int(network.scale),
        conflicts=problems,
        output_format=settings.output_format,
    )
    jobs = shard.select(planned)
    journal = Journal.beside([out for _, out in jobs], settings.journal_key(network), shard)

    report = BatchReport()
    for path, reason in problems:
        logger.warning("%s", reason)
        report.failed.append((path, reason))
    remaining = []
    for input_path, output_path in jobs:
        if journal.is_done(input_path, output_path):
            reason = f"{output_path} was finished by an earlier run of this batch"
        elif output_path.exists() and not overwrite:
            reason = f"{output_path} exists (use --overwrite to replace it)"
        else:
            remaining.append((input_path, output_path))
            continue
        logger.info("skipping %s: %s", input_path, reason)
        report.skipped.append((input_path, reason))
    return BatchPlan(remaining, report, journal)


def run_locally(plan: BatchPlan, worker: ImageBatchWorker) -> None:
    """The plan's jobs on this process, decoding and encoding overlapped with the network."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from superres.batch.journal import run_overlapped

    # Messages go through tqdm.write while the bar is drawn, so they do not tear it.
    with logging_redirect_tqdm(), tqdm(
        total=len(plan.jobs), unit="image", disable=len(plan.jobs) < 2, leave=False
    ) as bar:

        def write(item, sr: np.ndarray) -> None:
            # The journal line right after the file, on the writer thread: a kill between the
            # two costs at most this one image's redo.
            worker.write(item.output_path, sr, item.image)
            plan.journal.record(item.input_path, item.output_path)

        def on_done(item) -> None:
            plan.done(item.input_path, item.output_path, journaled=True)
            bar.update()

        def on_failed(item, reason: str) -> None:
            plan.failed(item.input_path, reason)
            bar.update()

        run_overlapped(
            plan.jobs,
            read=worker.read,
            compute=worker.compute,
            write=write,
            can_join=worker.can_join,
            on_done=on_done,
            on_failed=on_failed,
        )


def upscale_files(
    inputs: Iterable[str | Path],
    output: str | Path | None,
    *,
    scale: int | None,
    model: str | nn.Module,
    overwrite: bool = False,
    tile: str | int | None = "auto",
    device: str | torch.device = "auto",
    backend: str = "torch",
    half: bool = False,
    self_ensemble: bool = False,
    precision: str = "fp32",
    max_pixels: int | None = None,
    shard: str | object | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cluster: str | None = None,
    workers: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    output_format: str | None = None,
    quality: int = 95,
    output_size: OutputSize | None = None,
) -> BatchReport:
    """Upscale every image that `inputs` (files, folders, globs) names.

    Outputs go to `output` (a file for a single input, else a folder), or beside each input as
    `<stem>_x<scale><ext>`. Existing outputs are skipped unless `overwrite`; an unreadable or
    unwritable image is reported and skipped while the rest completes. User errors that concern
    the whole batch (unknown model, bad scale, an output over an input) raise SuperresError.
    `self_ensemble`: average each image over its 8 flips/rotations (8 times the work).
    `precision`: what the network computes in, "fp32", "bf16" or "auto" (`superres.inference.precision`).
    `max_pixels`: the decompression-bomb limit per input (None: `superres.images.DEFAULT_MAX_PIXELS`).
    Resumable: a journal beside the outputs (`superres.batch.journal`) lets the same call after a kill
    skip what was finished. `shard`: "i/N" or a `superres.batch.journal.Shard`, this process's part.
    `batch_size`: most small images of one shape per network call. `cluster`: run on Dask
    (`superres.batch.cluster`): "local" for a local cluster of `workers` processes, or a scheduler
    address. `background`: the 8-bit RGB colour an image with alpha is flattened onto when its
    output format has no alpha (JPEG, BMP). `output_format`: the outputs' extension (e.g. "webp")
    instead of each input's own; `quality` (1..100): JPEG and WebP quality. `output_size`: a size
    other than the model's scale (`OutputSize`: a factor such as 1.5, a width, a height), reached by
    downscaling the model's output; the names then carry its label (`photo_w3840.png`).
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    resolved_device = resolve_device(device)
    network = resolve_batch_model(model, scale, resolved_device)
    settings = BatchSettings(
        model=model, scale=int(network.scale), tile=tile, device=str(resolved_device), backend=backend,
        half=half, self_ensemble=self_ensemble, precision=precision, max_pixels=max_pixels,
        batch_size=batch_size,
        background=tuple(background), output_format=output_format, quality=quality, overwrite=overwrite,
        output_size=output_size,
    )
    plan = plan_batch(inputs, output, network, settings, overwrite=overwrite, shard=shard)
    if cluster is None:
        run_locally(plan, ImageBatchWorker(settings, network))
    else:
        from superres.batch.cluster import run_on_dask

        run_on_dask(plan, settings, cluster, workers=workers)
    plan.journal.finish(failed=bool(plan.report.failed))
    return plan.report


__all__ = [
    "expand_inputs",
    "output_name",
    "plan_outputs",
    "upscale_files",
]
