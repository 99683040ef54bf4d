"""The quality/speed frontier: Set5 PSNR against measured CPU speed, one point per shipped model.

`measure_frontier(scales)` times every shipped model (and bicubic, the baseline of the same run)
on the CPU backend `superres upscale` uses (`superres.inference.backends.make_backend`), on one synthetic LR
image per scale, and pairs each with its card's Set5 score (bicubic's is computed on the spot
when a Set5 folder is given). `models` adds other model names of the one grammar
(`superres.zoo.names`), above all model files (a community `.pth`, a superres checkpoint): each is
timed at its own scale in the same interleaved rounds as the shipped models of that scale, and,
having no card with scores, is scored on the Set5 folder on the spot like bicubic. `frontier_markdown` and
`plot_frontier` turn the points into the README's table and picture. Speeds are output
megapixels per second on the machine that runs it, and are reported together with their ratio to
bicubic in the same run, since shared machines are noisy: the models of a scale are timed in
interleaved rounds (`best_interleaved_rates`), so that a change in the machine's load meets them
all alike. The MAC count per output pixel (`superres.models.complexity`) is the machine-independent cost
beside them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superres.models.complexity import conv_macs_per_output_pixel

logger = logging.getLogger(__name__)

#: LR size of the timing image: 320x240, i.e. a 640x480 output at x2 and 1280x960 at x4.
TIMING_LR_SIZE = (240, 320)
#: Each model runs at least this many timed calls, and for at least `MIN_TIMING_SECONDS`.
MIN_TIMED_CALLS = 3
MIN_TIMING_SECONDS = 1.5
#: Rounds of interleaved timing (`best_interleaved_rates`): each model keeps its best round.
TIMING_ROUNDS = 3


@dataclass(frozen=True)
class FrontierPoint:
    """One model at one scale: its card's Set5 score and its measured speed."""

    name: str
    scale: int
    architecture: str
    set5_psnr: float | None
    set14_psnr: float | None
    output_mp_per_s: float
    relative_to_bicubic: float  # this model's speed / bicubic's, same run
    macs_per_pixel: float


@dataclass(frozen=True)
class Timing:
    """How to time each model: LR image size, least calls and least seconds per timing, and
    rounds (every model timed once per round, in turn; each keeps its best round)."""

    lr_size: tuple[int, int] = TIMING_LR_SIZE
    min_calls: int = MIN_TIMED_CALLS
    min_seconds: float = MIN_TIMING_SECONDS
    rounds: int = TIMING_ROUNDS


#: A quicker timing for `superres models`: a quarter of the pixels, one call after the warm-up.
QUICK_TIMING = Timing(lr_size=(120, 160), min_calls=1, min_seconds=0.0, rounds=1)

#: Something to time: a function of the LR input, and that input.
Runner = tuple[Callable[[torch.Tensor], Any], torch.Tensor]


def time_output_rate(
    function: Callable[[torch.Tensor], Any], lr: torch.Tensor, scale: int, timing: Timing = Timing()
) -> float:
    """Output megapixels per second of `function` on `lr` (the median of the timed calls)."""
    function(lr)  # warm-up: allocations, oneDNN primitive creation
    durations: list[float] = []
    started = time.perf_counter()
    while len(durations) < timing.min_calls or time.perf_counter() - started < timing.min_seconds:
        begin = time.perf_counter()
        function(lr)
        durations.append(time.perf_counter() - begin)
    durations.sort()
    median = durations[len(durations) // 2]
    pixels = lr.shape[0] * lr.shape[-2] * lr.shape[-1] * scale * scale
    return pixels / median / 1e6


def best_interleaved_rates(runners: Mapping[str, Runner], scale: int, timing: Timing = Timing()) -> dict[str, float]:
    """Output MP/s of each runner: `timing.rounds` rounds, each timing every runner in turn, and
    each runner's best round. On a shared machine the load drifts over minutes; timed one after
    another, two models would meet different loads, while interleaved, each round meets the
    same, and the best round is the one least disturbed."""
    best = dict.fromkeys(runners, 0.0)
    for _ in range(max(1, timing.rounds)):
        for label, (function, lr) in runners.items():
            best[label] = max(best[label], time_output_rate(function, lr, scale, timing))
    return best


def _timing_input(model: nn.Module, lr_size: tuple[int, int]) -> torch.Tensor:
    channels = 1 if model.info.channels_for(getattr(model, "model_kwargs", {})) == "Y" else 3
    generator = torch.Generator().manual_seed(0)
    return torch.rand((1, channels, *lr_size), generator=generator)


def _torch_runner(model: nn.Module, timing: Timing) -> Runner:
    from superres.inference.backends import make_backend

    backend = make_backend(model, "torch", "cpu")  # what `superres upscale` runs on a CPU
    return backend, _timing_input(model, timing.lr_size)


#: The reference point from OpenCV: its dnn module running FSRCNN (d=56, s=12, m=4) as
#: dnn_superres does. Speed does not depend on the weights, so the architecture is timed with
#: random ones; OpenCV's own FSRCNN files are not shipped here, so no PSNR goes with it.
OPENCV_LABEL = "opencv-dnn FSRCNN"


def _opencv_fsrcnn_runner(scale: int, timing: Timing) -> Runner | None:
    """OpenCV's dnn engine on the FSRCNN graph at `scale`; None without OpenCV.

    The graph is superres's own FSRCNN without its optional bicubic skip, i.e. the layers of
    OpenCV's dnn_superres FSRCNN files, exported to ONNX and read by `cv2.dnn.readNetFromONNX`.
    OpenCV uses as many threads as torch does here, so the two are timed alike.
    """
    try:
        import cv2
    except ImportError:
        return None
    import numpy as np

    from superres.inference.export import export_onnx_bytes
    from superres.models import create_model

    model = create_model("fsrcnn", scale, bicubic_skip=False).eval()
    network = cv2.dnn.readNetFromONNX(np.frombuffer(export_onnx_bytes(model), np.uint8))
    cv2.setNumThreads(torch.get_num_threads())

    def run(lr: torch.Tensor) -> np.ndarray:
        network.setInput(lr.numpy())
        return network.forward()

    return run, _timing_input(model, timing.lr_size)


def opencv_fsrcnn_rate(scale: int, timing: Timing = Timing()) -> float | None:
    """Output MP/s of OpenCV's dnn engine on the FSRCNN graph at `scale`; None without OpenCV."""
    runner = _opencv_fsrcnn_runner(scale, timing)
    return None if runner is None else best_interleaved_rates({OPENCV_LABEL: runner}, scale, timing)[OPENCV_LABEL]


def relative_speed(model: nn.Module, scale: int, timing: Timing = Timing()) -> dict[str, float]:
    """What a model card records of its speed: output MP/s of `model` and of bicubic on this CPU,
    each the best of `timing.rounds` interleaved timings, and their ratio."""
    from superres.models import create_model

    runners = {"model": _torch_runner(model, timing), "bicubic": _torch_runner(create_model("bicubic", scale), timing)}
    rates = best_interleaved_rates(runners, scale, timing)
    return {
        # Significant digits, not decimals: a slow model (or a loaded machine) still keeps its ratio.
        "output_mp_per_s": float(f"{rates['model']:.4g}"),
        "bicubic_output_mp_per_s": float(f"{rates['bicubic']:.4g}"),
        "relative_to_bicubic": round(rates["model"] / rates["bicubic"], 4),
        "lr_size": list(timing.lr_size),
        "threads": torch.get_num_threads(),
    }


def set5_psnr(model: nn.Module, set5_dir: Path | None, scale: int) -> float | None:
    """`model`'s Set5 PSNR by the paper protocol, or None without a Set5 folder."""
    if set5_dir is None or not Path(set5_dir).is_dir():
        return None
    from superres.evaluation.protocol import evaluate_model

    return evaluate_model(model, Path(set5_dir), scale).psnr


def bicubic_set5_psnr(set5_dir: Path | None, scale: int) -> float | None:
    """Bicubic's Set5 PSNR by the paper protocol, or None without a Set5 folder."""
    from superres.models import create_model

    return set5_psnr(create_model("bicubic", scale), set5_dir, scale)


def extra_models(specs: Sequence[str]) -> dict[str, nn.Module]:
    """label -> network for each model name in `specs` (a path loads at the file's own scale);
    the label is a file's name, or the name as given. `ConfigError` for a x1 (restoration) model,
    which has no bicubic baseline to be set against."""
    from superres.errors import ConfigError
    from superres.zoo.names import looks_like_path, resolve_model

    loaded: dict[str, nn.Module] = {}
    for spec in specs:
        model = resolve_model(spec, None, "cpu")
        if int(model.scale) < 2:
            raise ConfigError(f"{spec}: a x{model.scale} model does not upscale; the frontier sets "
                              "upscalers against bicubic")
        label = Path(spec).name if looks_like_path(spec) else spec
        loaded[spec if label in loaded else label] = model  # two files of one name: the paths
    return loaded


def _extra_point(
    label: str, model: nn.Module, rate: float, bicubic_rate: float, set5_dir: Path | None
) -> FrontierPoint:
    """A model outside the shipped listing: no card scores, so Set5 is scored here (None without it)."""
    scale = int(model.scale)
    return FrontierPoint(label, scale, model.info.name, set5_psnr(model, set5_dir, scale), None, rate,
                         rate / bicubic_rate, conv_macs_per_output_pixel(model))


def measure_frontier(
    scales: Sequence[int], set5_dir: Path | None = None, timing: Timing = Timing(), models: Sequence[str] = ()
) -> list[FrontierPoint]:
    """Time bicubic and every shipped PSNR-trained model at `scales` on this machine, in one run,
    interleaved (`best_interleaved_rates`), with OpenCV's FSRCNN as a reference when OpenCV is
    installed (a perceptual model trades PSNR for detail on purpose: on a PSNR axis it is no
    competitor; nor is a real-world model on the clean LR it was not made for).

    `models`: more model names or files (`extra_models`), each timed with the others of its own
    scale (a scale not in `scales` is added) and scored on `set5_dir` on the spot."""
    from superres.models import create_model
    from superres.zoo.pretrained import list_pretrained, load_pretrained

    extras = extra_models(models)
    points = []
    # The scales asked for, in their order, then those of extra models that were not asked for.
    for scale in dict.fromkeys([*scales, *sorted(int(model.scale) for model in extras.values())]):
        entries = [entry for entry in list_pretrained() if entry.scale == scale and not entry.by_name_only]
        models_here = {entry.name: load_pretrained(entry.name, scale) for entry in entries}
        extras_here = {label: model for label, model in extras.items() if int(model.scale) == scale}
        runners = {"bicubic": _torch_runner(create_model("bicubic", scale), timing)}
        runners.update({name: _torch_runner(model, timing) for name, model in models_here.items()})
        runners.update({label: _torch_runner(model, timing) for label, model in extras_here.items()})
        opencv = _opencv_fsrcnn_runner(scale, timing)
        if opencv is not None:
            runners[OPENCV_LABEL] = opencv
        rates = best_interleaved_rates(runners, scale, timing)
        bicubic_rate = rates["bicubic"]
        points.append(
            FrontierPoint("bicubic", scale, "bicubic", bicubic_set5_psnr(set5_dir, scale), None,
                          bicubic_rate, 1.0, 0.0)
        )
        for entry in entries:
            rate, macs = rates[entry.name], conv_macs_per_output_pixel(models_here[entry.name])
            logger.info("%s x%d: %.2f output MP/s", entry.name, scale, rate)
            points.append(
                FrontierPoint(entry.name, scale, entry.architecture, entry.metric("Set5", "psnr"),
                              entry.metric("Set14", "psnr"), rate, rate / bicubic_rate, macs)
            )
        for label, model in extras_here.items():
            logger.info("%s x%d: %.2f output MP/s", label, scale, rates[label])
            points.append(_extra_point(label, model, rates[label], bicubic_rate, set5_dir))
        if opencv is not None:
            fsrcnn_macs = conv_macs_per_output_pixel(create_model("fsrcnn", scale, bicubic_skip=False))
            points.append(
                FrontierPoint(OPENCV_LABEL, scale, "fsrcnn", None, None, rates[OPENCV_LABEL],
                              rates[OPENCV_LABEL] / bicubic_rate, fsrcnn_macs)
            )
    return points


def frontier_markdown(points: Sequence[FrontierPoint]) -> str:
    """A markdown table, fastest first within each scale."""
    lines = [
        "| scale | model | Set5 PSNR | Set14 PSNR | output MP/s | vs bicubic | MACs / output px |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in sorted(points, key=lambda p: (p.scale, -p.output_mp_per_s)):
        def psnr(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        lines.append(
            f"| x{point.scale} | {point.name} | {psnr(point.set5_psnr)} | {psnr(point.set14_psnr)} | "
            f"{point.output_mp_per_s:.2f} | {point.relative_to_bicubic:.3f} | {point.macs_per_pixel:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_frontier(points: Sequence[FrontierPoint], path: Path, *, machine: str = "this CPU") -> None:
    """Set5 PSNR against output MP/s (log scale), one panel per scale, written as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from superres.atomic import atomic_write_bytes
    from superres.training.runlog import png_bytes

    scales = sorted({point.scale for point in points})
    figure = Figure(figsize=(4.6 * len(scales), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    for index, scale in enumerate(scales):
        axes = figure.add_subplot(1, len(scales), index + 1)
        for point in (p for p in points if p.scale == scale):
            if point.set5_psnr is None:  # a speed-only reference (OpenCV): a vertical line
                axes.axvline(point.output_mp_per_s, linestyle="--", linewidth=1, color="grey")
                axes.annotate(f"{point.name} speed", (point.output_mp_per_s, 0.02), xycoords=("data", "axes fraction"),
                              rotation=90, fontsize=7, color="grey", xytext=(3, 0), textcoords="offset points")
                continue
            marker = "s" if point.name == "bicubic" else "o"
            axes.scatter(point.output_mp_per_s, point.set5_psnr, marker=marker, s=36)
            axes.annotate(point.name, (point.output_mp_per_s, point.set5_psnr), textcoords="offset points",
                          xytext=(4, 4), fontsize=8)
        axes.set_xscale("log")
        axes.set_xlabel(f"output megapixels / s on {machine} (log)")
        axes.set_ylabel("Set5 PSNR (dB, Y, paper protocol)")
        axes.set_title(f"x{scale}")
        axes.grid(True, which="both", alpha=0.3)
    atomic_write_bytes(Path(path), png_bytes(figure, dpi=110))
