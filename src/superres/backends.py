"""Inference backends: one callable per model that maps an LR batch to its SR batch.

`make_runner(model, backend)` returns a `Runner`: `runner(lr)` takes an (N, C, h, w) float32
tensor in [0, 1] and returns the (N, C, scale*h, scale*w) float32 tensor the model computes (not
clipped), contiguous, on the CPU for the ONNX Runtime backend and on `device` for torch.

- `"torch"`: the model itself on `device`; on the CPU it runs the fast path of
  `superres.fast.optimize_for_inference` (a frozen copy: channels-last, conv + ReLU and
  conv + skip + ReLU fused into single oneDNN kernels, stride-1 transposed convs as convs,
  inference mode) with glibc told to keep freed memory (`superres.fast.retain_freed_memory`).
- `"onnxruntime"`: the model exported to ONNX in memory (`superres.export.export_onnx_bytes`,
  done once per model and weights version) and run by ONNX Runtime's CPU provider with one
  intra-op thread per available core.

Both agree with the plain model within 1e-4 (max abs difference).
"""

from __future__ import annotations

import copy
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from superres.errors import ModelError, require_optional
from superres.fast import cpu_count, optimize_for_inference, retain_freed_memory

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime")


class Runner:
    """`runner(lr) -> sr` for one model on one backend; `.backend`, `.device` and `.scale` too."""

    def __init__(
        self, backend: str, device: str, scale: int, function: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        self.backend = backend
        self.device = device
        self.scale = scale
        self._function = function

    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        if lr.ndim != 4:
            raise ValueError(f"expected an (N, C, h, w) tensor, got shape {tuple(lr.shape)}")
        return self._function(lr)

    def __repr__(self) -> str:
        return f"Runner(backend={self.backend!r}, device={self.device!r}, scale={self.scale})"


def make_runner(
    model: nn.Module,
    backend: str = "torch",
    device: str = "cpu",
    *,
    num_threads: int | None = None,
    retain_memory: bool = True,
) -> Runner:
    """A `Runner` for `model` on `backend` ("torch" or "onnxruntime") and `device`.

    `num_threads`: ONNX Runtime intra-op threads (default: the cores this process may use); the
    torch backend uses torch's own setting. `retain_memory`: on the CPU torch path, apply
    `superres.fast.retain_freed_memory()` (process-wide; see there).
    Raises `ModelError` for an unknown backend or a device the backend cannot use.
    """
    scale = int(getattr(model, "scale", 1))
    if backend == "torch":
        return Runner(backend, device, scale, _torch_function(model, device, retain_memory))
    if backend == "onnxruntime":
        if torch.device(device).type != "cpu":
            raise ModelError(f"backend 'onnxruntime' runs on the CPU only, not on {device!r}")
        session = onnx_session(_cached_onnx_bytes(model), num_threads=num_threads)
        return Runner(backend, "cpu", scale, _onnx_function(session))
    raise ModelError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")


# --------------------------------------------------------------------------- torch


def _torch_function(
    model: nn.Module, device: str, retain_memory: bool
) -> Callable[[torch.Tensor], torch.Tensor]:
    target = torch.device(device)
    if target.type != "cpu":
        # The CPU tricks do not apply to accelerators; keep the plain model there.
        plain = copy.deepcopy(model).to(target).eval()

        def run_on_device(lr: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return plain(lr.to(target, torch.float32)).contiguous()

        return run_on_device
    if retain_memory:
        retain_freed_memory()
    fast = optimize_for_inference(model)

    def run_on_cpu(lr: torch.Tensor) -> torch.Tensor:
        return fast(lr.to("cpu", torch.float32))

    return run_on_cpu


# --------------------------------------------------------------------------- onnxruntime


def onnx_session(onnx_bytes: bytes, *, num_threads: int | None = None) -> Any:
    """An ONNX Runtime CPU `InferenceSession` for a serialized model, all graph optimizations on."""
    onnxruntime = require_optional("onnxruntime", "backend 'onnxruntime'")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or cpu_count()
    options.inter_op_num_threads = 1  # one chain of convolutions: nothing to run side by side
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def _onnx_function(session: Any) -> Callable[[torch.Tensor], torch.Tensor]:
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


def _weights_fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place.

    `_version` counts in-place writes (optimizer steps, `load_state_dict`), `data_ptr` catches
    replaced tensors; together they say whether an exported graph still holds these weights.
    """
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((tensor.data_ptr(), tensor._version) for tensor in tensors)


def _cached_onnx_bytes(model: nn.Module) -> bytes:
    from superres.export import export_onnx_bytes

    fingerprint = _weights_fingerprint(model)
    with _onnx_cache_lock:
        cached = _onnx_cache.get(model)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
    logger.debug("exporting %s to ONNX for onnxruntime", type(model).__name__)
    data = export_onnx_bytes(model)
    with _onnx_cache_lock:
        _onnx_cache[model] = (fingerprint, data)
    return data
