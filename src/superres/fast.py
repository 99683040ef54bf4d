"""The fastest CPU path for superres networks: model transformations and process settings.

Everything here keeps the weights and the outputs of a model (up to float rounding) and only
changes how PyTorch computes them. Kept, because it measurably helped on the 2-core AVX-512
development machine (A/B runs in one process; `superres bench` for the totals):

- `retain_freed_memory()`: glibc gives every freed buffer above its mmap threshold (32 MiB at
  most) back to the kernel, so a network whose activation maps are hundreds of MB page-faults
  and zeroes them again on every call: a third to a half of eager time went to the kernel.
  Keeping freed memory in the heap removed it (srcnn-tutorial, 1280x720, channels-last:
  0.80 s -> 0.21 s; no page faults left).
- channels-last (NHWC) activations and weights: oneDNN's direct convolutions run on NHWC without
  reordering around every layer (1.1-2x per layer, most for the thin first and last layers).
- `fuse_conv_activations`: conv -> ReLU and conv -> (+ skip) -> ReLU chains run as one oneDNN
  kernel (`FusedConv2d`), found with torch.fx, so no separate memory pass for each ReLU and sum
  (RED20 at 1280x720: 13.5 s -> 8.3 s under load; srcnn-tutorial 0.60 -> 0.49 s).
- stride-1 transposed convolutions as convolutions with flipped kernels (`FusedConv2d`,
  `ConvTransposeAsConv2d`), which is what makes RED-Net's decoder fusable.
- `torch.inference_mode()` around inference; torch's default of one thread per core.

For training (`prepare_for_training`): channels-last plus `retain_freed_memory`. The fused
kernels have no backward, and transposed convs as convs trained no faster (within 2%).

Measured and dropped: bf16 autocast (this CPU has AVX-512 BF16 but no AMX: RED20 inference got
slower, 15.7 s vs 9.0 s, and lost 0.10 dB PSNR on Set5 x2, SRCNN too); `torch.compile` (works
offline with gcc but costs ~20 s of compilation per input shape for about what ONNX Runtime
gives without it); TorchScript freeze + `optimize_for_inference` (within 4% of channels-last
eager); oneDNN blocked-layout (`to_mkldnn`) models (no better than channels-last except
srcnn-tutorial, where fusion and ONNX Runtime get the same); micro-batching training steps to
keep activations in cache (slower); computing thin output layers as a 1x1 GEMM plus shifted sums
(slower than oneDNN).
"""

from __future__ import annotations

import copy
import ctypes
import functools
import logging
import operator
import os
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

#: glibc `mallopt` parameter numbers (malloc.h); stable ABI since glibc 2.0.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_memory_retained = False


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory in the heap instead of unmapping it; True if applied.

    Large activation buffers are otherwise `mmap`ed and `munmap`ed on every forward pass, and the
    kernel page-faults and zeroes them again on the next one. With mmap disabled and trimming off,
    freed buffers are reused directly. The price is that the process keeps its peak heap size
    until it exits, which suits command-line runs and benchmarks; it is process-wide and cannot be
    undone exactly, so library callers opt in (`make_runner(..., retain_memory=True)` does).
    A no-op returning False on systems without glibc.
    """
    global _memory_retained
    if _memory_retained:
        return True
    mallopt = _glibc_mallopt()
    if mallopt is None:
        logger.debug("not glibc: leaving the allocator as it is")
        return False
    # -1 disables trimming entirely (mallopt(3)); 0 mmapped chunks sends every request to the heap.
    applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, -1) == 1
    _memory_retained = applied
    logger.debug("glibc keeps freed memory: %s", applied)
    return applied


def freed_memory_retained() -> bool:
    """Whether `retain_freed_memory()` has been applied in this process."""
    return _memory_retained


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt


# --------------------------------------------------------------------------- layouts


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """An (N, C, H, W) tensor in NHWC memory order (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- transposed convs


class ConvTransposeAsConv2d(nn.ConvTranspose2d):
    """A stride-1 `nn.ConvTranspose2d` computed as `conv2d` with flipped, transposed kernels.

    For stride 1, transposed convolution with padding p equals convolution with padding
    dilation * (k - 1) - p of the kernel flipped in both spatial axes, with its input and output
    channel axes swapped. Parameters, names and `state_dict` are those of the transposed conv.
    """

    @classmethod
    def can_replace(cls, module: nn.Module) -> bool:
        """True for a transposed conv that this class computes exactly."""
        if not isinstance(module, nn.ConvTranspose2d) or isinstance(module, cls):
            return False
        kernel, padding, dilation = module.kernel_size, module.padding, module.dilation
        return (
            module.stride == (1, 1)
            and module.groups == 1
            and module.output_padding == (0, 0)
            and module.padding_mode == "zeros"
            and isinstance(padding, tuple)
            and all(d * (k - 1) >= p for k, p, d in zip(kernel, padding, dilation))
        )

    @classmethod
    def sharing_parameters(cls, deconv: nn.ConvTranspose2d) -> ConvTransposeAsConv2d:
        """A replacement for `deconv` that holds the very same weight and bias tensors."""
        replacement = cls.__new__(cls)
        # Copying the instance dict keeps every hyperparameter, hook and the Parameter objects
        # themselves, so an optimizer built on the original keeps working.
        replacement.__dict__.update(deconv.__dict__)
        replacement._parameters = dict(deconv._parameters)
        replacement._buffers = dict(deconv._buffers)
        replacement._modules = dict(deconv._modules)
        return replacement

    def conv_padding(self) -> tuple[int, int]:
        return tuple(  # type: ignore[return-value]
            d * (k - 1) - p for k, p, d in zip(self.kernel_size, self.padding, self.dilation)
        )

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        # (in, out, kh, kw) -> (out, in, kh, kw), mirrored: the adjoint of a correlation.
        weight = self.weight.flip(2, 3).transpose(0, 1)
        if x.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous(memory_format=torch.channels_last)
        else:
            weight = weight.contiguous()
        return F.conv2d(x, weight, self.bias, padding=self.conv_padding(), dilation=self.dilation)


def replace_transposed_convs(model: nn.Module) -> int:
    """Swap every stride-1 transposed conv in `model` for `ConvTransposeAsConv2d`, in place.

    Parameters are shared, not copied. Returns how many modules were replaced.
    """
    replaced = 0
    for parent in model.modules():
        for child_name, child in list(parent.named_children()):
            if ConvTransposeAsConv2d.can_replace(child):
                setattr(parent, child_name, ConvTransposeAsConv2d.sharing_parameters(child))
                replaced += 1
    return replaced


# --------------------------------------------------------------------------- fused convs


@functools.cache
def pointwise_convolutions_work() -> bool:
    """True where oneDNN's fused conv kernels exist here and compute what conv2d + relu does.

    Checked once on a tiny input, so a torch build without them, or a CPU they do not support,
    falls back to the unfused path instead of failing.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x = to_channels_last(torch.randn(1, 2, 5, 6, generator=generator))
    weight = to_channels_last(torch.randn(3, 2, 3, 3, generator=generator))
    bias = torch.randn(3, generator=generator)
    try:
        with torch.inference_mode():
            op = torch.ops.mkldnn._convolution_pointwise
            fused = op(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
            expected = F.relu(F.conv2d(x, weight, bias, padding=1))
    except (AttributeError, RuntimeError) as error:
        logger.debug("oneDNN fused convolutions unavailable: %s", error)
        return False
    return bool(torch.allclose(fused, expected, atol=1e-5))


class FusedConv2d(nn.Module):
    """Inference-only conv (or stride-1 transposed conv) with its ReLU and/or skip sum fused in.

    `forward(x)` computes `unary(conv(x))`; with `binary="add"`, `forward(x, other)` computes
    `unary(conv(x) + other)`, in one oneDNN kernel on channels-last tensors: no separate memory
    pass for the ReLU or the sum, no temporary between them. Weights are copied (a stride-1
    transposed conv's flipped into conv form), so this serves a frozen copy only.
    """

    def __init__(self, conv: nn.Conv2d | nn.ConvTranspose2d, *, unary: str | None, binary: str | None) -> None:
        super().__init__()
        if isinstance(conv, nn.ConvTranspose2d):
            replacement = ConvTransposeAsConv2d.sharing_parameters(conv)
            weight = conv.weight.detach().flip(2, 3).transpose(0, 1)
            padding = replacement.conv_padding()
        else:
            weight = conv.weight.detach()
            padding = conv.padding
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        bias = None if conv.bias is None else conv.bias.detach().clone()
        self.register_buffer("bias", bias)
        self.padding = list(padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.unary = unary
        self.binary = binary

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        op = torch.ops.mkldnn._convolution_pointwise
        x = to_channels_last(x)
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        if self.binary is None:
            return op(x, self.weight, self.bias, *geometry, self.unary or "none", [], "")
        other = to_channels_last(other)
        return op.binary(x, other, self.weight, self.bias, *geometry, self.binary, 1.0, self.unary, [], "")


def _is_fusible_conv(module: nn.Module) -> bool:
    if isinstance(module, nn.ConvTranspose2d):
        return ConvTransposeAsConv2d.can_replace(module)
    return (
        type(module) is nn.Conv2d
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
    )


def _is_relu(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_function" and node.target in (F.relu, torch.relu):
        return len(node.args) == 1 and not node.kwargs.get("inplace", False)
    if node.op == "call_module":
        return type(graph_module.get_submodule(node.target)) is nn.ReLU and len(node.args) == 1
    return node.op == "call_method" and node.target == "relu" and len(node.args) == 1


def _is_add(node: torch.fx.Node) -> bool:
    if node.op == "call_function" and node.target in (operator.add, torch.add):
        return len(node.args) == 2 and not node.kwargs
    return node.op == "call_method" and node.target == "add" and len(node.args) == 2 and not node.kwargs


def _only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _fuse_one(graph_module: torch.fx.GraphModule, conv_node: torch.fx.Node, index: int) -> bool:
    """Fold the ReLU and/or sum after `conv_node` into a `FusedConv2d`; True if it did."""
    conv = graph_module.get_submodule(conv_node.target)
    follower = _only_user(conv_node)
    if follower is None or len(conv_node.args) != 1 or conv_node.kwargs:
        return False
    other = None
    last = follower
    if _is_add(follower):
        first, second = follower.args
        other = second if first is conv_node else first
        if not isinstance(other, torch.fx.Node) or other is conv_node:
            return False
        after_add = _only_user(follower)
        if after_add is not None and _is_relu(graph_module, after_add):
            last = after_add
    elif not _is_relu(graph_module, follower):
        return False
    unary = "relu" if _is_relu(graph_module, last) else None
    name = f"fused_conv_{index}"
    graph_module.add_submodule(name, FusedConv2d(conv, unary=unary, binary=None if other is None else "add"))
    with graph_module.graph.inserting_before(last):
        arguments = (conv_node.args[0],) if other is None else (conv_node.args[0], other)
        fused = graph_module.graph.call_module(name, arguments)
    last.replace_all_uses_with(fused)
    # Erase the pattern from its end, so that each node has no users left when it goes.
    for node in dict.fromkeys((last, follower, conv_node)):
        graph_module.graph.erase_node(node)
    return True


def fuse_conv_activations(model: nn.Module) -> nn.Module:
    """`model` traced with torch.fx, conv -> [+ skip] -> ReLU chains replaced by `FusedConv2d`.

    Inference only (the fused kernels have no backward). Returns `model` itself, unchanged,
    where fusion cannot apply: no working oneDNN, a forward torch.fx cannot trace, or nothing
    to fuse.
    """
    if not pointwise_convolutions_work():
        return model
    # The MATLAB resize branches on tensor sizes, which torch.fx cannot trace: keep it a call.
    from superres import resize

    tracer = torch.fx.Tracer(autowrap_functions=(resize.imresize_tensor, resize.upscale_integer_tensor))
    try:
        graph = tracer.trace(model)
    except Exception as error:  # noqa: BLE001 - any trace failure just means "run unfused"
        logger.debug("not fusing %s: torch.fx cannot trace it (%s)", type(model).__name__, error)
        return model
    graph_module = torch.fx.GraphModule(model, graph, class_name=f"Fused{type(model).__name__}")
    conv_nodes = [
        node
        for node in graph_module.graph.nodes
        if node.op == "call_module" and _is_fusible_conv(graph_module.get_submodule(node.target))
    ]
    fused = sum(_fuse_one(graph_module, node, index) for index, node in enumerate(conv_nodes))
    if not fused:
        return model
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    for attribute in ("scale", "info", "model_kwargs"):
        if hasattr(model, attribute):
            setattr(graph_module, attribute, getattr(model, attribute))
    logger.debug("fused %d convolutions of %s", fused, type(model).__name__)
    return graph_module


# --------------------------------------------------------------------------- inference


class FastInferenceModel(nn.Module):
    """A frozen copy of a super-resolution model that runs on the fastest CPU path.

    Calls take and return ordinary (N, C, h, w) float32 tensors; the output is contiguous NCHW.
    Attributes `scale`, `info` and `model_kwargs` are those of the wrapped model.
    """

    def __init__(self, model: nn.Module, *, channels_last: bool = True) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.scale = getattr(model, "scale", None)
        self.info = getattr(model, "info", None)
        self.model_kwargs = getattr(model, "model_kwargs", {})

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self.channels_last:
                lr = to_channels_last(lr)
            sr = self.model(lr)
            return sr.contiguous()


def optimize_for_inference(
    model: nn.Module, *, channels_last: bool = True, fuse: bool = True
) -> FastInferenceModel:
    """A fast inference copy of `model` (the original is left untouched).

    Eval mode, no gradients, conv + ReLU / conv + skip + ReLU fused (`fuse_conv_activations`,
    with `fuse` and `channels_last`), other stride-1 transposed convs as convolutions, weights
    channels-last. Same outputs as `model(lr)` up to float rounding (max abs difference ~1e-6).
    """
    fast = copy.deepcopy(model).cpu().float().eval()
    fast.requires_grad_(False)
    if fuse and channels_last:
        fast = fuse_conv_activations(fast)
    replace_transposed_convs(fast)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return FastInferenceModel(fast, channels_last=channels_last)


# --------------------------------------------------------------------------- training


def prepare_for_training(model: nn.Module) -> nn.Module:
    """Put `model` on the fast CPU training path, in place, and return it.

    Weights move to channels-last memory; the Parameter objects stay the same, so an optimizer
    created before or after both work, and `state_dict()` keys are unchanged. Feed batches
    through `to_channels_last`, and call `retain_freed_memory()` once per process. (Stride-1
    transposed convs stay as they are: as convolutions they trained no faster, within 2%.)
    """
    return model.to(memory_format=torch.channels_last)


# --------------------------------------------------------------------------- machine facts


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def has_native_bf16() -> bool:
    """True where the CPU computes bf16 dot products natively (AVX-512 BF16 or AMX-BF16)."""
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_count() -> int:
    """CPU cores this process may run on (the affinity mask, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
