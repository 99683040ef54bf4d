"""The one inference runtime: `Backend`, an LR -> SR callable on a device, and its factory.

`make_backend(model, runtime, device)` is the only place that turns a model into something that
upscales; upscale, evaluate, compare and demo all go through it, and the command line resolves the
device once (`resolve_device`) before calling it. `backend(lr)` (or `backend.forward(lr)`) takes
an (N, C, h, w) float32 tensor in [0, 1] on any device and returns the (N, C, scale*h, scale*w)
float32 tensor the model computes (not clipped), contiguous, on `backend.device`.

Runtimes (`RUNTIMES`):
- `"torch"`: on the CPU, the fast path of `superres.inference.fast.optimize_for_inference` (a folded,
  channels-last copy with conv + activation and conv + skip chains fused into single oneDNN
  kernels, inference mode) with glibc told to keep freed memory
  (`superres.inference.fast.retain_freed_memory`), its inner convolutions in bf16 with
  `precision` "bf16" (or "auto" where the model's card allows it: `superres.inference.precision`);
  on CUDA the folded network, in float16 with `half` (refused, on any device, for a network
  whose card says float16 is not safe for it: `ModelInfo.half_safe`; bf16 likewise refused for
  one whose card says bfloat16 is not safe, `ModelInfo.bf16_safe`, and never chosen by "auto").
- `"onnxruntime"`: the model exported to ONNX in memory (`superres.inference.export.export_onnx_bytes`,
  done once per model and weights version) and run by ONNX Runtime's CPU provider with one
  intra-op thread per available core.

Every runtime runs an eval-mode copy with re-parameterisable branches folded into plain
convolutions (`superres.inference.export.frozen_copy`, or the fast path's own copy), so the caller's model
(perhaps mid-training) is never changed. All agree with the plain model within 1e-4 (max abs
difference).
Another runtime needs no registration: build a `Backend(forward, device)` and pass it wherever
a backend name is accepted.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from superres.errors import ConfigError
from superres.inference import export
from superres.inference.fast import optimize_for_inference, retain_freed_memory
from superres.inference.precision import check_precision_safe, resolve_precision
from superres.ops.ensemble import self_ensemble as ensembled
from superres.zoo.pretrained import weights_fingerprint

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnxruntime")

TensorFunction = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Backend:
    """How a network is run: `forward` maps float32 LR to float32 SR on `device`.

    `name` is the runtime ("torch", "onnxruntime"), or whatever a hand-made backend calls itself;
    `precision` what the network computes in ("fp32", "bf16", "fp16"), which also sizes the tiles.
    """

    forward: TensorFunction
    device: torch.device
    name: str = "custom"
    precision: str = "fp32"

    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        return self.forward(lr)


def resolve_device(device: str | torch.device) -> torch.device:
    """`"auto"` -> CUDA when available, else CPU; asking for CUDA without one is a ConfigError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device '{device}'; {_devices_here()}")
    cuda_there = torch.cuda.is_available() and (parsed.index or 0) < torch.cuda.device_count()
    mps_there = torch.backends.mps.is_available()
    if (parsed.type == "cuda" and not cuda_there) or (parsed.type == "mps" and not mps_there):
        raise ConfigError(f"device '{device}' is not available here; {_devices_here()}")
    return parsed


def _devices_here() -> str:
    """What --device may name on this machine, for messages."""
    found = ["auto", "cpu"]
    if torch.cuda.is_available():
        found += ["cuda"] + [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return f"this machine has: {', '.join(found)}"


def make_backend(
    model: nn.Module,
    runtime: str = "torch",
    device: str | torch.device = "cpu",
    *,
    half: bool = False,
    self_ensemble: bool = False,
    num_threads: int | None = None,
    retain_memory: bool = True,
    precision: str = "fp32",
) -> Backend:
    """A `Backend` running `model` on `runtime` ("torch" or "onnxruntime") and `device`.

    `precision`: "fp32", "bf16" (the torch CPU path, on a CPU with bf16 instructions), "auto"
    (bf16 where the model's card says it is free and faster, `superres.inference.precision.resolve_precision`)
    or "int8" (refused); the backend's `.precision` says what was chosen.
    `half`: float16 (torch on CUDA only). `self_ensemble`: average the network over the 8
    flips/rotations of its input (`superres.ops.ensemble`). `num_threads`: ONNX Runtime intra-op
    threads (default: the cores this process may use). `retain_memory`: on the CPU torch path,
    apply `superres.inference.fast.retain_freed_memory()` (process-wide; see there).
    Raises `ConfigError` for an unknown runtime or a device/precision it cannot use, and for
    `half` on a network whose card says float16 is not safe, and for `precision="bf16"` on one
    whose card says bfloat16 is not safe (`superres.inference.precision.check_precision_safe`).
    """
    if half:
        # Before the device: a network that float16 breaks is refused on every machine, so the
        # answer does not depend on whether this one has a GPU (and tests can see it on a CPU).
        check_precision_safe(model, "fp16")
    if precision == "bf16":
        check_precision_safe(model, "bf16")  # likewise before the device and the CPU's instructions
    target = resolve_device(device)
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown backend '{runtime}'; available: {', '.join(sorted(RUNTIMES))}")
    if half and target.type != "cuda":
        raise ConfigError(f"--half needs a CUDA device; the device here is '{target}'")
    chosen = resolve_precision(precision, model, target, runtime)
    if runtime == "onnxruntime":
        if target.type != "cpu":
            raise ConfigError(f"backend 'onnxruntime' runs on the CPU only, not on '{target}'")
        forward = _onnx_forward(model, num_threads)
    elif target.type == "cpu":
        forward = _torch_cpu_forward(model, retain_memory, chosen)
    else:
        forward = _torch_device_forward(model, target, torch.float16 if half else torch.float32)
    if self_ensemble:
        forward = ensembled(forward)
    return Backend(forward=forward, device=target, name=runtime, precision="fp16" if half else chosen)


# --------------------------------------------------------------------------- torch


def _torch_cpu_forward(model: nn.Module, retain_memory: bool, precision: str = "fp32") -> TensorFunction:
    if retain_memory:
        retain_freed_memory()
    # A copy: optimize_for_inference folds re-parameterisable branches and batch norms itself.
    fast = optimize_for_inference(model, precision=precision)

    def run_on_cpu(lr: torch.Tensor) -> torch.Tensor:
        return fast(lr.to("cpu", torch.float32))

    return run_on_cpu


def _torch_device_forward(model: nn.Module, device: torch.device, dtype: torch.dtype) -> TensorFunction:
    # The CPU tricks do not apply to accelerators: the plain (folded) network there.
    network = export.frozen_copy(model).to(device=device, dtype=dtype)

    def run_on_device(lr: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return network(lr.to(device, dtype)).float().contiguous()

    return run_on_device


# --------------------------------------------------------------------------- onnxruntime


def _onnx_forward(model: nn.Module, num_threads: int | None) -> TensorFunction:
    session = export.onnx_session(_cached_onnx_bytes(model), num_threads=num_threads)
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name

    def run(lr: torch.Tensor) -> torch.Tensor:
        # numpy views of CPU tensors cost nothing; ORT wants C-contiguous float32.
        array = lr.detach().to("cpu", torch.float32).contiguous().numpy()
        (sr,) = session.run([output_name], {input_name: array})
        return torch.from_numpy(sr)

    return run


# Exported graphs, per model object, tagged with the weights they were made from.
_onnx_cache: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, bytes]] = weakref.WeakKeyDictionary()
_onnx_cache_lock = threading.Lock()


def _cached_onnx_bytes(model: nn.Module) -> bytes:
    fingerprint = weights_fingerprint(model)
    with _onnx_cache_lock:
        cached = _onnx_cache.get(model)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
    logger.debug("exporting %s to ONNX for onnxruntime", type(model).__name__)
    data = export.export_onnx_bytes(model)
    with _onnx_cache_lock:
        _onnx_cache[model] = (fingerprint, data)
    return data
