"""Images per second on a folder: the overlapped, batched runner against the plain loop.

`measure_folder_throughput` upscales every image of a folder twice into scratch folders, with
one model loaded beforehand (loading is not timed):

- `loop`: what `superres upscale` did before `superres.batch.journal`: for each file in turn, read,
  upscale (`upscale_image`), write, all on one thread;
- `overlapped`: `superres.batch.files`' batch runner: decoding and encoding on their own threads,
  consecutive small images of one size in one network call.

Both write the same files (a test checks it); the ratio of their wall times is the gain.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any


def measure_folder_throughput(
    folder: str | Path, *, model: str = "default", scale: int = 2, device: str = "cpu"
) -> dict[str, Any]:
    """{"images", "model", "loop_images_per_s", "overlapped_images_per_s", "speedup"} for the
    images of `folder` (one run of each, the loop first)."""
    from superres.images import list_images, read_image, write_image
    from superres.zoo.pretrained import default_model_for
    from superres.inference.pipeline import upscale_image
    from superres.batch.files import output_name, plan_batch, run_locally
    from superres.batch.worker import BatchSettings, ImageBatchWorker

    spec = default_model_for(scale) if model == "default" else model
    worker = ImageBatchWorker(BatchSettings(model=spec, scale=scale, device=device))
    inputs = list_images(folder)
    with tempfile.TemporaryDirectory(prefix="superres-throughput-") as scratch:
        start = time.perf_counter()
        for path in inputs:
            loaded = read_image(path)
            sr = upscale_image(loaded.pixels, worker.network, backend=worker.runner)
            write_image(Path(scratch, "loop", output_name(path, scale)), sr, icc_profile=loaded.icc_profile)
        loop_s = time.perf_counter() - start

        start = time.perf_counter()
        plan = plan_batch([folder], Path(scratch, "overlapped"), worker.network, worker.settings)
        run_locally(plan, worker)
        plan.journal.finish(failed=bool(plan.report.failed))
        overlapped_s = time.perf_counter() - start
    return {
        "images": len(inputs),
        "model": spec,
        "scale": scale,
        "loop_images_per_s": len(inputs) / loop_s,
        "overlapped_images_per_s": len(plan.report.written) / overlapped_s,
        "speedup": loop_s / overlapped_s,
    }


def format_throughput(result: dict[str, Any]) -> str:
    """The measurement as one line of text."""
    return (
        f"{result['images']} images, {result['model']} x{result['scale']}: "
        f"plain loop {result['loop_images_per_s']:.2f} images/s, "
        f"overlapped and batched {result['overlapped_images_per_s']:.2f} images/s "
        f"({result['speedup']:.2f}x)"
    )
