"""`superres bench`: inference and training speed of the models, per backend, against the machine.

By default every registered model is timed (bicubic too, as the floor), each at the
configuration its `ModelInfo` card names: `bench_kwargs` (empty: the constructor defaults), or
`test_kwargs` in a `--quick` run; `BenchSettings.model_kwargs` overrides that per model. Weights are
random: speed does not depend on them, so no shipped weights are needed. For each model, scale and
output size, one LR image (batch 1, LR size = output size / scale, rounded, channels as the card
says for those kwargs) is upscaled by:

- `eager`: the model in PyTorch eager mode as one would deploy it (`superres.inference.export.frozen_copy`:
  eval mode, re-parameterisable branches folded, so SPAN's eager time is not that of its training
  form), NCHW, default threads, `torch.no_grad()`, the allocator as the process started: the
  baseline;
- `torch`: `superres.inference.backends.make_backend(model, "torch")`, the fast CPU path of
  `superres.inference.fast`;
- `torch-bf16`: the same with its inner convolutions in bf16 (`precision="bf16"`, what
  `--precision auto` runs where a model's card allows it), only where the CPU has bf16;
- `onnxruntime`: `make_backend(model, "onnxruntime")` (float32: its CPU provider has no bf16
  convolutions; OpenVINO is not installed here and not benchmarked).

Each is run `warmup` times untimed, then `repeats` times; the median wall time counts. Achieved
GFLOP/s is counted from the layer shapes (`count_conv_flops`: 2 FLOPs per multiply-accumulate of
every `nn.Conv2d` / `nn.ConvTranspose2d`; biases, activations and the interpolation are not
counted; re-parameterisable branches are counted folded, a strided transposed conv as the
transposed conv, whatever the fast path computes instead) and compared with the fp32
matrix-multiply rate of the same machine, measured in the same
run (`measure_matmul_gflops`: square sgemm, median of several) at its start and its end; the
larger of the two is the reference, so ratios are conservative.

A training step (Adam, MSE loss against the HR batch, forward + backward + update) is timed for
the plain eager model (`eager`, in its training form: branches and batch norm as they train) and
the fast path (`torch`: `superres.inference.fast.prepare_for_training` with channels-last batches); its
FLOPs are forward + weight gradients + input gradients of every conv whose input needs one. The
batch is `TRAINING_BATCH` patches, `TRAINING_PATCH` pixels a side where the network convolves:
HR for a pre-upsampling network (`info.pre_upsample`), LR for one that upsamples at its end.

Everything in `eager` is measured first, before `superres.inference.fast.retain_freed_memory` changes the
allocator for the rest of the process (it cannot be undone).

JSON (`run_bench(...)` returns it; `superres bench --json` prints it), schema `superres.bench/1`:

    schema                 "superres.bench/1"
    machine                {cpu, cores, torch, onnxruntime, torch_threads, onnxruntime_threads,
                            native_bf16,
                            allocator_tuned_before_baseline, load_average [start, end]
                            (1-minute load; above the core count, other work shared the CPU)}
    settings               {models, scales, backends, sizes ([height, width] outputs), repeats,
                            warmup, training, training_repeats, matmul_size, quick,
                            model_kwargs (per model: the effective constructor kwargs timed)}
    matmul                 {size, gflops (the reference), gflops_start, gflops_end}
    inference              list of {model, scale, backend ("eager" | "torch" | "torch-bf16" | "onnxruntime"),
                            batch, lr_size [h, w], output_size [H, W], median_s, min_s, times_s,
                            megapixels_per_s (output), gflop (per call), gflops, matmul_ratio,
                            speedup_vs_eager}
    training               list of {model, scale, mode ("eager" | "torch"), batch,
                            hr_size [H, W], median_s, min_s, times_s, hr_pixels_per_s
                            (the table shows it in MP/s),
                            gflop (per step), gflops, matmul_ratio, speedup_vs_eager}
    best                   list of {model, scale, output_size, backend, matmul_ratio}: the fastest
                            backend per model, scale and size

`matmul_ratio` and `gflops` are null for models without convolutions (bicubic).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from superres.errors import ConfigError
from superres.inference.backends import make_backend
from superres.inference.export import frozen_copy
from superres.inference.fast import (
    cpu_count,
    freed_memory_retained,
    has_native_bf16,
    prepare_for_training,
    retain_freed_memory,
    to_channels_last,
)
from superres.inference.precision import cpu_runs_bf16
from superres.models import create_model, get_model_info, list_models
from superres.models.complexity import count_conv_flops

SCHEMA = "superres.bench/1"
#: Every registered model, simplest first (what `superres models` lists).
DEFAULT_MODELS = tuple(list_models())
#: Output sizes as (height, width): 512x512 and 1280x720 (width x height, as screens are named).
DEFAULT_SIZES = ((512, 512), (720, 1280))
QUICK_SIZES = ((48, 64),)
#: Timed training step: a batch of 16 patches of 96 HR pixels a side for a pre-upsampling network,
#: 48 LR pixels for a post-upsampling one (EDSR's and SRResNet's LR patch; 96 HR at x2 either way).
TRAINING_BATCH = 16
TRAINING_PATCH = {True: 96, False: 48}  # by info.pre_upsample
_QUICK_TRAINING_BATCH = 2
_QUICK_TRAINING_PATCH = {True: 24, False: 12}
#: Training-step learning rate (any small value: only the speed is measured).
_LEARNING_RATE = 1e-4

Progress = Callable[[str], None]


#: The runtimes and precisions timed against each other: the torch fast path in float32 and with its
#: inner convolutions in bf16 (`superres.inference.precision`, skipped where the CPU lacks bf16),
#: and ONNX Runtime, whose CPU provider has no bf16 convolutions (float32 only).
BENCH_BACKENDS = ("torch", "torch-bf16", "onnxruntime")


@dataclass(frozen=True)
class BenchSettings:
    """What `run_bench` measures. Sizes are output (height, width)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    scales: tuple[int, ...] = (2,)
    backends: tuple[str, ...] = ("torch", "torch-bf16", "onnxruntime")
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    repeats: int = 3
    warmup: int = 1
    training: bool = True
    training_repeats: int = 3
    matmul_size: int = 2048
    quick: bool = False
    #: Per model name, constructor kwargs replacing its card's bench (or quick: test) kwargs.
    model_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def kwargs_for(self, name: str) -> dict[str, Any]:
        """The effective constructor kwargs model `name` is timed with."""
        info = get_model_info(name)
        if name in self.model_kwargs:
            chosen = self.model_kwargs[name]
        else:
            chosen = info.test_kwargs if self.quick else info.bench_kwargs
        return info.effective_kwargs(chosen)

    @classmethod
    def quick_run(cls, **overrides: Any) -> BenchSettings:
        """A smoke test that the whole bench works, in seconds; its timings mean little.

        Tiny sizes, one timed run and no warm-up (so first-call costs are included), a tiny
        training batch, and each model at its card's `test_kwargs` (every layer type, fewer and
        narrower).
        """
        values: dict[str, Any] = {
            "sizes": QUICK_SIZES,
            "repeats": 1,
            "warmup": 0,
            "training_repeats": 1,
            "matmul_size": 512,
            "quick": True,
        }
        values.update(overrides)
        return cls(**values)

    def check(self) -> None:
        """`ConfigError` for a value that cannot be benchmarked, naming it."""
        known = list_models()
        for name in self.models:
            if name not in known:
                raise ConfigError(f"unknown model {name!r} for bench; available: {', '.join(known)}")
            for scale in self.scales:
                get_model_info(name).check_scale(scale)
            self.kwargs_for(name)  # ModelError for an unknown kwarg
        for backend in self.backends:
            if backend not in BENCH_BACKENDS:
                raise ConfigError(f"unknown backend {backend!r}; available: {', '.join(BENCH_BACKENDS)}")
        if self.repeats < 1 or self.warmup < 0 or self.training_repeats < 1:
            raise ConfigError(
                f"repeats must be >= 1 and warm-up >= 0, got {self.repeats} and {self.warmup}"
            )
        for height, width in self.sizes:
            if height < 1 or width < 1:
                raise ConfigError(f"output size {width}x{height} must be positive")


# --------------------------------------------------------------------------- matmul


def measure_matmul_gflops(size: int = 2048, repeats: int = 7) -> float:
    """fp32 GFLOP/s of a square `size` x `size` matmul on torch's threads (median of `repeats`)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=generator)
    b = torch.rand(size, size, generator=generator)
    out = torch.empty(size, size)
    times = time_calls(lambda: torch.mm(a, b, out=out), warmup=2, repeats=repeats)
    return 2 * size**3 / statistics.median(times) / 1e9


def time_calls(function: Callable[[], Any], *, warmup: int, repeats: int) -> list[float]:
    """Wall times (s) of `repeats` calls of `function` after `warmup` untimed ones."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


# --------------------------------------------------------------------------- measurements


def lr_size_for(output_size: tuple[int, int], scale: int) -> tuple[int, int]:
    """The LR (h, w) whose upscale is closest to `output_size`: output / scale, rounded."""
    return tuple(max(1, round(side / scale)) for side in output_size)  # type: ignore[return-value]


def _num_channels(name: str, settings: BenchSettings) -> int:
    return 1 if get_model_info(name).channels_for(settings.kwargs_for(name)) == "Y" else 3


def _new_model(name: str, scale: int, settings: BenchSettings) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, scale, **settings.kwargs_for(name))


def _rates(gflop: float, median_s: float, reference_gflops: float | None) -> dict[str, float | None]:
    if gflop <= 0:
        return {"gflops": None, "matmul_ratio": None}
    gflops = gflop / median_s
    ratio = gflops / reference_gflops if reference_gflops else None
    return {"gflops": gflops, "matmul_ratio": ratio}


def _timing_fields(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def _bench_eager_inference(
    name: str, scale: int, size: tuple[int, int], settings: BenchSettings
) -> dict[str, Any]:
    model = frozen_copy(_new_model(name, scale, settings))
    lr = torch.rand(1, _num_channels(name, settings), *lr_size_for(size, scale))

    def call() -> None:
        with torch.no_grad():
            model(lr)

    return _inference_record(name, scale, "eager", model, lr, call, settings)


def _bench_backend_inference(
    name: str, scale: int, size: tuple[int, int], backend: str, settings: BenchSettings
) -> dict[str, Any]:
    model = _new_model(name, scale, settings).eval()
    runtime, _, precision = backend.partition("-")
    runner = make_backend(model, runtime, precision=precision or "fp32")
    lr = torch.rand(1, _num_channels(name, settings), *lr_size_for(size, scale))
    return _inference_record(name, scale, backend, model, lr, lambda: runner(lr), settings)


def _inference_record(
    name: str,
    scale: int,
    backend: str,
    model: nn.Module,
    lr: torch.Tensor,
    call: Callable[[], Any],
    settings: BenchSettings,
) -> dict[str, Any]:
    times = time_calls(call, warmup=settings.warmup, repeats=settings.repeats)
    output_size = [lr.shape[2] * scale, lr.shape[3] * scale]
    timing = _timing_fields(times)
    return {
        "model": name,
        "scale": scale,
        "backend": backend,
        "batch": lr.shape[0],
        "lr_size": [lr.shape[2], lr.shape[3]],
        "output_size": output_size,
        **timing,
        "megapixels_per_s": output_size[0] * output_size[1] * lr.shape[0] / timing["median_s"] / 1e6,
        "gflop": count_conv_flops(model, lr.shape) / 1e9,
    }


def training_setup(name: str, scale: int, quick: bool) -> tuple[int, int]:
    """(batch, HR patch side, a multiple of `scale`) of the timed training step of model `name`."""
    pre_upsample = get_model_info(name).pre_upsample
    batch = _QUICK_TRAINING_BATCH if quick else TRAINING_BATCH
    patch = (_QUICK_TRAINING_PATCH if quick else TRAINING_PATCH)[pre_upsample]
    lr_side = max(1, round(patch / scale)) if pre_upsample else patch
    return batch, lr_side * scale


def _bench_training(name: str, scale: int, mode: str, settings: BenchSettings) -> dict[str, Any]:
    model = _new_model(name, scale, settings).train()
    batch, hr_side = training_setup(name, scale, settings.quick)
    channels = _num_channels(name, settings)
    lr = torch.rand(batch, channels, hr_side // scale, hr_side // scale)
    hr = torch.rand(batch, channels, hr_side, hr_side)
    flops = count_conv_flops(model, lr.shape, training=True)
    if mode == "torch":
        prepare_for_training(model)
        lr, hr = to_channels_last(lr), to_channels_last(hr)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        return {}  # nothing to train (bicubic)
    optimizer = torch.optim.Adam(model.parameters(), _LEARNING_RATE)  # 2nd argument: learning rate

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(lr), hr)
        loss.backward()
        optimizer.step()

    times = time_calls(step, warmup=settings.warmup, repeats=settings.training_repeats)
    timing = _timing_fields(times)
    return {
        "model": name,
        "scale": scale,
        "mode": mode,
        "batch": batch,
        "hr_size": [hr_side, hr_side],
        **timing,
        "hr_pixels_per_s": batch * hr_side * hr_side / timing["median_s"],
        "gflop": flops / 1e9,
    }


# --------------------------------------------------------------------------- the run


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none): beside every timing."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def _machine(allocator_tuned: bool, load_average: list[float | None]) -> dict[str, Any]:
    try:
        import onnxruntime

        onnxruntime_version: str | None = onnxruntime.__version__
    except ModuleNotFoundError:
        onnxruntime_version = None
    return {
        "cpu": _cpu_name(),
        "cores": cpu_count(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime_version,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime_threads": cpu_count(),  # what make_backend gives ONNX Runtime
        "native_bf16": has_native_bf16(),
        "allocator_tuned_before_baseline": allocator_tuned,
        "load_average": load_average,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _add_rates(records: list[dict[str, Any]], key: str, reference_gflops: float) -> None:
    """Fill gflops, matmul_ratio and speedup_vs_eager, comparing each record with its eager twin."""
    eager_times = {
        _group_key(record): record["median_s"] for record in records if record[key] == "eager"
    }
    for record in records:
        record.update(_rates(record["gflop"], record["median_s"], reference_gflops))
        eager = eager_times.get(_group_key(record))
        record["speedup_vs_eager"] = eager / record["median_s"] if eager else None


def _group_key(record: dict[str, Any]) -> tuple:
    """(model, scale, size): the records that measure the same work."""
    size = record.get("output_size") or record.get("hr_size")
    return (record["model"], record["scale"], tuple(size))


def _best_backends(inference: list[dict[str, Any]]) -> list[dict[str, Any]]:
    best: dict[tuple, dict[str, Any]] = {}
    for record in inference:
        group = _group_key(record)
        if group not in best or record["median_s"] < best[group]["median_s"]:
            best[group] = record
    return [
        {
            "model": record["model"],
            "scale": record["scale"],
            "output_size": record["output_size"],
            "backend": record["backend"],
            "matmul_ratio": record["matmul_ratio"],
        }
        for record in best.values()
    ]


def run_bench(settings: BenchSettings, progress: Progress | None = None) -> dict[str, Any]:
    """Measure everything `settings` asks for; returns the JSON-ready result described above."""
    settings.check()
    say = progress or (lambda message: None)
    allocator_tuned = freed_memory_retained()  # reported, so that a tuned baseline shows
    load_at_start = load_average()
    combos = [(name, scale) for name in settings.models for scale in settings.scales]

    say(f"matmul {settings.matmul_size}x{settings.matmul_size} fp32")
    matmul_start = measure_matmul_gflops(settings.matmul_size)

    # Phase 1: everything eager, with the allocator as the process found it.
    inference: list[dict[str, Any]] = []
    training: list[dict[str, Any]] = []
    for name, scale in combos:
        for size in settings.sizes:
            say(f"{name} x{scale} {size[1]}x{size[0]} eager")
            inference.append(_bench_eager_inference(name, scale, size, settings))
        if settings.training:
            say(f"{name} x{scale} training step eager")
            training.append(_bench_training(name, scale, "eager", settings))

    # Phase 2: the fast paths (the torch backend tunes the allocator for the rest of the process).
    retain_freed_memory()
    for name, scale in combos:
        for size in settings.sizes:
            for backend in settings.backends:
                if backend.endswith("-bf16") and not cpu_runs_bf16():
                    continue  # refused, not emulated: oneDNN's emulation is slower than float32
                say(f"{name} x{scale} {size[1]}x{size[0]} {backend}")
                inference.append(_bench_backend_inference(name, scale, size, backend, settings))
        if settings.training:
            say(f"{name} x{scale} training step torch")
            training.append(_bench_training(name, scale, "torch", settings))

    say("matmul again")
    matmul_end = measure_matmul_gflops(settings.matmul_size)
    reference = max(matmul_start, matmul_end)
    training = [record for record in training if record]
    _add_rates(inference, "backend", reference)
    _add_rates(training, "mode", reference)
    settings_json = asdict(settings)
    settings_json["sizes"] = [list(size) for size in settings.sizes]
    settings_json["model_kwargs"] = {name: settings.kwargs_for(name) for name in settings.models}
    return {
        "schema": SCHEMA,
        "machine": _machine(allocator_tuned, [load_at_start, load_average()]),
        "settings": settings_json,
        "matmul": {
            "size": settings.matmul_size,
            "gflops": reference,
            "gflops_start": matmul_start,
            "gflops_end": matmul_end,
        },
        "inference": inference,
        "training": training,
        "best": _best_backends(inference),
    }


# --------------------------------------------------------------------------- text


def _number(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _size_text(size: list[int]) -> str:
    return f"{size[1]}x{size[0]}"


#: Start and end matmul rates further apart than this mean the machine's speed changed mid-run.
DRIFT_TOLERANCE = 0.2


def _drift_warning(matmul: dict[str, Any]) -> list[str]:
    """A warning line when the matmul rate moved during the run, else none.

    Every eager number is measured before every fast-path one (the allocator change cannot be
    undone), so other work starting or stopping mid-run skews 'vs eager' one way or the other.
    """
    start, end = matmul["gflops_start"], matmul["gflops_end"]
    if abs(start - end) <= DRIFT_TOLERANCE * max(start, end):
        return []
    return [
        f"warning: the matmul rate moved from {start:.0f} to {end:.0f} GFLOP/s during the run; eager "
        "(measured first) and fast-path times met different loads, so 'vs eager' is unreliable"
    ]


def _by_model(records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """`records` grouped by model, scale and size in the order measured, eager first in each.

    They are measured all-eager first (see above); side by side, each speed-up reads at a glance.
    """
    groups = list(dict.fromkeys(_group_key(record) for record in records))
    return sorted(records, key=lambda record: (groups.index(_group_key(record)), record[key] != "eager"))


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report of a `run_bench` result."""
    machine, matmul = result["machine"], result["matmul"]
    load = ", ".join("-" if value is None else f"{value:.1f}" for value in machine["load_average"])
    lines = [
        f"{machine['cpu']}, {machine['cores']} cores; torch {machine['torch']} "
        f"({machine['torch_threads']} threads), onnxruntime {machine['onnxruntime']}; "
        f"load average at start, end: {load}",
        f"fp32 matmul {matmul['size']}x{matmul['size']}: {matmul['gflops']:.0f} GFLOP/s "
        f"(start {matmul['gflops_start']:.0f}, end {matmul['gflops_end']:.0f}); "
        "'of matmul' = achieved conv GFLOP/s / this",
        *_drift_warning(matmul),
        "",
        "Inference, batch 1 (median s over repeats; eager = plain PyTorch NCHW, the baseline)",
    ]
    header = (
        f"{'model':<16}{'scale':>5}  {'output':<10}{'backend':<13}{'median s':>9}{'MP/s':>8}"
        f"{'GFLOP/s':>9}{'of matmul':>10}{'vs eager':>9}"
    )
    lines.append(header)
    for record in _by_model(result["inference"], "backend"):
        lines.append(
            f"{record['model']:<16}{'x' + str(record['scale']):>5}  "
            f"{_size_text(record['output_size']):<10}{record['backend']:<13}"
            f"{record['median_s']:>9.3f}{record['megapixels_per_s']:>8.2f}"
            f"{_number(record['gflops'], '.0f'):>9}{_number(record['matmul_ratio'], '.0%'):>10}"
            f"{_number(record['speedup_vs_eager'], '.2f'):>9}"
        )
    if result["training"]:
        lines += ["", "Training step (Adam, MSE, forward + backward + update)"]
        lines.append(
            f"{'model':<16}{'scale':>5}  {'batch x HR':<12}{'mode':<8}{'median s':>9}"
            f"{'HR MP/s':>9}{'GFLOP/s':>9}{'of matmul':>10}{'vs eager':>9}"
        )
        for record in _by_model(result["training"], "mode"):
            batch_text = f"{record['batch']}x{_size_text(record['hr_size'])}"
            lines.append(
                f"{record['model']:<16}{'x' + str(record['scale']):>5}  {batch_text:<12}"
                f"{record['mode']:<8}{record['median_s']:>9.3f}{record['hr_pixels_per_s'] / 1e6:>9.3f}"
                f"{_number(record['gflops'], '.0f'):>9}{_number(record['matmul_ratio'], '.0%'):>10}"
                f"{_number(record['speedup_vs_eager'], '.2f'):>9}"
            )
    lines += ["", "Model configurations timed (random weights)"]
    for name, kwargs in result["settings"]["model_kwargs"].items():
        arguments = ", ".join(f"{key}={value}" for key, value in kwargs.items()) or "-"
        lines.append(f"{name:<16}{arguments}")
    lines += ["", "Best inference backend per model and size"]
    for entry in result["best"]:
        lines.append(
            f"{entry['model']:<16}{'x' + str(entry['scale']):>5}  {_size_text(entry['output_size']):<10}"
            f"{entry['backend']:<13}{_number(entry['matmul_ratio'], '.0%'):>10} of matmul"
        )
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (as in 1280x720) -> (height, width); `ConfigError` otherwise."""
    width_text, separator, height_text = text.lower().partition("x")
    try:
        if not separator:
            raise ValueError
        width, height = int(width_text), int(height_text)
    except ValueError:
        raise ConfigError(f"output size {text!r} must look like 1280x720 (width x height)") from None
    if width < 1 or height < 1:
        raise ConfigError(f"output size {text!r} must be positive")
    return height, width


__all__ = [
    "BenchSettings",
    "format_table",
    "lr_size_for",
    "measure_matmul_gflops",
    "parse_size",
    "run_bench",
    "time_calls",
    "training_setup",
]
