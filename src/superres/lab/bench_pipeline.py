"""`superres bench --pipeline WxH`: what `superres upscale` costs on one large photo, per precision,
and what tiling costs.

`measure_pipeline` upscales one photo-like RGB image of WxH pixels (the demo's sample photo,
mirrored until it fills the size: real image content, deterministic, no file needed) with a
model of the one name grammar (`superres.zoo.names`: a shipped name, the default at the scale unless
named, or a model file such as a community `.pth`, at its own scale), through `upscale`'s own pipeline
(`superres.inference.pipeline.upscale_image`: colour conversion, tiles of the auto size, chroma,
quantisation), in configurations of (precision, tile):

- each precision asked for (default: fp32 and auto) with `tile="auto"`: what `superres upscale
  --precision P` computes; `auto` is resolved as there (`superres.inference.precision`);
- with `tiling`, the same precisions in one pass (`tile=None`), where the whole image's activations
  fit a quarter of the machine's memory: the tiling overhead is the tiled time over the one-pass time
  (`one_pass_skipped` says why, where they were not run: not asked for, or too large).

An explicit precision the model or this CPU cannot run (`--precision bf16` on a network whose card
says bf16 is not safe, or on a CPU without bf16 instructions) is refused in one line before any run.

Every run is a fresh process (`python -m superres.lab.bench_pipeline`), so that its peak resident
memory (VmHWM: the model, the image, the output and the tiles' activations; file decoding and
encoding are not included) is its own and no run inherits another's allocator state; the runs of
a repeat go through the configurations in turn, the next repeat in the reverse order, so that the
ratios compare runs that met the same load. Only the upscale is timed (not starting Python,
loading the model or making the image). Ratios are of median times.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Share of the machine's memory the one-pass run's activations may take for it to be attempted.
ONE_PASS_MEMORY_SHARE = 0.25


def photo_like(width: int, height: int) -> np.ndarray:
    """An RGB uint8 image of `height` x `width`: the sample photo mirrored until it covers the size."""
    from superres.images.sample_photo import sample_image

    photo = sample_image()
    if photo.ndim == 2:
        photo = np.repeat(photo[:, :, None], 3, axis=2)
    photo = photo[:, :, :3]
    reps_y = -(-height // photo.shape[0])
    reps_x = -(-width // photo.shape[1])
    rows = [np.concatenate([photo if (i + j) % 2 == 0 else photo[:, ::-1] for j in range(reps_x)], axis=1)
            for i in range(reps_y)]
    rows = [row if i % 2 == 0 else row[::-1] for i, row in enumerate(rows)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:height, :width])


def _peak_rss_bytes() -> int | None:
    """This process's peak resident memory (VmHWM), None where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_once(
    spec: str, scale: int, width: int, height: int, precision: str, tile: str | None
) -> dict[str, Any]:
    """One upscale in this process: seconds, the tile size and count, the precision computed in,
    the peak resident memory."""
    from superres.inference.backends import make_backend
    from superres.inference.pipeline import resolve_tile, upscale_image
    from superres.inference.tiling import tile_spans
    from superres.zoo.names import resolve_model

    model = resolve_model(spec, scale, "cpu")
    backend = make_backend(model, "torch", "cpu", precision=precision)
    pixels = photo_like(width, height)
    tile_size = resolve_tile(tile, model, 3, backend.device, False, backend.precision)
    whole = tile_size is None or (tile_size >= height and tile_size >= width)
    tiles = 1 if whole else len(tile_spans(height, width, tile_size))
    start = time.perf_counter()
    sr = upscale_image(pixels, model, tile=tile_size, backend=backend)
    seconds = time.perf_counter() - start
    assert sr.shape[:2] == (scale * height, scale * width)
    return {
        "precision": precision,
        "computed_in": backend.precision,
        "tile": tile_size,
        "tiles": tiles,
        "seconds": seconds,
        "peak_rss_bytes": _peak_rss_bytes(),
    }


def _run_child(spec: str, scale: int, width: int, height: int, precision: str, tile: str | None) -> dict:
    arguments = json.dumps([spec, scale, width, height, precision, tile])
    completed = subprocess.run(
        [sys.executable, "-m", "superres.lab.bench_pipeline", arguments],
        capture_output=True, text=True, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bench run {arguments} failed: {completed.stderr.strip().splitlines()[-1:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


#: Why the one-pass runs were not made when they were not asked for (`tiling=False`).
ONE_PASS_OFF = "not measured (the one-pass runs were turned off: --no-one-pass)"


def one_pass_refusal(model: Any, scale: int, width: int, height: int) -> str | None:
    """None where the one-pass run's activations (fp32, by the card) fit `ONE_PASS_MEMORY_SHARE`
    of memory; else why it is not run, for the report."""
    from superres.images.limits import memory_bytes
    from superres.inference.tiling import tile_memory_bytes

    needed = tile_memory_bytes(model.info, max(width, height), scale=scale, model_kwargs=model.model_kwargs)
    memory = memory_bytes()
    if memory is None:
        return "not measured (this machine's memory could not be read, so the one-pass run was not risked)"
    if needed > memory * ONE_PASS_MEMORY_SHARE:
        return (f"not measured (the one-pass run would not fit in memory: its activations, "
                f"{needed / 2**30:.1f} GiB, exceed {ONE_PASS_MEMORY_SHARE:.0%} of this machine's "
                f"{memory / 2**30:.1f} GiB)")
    return None


def pipeline_model(model: str, scale: int | None) -> tuple[str, int]:
    """(the model name every run loads, the scale): an alias resolved at `scale`; without a
    scale, a model file's own (or the one a shipped name ships at), and 2 for an alias."""
    from superres.zoo import ALIASES, DEFAULT_SCALE
    from superres.zoo.names import resolve_model
    from superres.zoo.pretrained import alias_target

    if scale is None:
        # Loading is the one way to learn a file's scale; a community file's measurement is then
        # cached, so the runs that load it again do not measure it again.
        scale = DEFAULT_SCALE if model in ALIASES else int(resolve_model(model, None, "cpu").scale)
    return alias_target(model, scale), scale


def measure_pipeline(
    width: int,
    height: int,
    *,
    model: str = "default",
    scale: int | None = 2,
    precisions: Sequence[str] = ("fp32", "auto"),
    repeats: int = 1,
    tiling: bool = True,
    progress: Callable[[str], None] | None = None,
    runner: Callable[..., dict] = _run_child,
) -> dict[str, Any]:
    """The runs and ratios described above, JSON-ready. `scale` None: the model's own
    (`pipeline_model`). `runner` runs one configuration (tests pass `run_once` to stay in process)."""
    from superres.inference.precision import resolve_precision
    from superres.lab.bench import load_average
    from superres.zoo.names import resolve_model

    say = progress or (lambda message: None)
    spec, scale = pipeline_model(model, scale)
    network = resolve_model(spec, scale, "cpu")
    for precision in precisions:  # a refusal is one line here, not a failed child process
        resolve_precision(precision, network, "cpu", "torch")
    configurations: list[tuple[str, str | None]] = [(precision, "auto") for precision in precisions]
    skipped = one_pass_refusal(network, scale, width, height) if tiling else ONE_PASS_OFF
    del network
    one_pass = skipped is None
    if one_pass:
        configurations += [(precision, None) for precision in precisions]
    runs: dict[tuple[str, str | None], list[dict]] = {configuration: [] for configuration in configurations}
    for repeat in range(repeats):
        order = configurations if repeat % 2 == 0 else configurations[::-1]
        for precision, tile in order:
            say(f"{spec} x{scale} {width}x{height} --precision {precision} --tile {tile or 'none'}")
            runs[(precision, tile)].append(runner(spec, scale, width, height, precision, tile))
    records = []
    for (precision, _), done in runs.items():
        peaks = [run["peak_rss_bytes"] for run in done if run["peak_rss_bytes"] is not None]
        records.append({
            "precision": precision,
            "computed_in": done[0]["computed_in"],
            "tile": done[0]["tile"],
            "tiles": done[0]["tiles"],
            "times_s": [run["seconds"] for run in done],
            "median_s": statistics.median(run["seconds"] for run in done),
            "peak_rss_bytes": max(peaks) if peaks else None,
        })
    by_key = {(precision, tile): record for (precision, tile), record in zip(runs, records)}
    ratios: dict[str, Any] = {}
    baseline = by_key.get((precisions[0], "auto"))
    for precision in precisions[1:]:
        record = by_key.get((precision, "auto"))
        if baseline and record:
            ratios[f"{precision}_over_{precisions[0]}"] = record["median_s"] / baseline["median_s"]
    overhead = {}
    for precision in precisions:
        tiled, whole = by_key.get((precision, "auto")), by_key.get((precision, None))
        if tiled and whole:
            overhead[precision] = tiled["median_s"] / whole["median_s"]
    return {
        "model": spec,
        "scale": scale,
        "input_size": [height, width],
        "output_size": [scale * height, scale * width],
        "repeats": repeats,
        "load_average": load_average(),
        "runs": records,
        "time_ratios": ratios,
        "tiling_overhead": overhead if one_pass else None,
        "one_pass_skipped": skipped,
    }


def format_pipeline(result: dict[str, Any]) -> str:
    """The measurement as text: one line per configuration, then the ratios."""
    height, width = result["input_size"]
    lines = [
        f"{result['model']} x{result['scale']}: {width}x{height} -> {result['output_size'][1]}x"
        f"{result['output_size'][0]}, upscale pipeline only (median of {result['repeats']}; each run a fresh "
        f"process; load average {result['load_average']})",
        f"{'precision':<10}{'computes in':<13}{'tile':>6}{'tiles':>7}{'median s':>10}{'peak memory':>13}",
    ]
    for record in result["runs"]:
        peak = record["peak_rss_bytes"]
        lines.append(
            f"{record['precision']:<10}{record['computed_in']:<13}{str(record['tile'] or 'none'):>6}"
            f"{record['tiles']:>7}{record['median_s']:>10.2f}"
            f"{'-' if peak is None else f'{peak / 2**30:.2f} GiB':>13}"
        )
    for name, ratio in result["time_ratios"].items():
        lines.append(f"time ratio {name.replace('_over_', ' / ')} (tiles of the auto size): {ratio:.3f}")
    if result["tiling_overhead"] is None:
        lines.append(f"tiling overhead: {result.get('one_pass_skipped') or 'not measured'}")
    else:
        for precision, overhead in result["tiling_overhead"].items():
            lines.append(f"tiling overhead at {precision}: tiled time / one-pass time = {overhead:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(run_once(*json.loads(sys.argv[1]))))
