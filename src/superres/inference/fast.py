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
- `fuse_conv_activations`: conv -> activation and conv -> (+ skip) [-> ReLU] chains run as one
  oneDNN kernel (`FusedConv2d`), found with torch.fx, so no separate memory pass for each
  activation and sum (RED20 at 1280x720: 13.5 s -> 8.3 s under load; srcnn-tutorial 0.60 ->
  0.49 s). Besides ReLU, tanh (ESPCN: 107 -> 80 ms at 512x512 x2), SiLU (SPAN) and a
  one-parameter PReLU as leaky ReLU (SRResNet: 265 -> 219 ms at 192x192) fuse; a single layer
  fused ran 0.6-1.0x the time of conv + separate activation for each of them. Per-channel PReLU
  (FSRCNN) has no oneDNN form and stays separate. A constant multiply after a conv (EDSR's
  res_scale) is folded into its weights so that the skip sum after it fuses.
- re-parameterisable branches folded (`superres.models.reparam`: SPAN's four convs per conv
  become one) and eval-mode batch norm folded into the conv before it (`fold_batch_norms`,
  SRResNet), both exact up to rounding.
- stride-1 transposed convolutions as convolutions with flipped kernels (`FusedConv2d`,
  `ConvTransposeAsConv2d`), which is what makes RED-Net's decoder fusable.
- strided transposed convs as an LR conv + pixel shuffle (`SubpixelConvTranspose2d`, FSRCNN's
  9x9 deconv: 90 -> 38 ms on 56 x 256x256 channels-last, 2.3x), frozen; FSRCNN trains through
  the same rewrite (`superres.models.subpixel.LRSpaceConvTranspose2d`).
- `torch.inference_mode()` around inference; torch's default of one thread per core.

For training (`prepare_for_training`): channels-last plus `retain_freed_memory`. The fused
kernels have no backward, and stride-1 transposed convs as convs trained no faster (within 2%).

bf16 (`precision="bf16"`, `to_lower_precision`): the folded network's inner convolutions hold bf16
weights and compute on bf16 activations, while the convolutions that read or write the image
(the first and the last, found by their channel counts) and everything between the input and the
first convolution (centring, the bicubic skip) stay float32. On the 2-core AVX-512 BF16 machine
(no AMX) SPAN60 x2's network took 0.6x fp32's time and moved Set5 by -0.0002 dB; converting every
convolution cost 0.006 dB, and torch's bf16 autocast, which casts the image and the skip too, ran
about as fast and lost 0.076 dB (`tools/probe_lower_precision.py`, docs/precision.md). Whether
bf16 is free is measured per shipped model and recorded in its card (`superres.inference.precision`).
Training uses autocast (`superres.training.loop`), where the gradients, not the last 0.01 dB, matter.

Measured and dropped: bf16 autocast for inference (above; earlier, RED20 under autocast got slower,
15.7 s vs 9.0 s, and lost 0.10 dB PSNR on Set5 x2); int8 post-training static quantisation (torch's
FX x86 path, calibrated on T91: SPAN60 x2 lost 4.1 dB on Set5 quantised whole, 0.14 dB with only
its inner convolutions, at 0.64x fp32's time against bf16's 0.60x; SRCNN x2 0.26-0.68 dB, ESPCN x2
2-3 dB; `tools/probe_lower_precision.py`, docs/precision.md);
`torch.compile` (works offline with gcc but costs ~20 s of compilation per input shape for about
what ONNX Runtime gives without it); TorchScript freeze + `optimize_for_inference` (within 4% of
channels-last eager); oneDNN blocked-layout (`to_mkldnn`) models (no better than channels-last except
srcnn-tutorial, where fusion and ONNX Runtime get the same); micro-batching training steps to
keep activations in cache (slower); computing thin output layers as a 1x1 GEMM plus shifted sums
(slower than oneDNN).
"""

from __future__ import annotations

import collections
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
from torch.nn.utils.fusion import fuse_conv_bn_eval

from superres.models.reparam import fuse_reparameterizable
from superres.models.subpixel import LRSpaceConvTranspose2d, computes_in_lr_space, subpixel_conv_weight

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
    undone exactly, so library callers opt in (`superres.inference.backends.make_backend(..., retain_memory=True)` does).
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
    return _replace_children(model, ConvTransposeAsConv2d.can_replace, ConvTransposeAsConv2d.sharing_parameters)


def _replace_children(
    model: nn.Module, can_replace: Callable[[nn.Module], bool], replacement: Callable[[nn.Module], nn.Module]
) -> int:
    """Replace, in place, every submodule of `model` that `can_replace` accepts; returns how many."""
    replaced = 0
    for parent in model.modules():
        for child_name, child in list(parent.named_children()):
            if can_replace(child):
                setattr(parent, child_name, replacement(child))
                replaced += 1
    return replaced


# --------------------------------------------------------------------------- strided transposed convs


class SubpixelConvTranspose2d(nn.Sequential):
    """A frozen copy of a strided `nn.ConvTranspose2d` whose output is exactly s times its input,
    as the plain LR convolution + pixel shuffle it equals (`superres.models.subpixel`), so that
    inference runs a dense conv without gathering its weight on every call.
    """

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        stride = deconv.stride[0]
        weight, radius = subpixel_conv_weight(deconv.weight.detach(), stride, deconv.padding[0])
        conv = nn.Conv2d(deconv.in_channels, weight.shape[0], weight.shape[-1], padding=radius)
        conv.weight.data.copy_(weight)
        bias = torch.zeros(deconv.out_channels) if deconv.bias is None else deconv.bias.detach()
        conv.bias.data.copy_(bias.repeat_interleave(stride * stride))
        super().__init__(conv, nn.PixelShuffle(stride))

    can_replace = staticmethod(computes_in_lr_space)


def replace_strided_transposed_convs(model: nn.Module) -> int:
    """Swap every strided transposed conv `SubpixelConvTranspose2d` computes for one, in place.

    Weights are copied (the frozen inference copy only). Returns how many were replaced.
    """
    return _replace_children(model, SubpixelConvTranspose2d.can_replace, SubpixelConvTranspose2d)


def restore_plain_transposed_convs(model: nn.Module) -> int:
    """Swap every `LRSpaceConvTranspose2d` for the plain `nn.ConvTranspose2d` it computes, in place.

    For ONNX export: the graph keeps the paper's deconvolution (FSRCNN's layers are then those
    of OpenCV's dnn_superres files) instead of the gather that builds the LR conv's weight.
    Weights are copied. Returns how many were replaced.
    """
    return _replace_children(
        model, lambda module: isinstance(module, LRSpaceConvTranspose2d), LRSpaceConvTranspose2d.as_plain
    )


# --------------------------------------------------------------------------- batch norm


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a conv in an `nn.Sequential`.

    In place: the conv becomes one with the normalisation in its weights and bias, the norm an
    `nn.Identity` (which `fuse_conv_activations` skips over). Sequential pairs are the only
    place where "the conv's output goes to the norm and nowhere else" holds without tracing, so
    this works on models torch.fx cannot trace too. Returns how many norms were folded.
    """
    folded = 0
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        for index in range(len(parent) - 1):
            conv, norm = parent[index], parent[index + 1]
            if type(conv) not in (nn.Conv2d, nn.ConvTranspose2d) or not _is_frozen_batch_norm(norm):
                continue
            parent[index] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.ConvTranspose2d))
            parent[index + 1] = nn.Identity()
            folded += 1
    return folded


def _is_frozen_batch_norm(module: nn.Module) -> bool:
    return (
        type(module) is nn.BatchNorm2d
        and not module.training
        and module.track_running_stats
        and module.running_mean is not None
    )


# --------------------------------------------------------------------------- fused convs

#: What oneDNN's fused conv applies after the convolution, per activation torch.fx sees:
#: (oneDNN attribute, its scalars). Each kind was timed against conv + the separate activation
#: on channels-last (2-core AVX-512 machine, under load): relu, tanh (ESPCN), swish = SiLU
#: (SPAN) and leaky_relu = one-parameter PReLU (SRResNet) all save the activation's memory
#: pass. A per-channel PReLU (FSRCNN) has no oneDNN attribute and stays a separate op.
_FUNCTION_UNARY = {F.relu: "relu", torch.relu: "relu", torch.tanh: "tanh", F.silu: "swish"}
_MODULE_UNARY = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.SiLU: "swish"}
_METHOD_UNARY = {"relu": "relu", "tanh": "tanh"}
#: The only activation oneDNN accepts after a fused sum ("Unary Fusion behavior undefined").
_UNARY_AFTER_ADD = "relu"

Unary = tuple[str, list[float]]


@functools.cache
def _unary_works(attribute: str) -> bool:
    """True where oneDNN's fused conv with `attribute` exists here and matches the eager ops.

    Checked once per attribute on a tiny input, so a torch build without the fused kernels, or
    a CPU they do not support, falls back to the unfused path instead of failing.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    reference = {
        "relu": F.relu,
        "tanh": torch.tanh,
        "swish": F.silu,
        "leaky_relu": functools.partial(F.leaky_relu, negative_slope=0.25),
    }[attribute]
    scalars = [0.25] if attribute == "leaky_relu" else []
    generator = torch.Generator().manual_seed(0)
    x = to_channels_last(torch.randn(1, 2, 5, 6, generator=generator))
    weight = to_channels_last(torch.randn(3, 2, 3, 3, generator=generator))
    bias = torch.randn(3, generator=generator)
    try:
        with torch.inference_mode():
            op = torch.ops.mkldnn._convolution_pointwise
            fused = op(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, attribute, scalars, "")
            expected = reference(F.conv2d(x, weight, bias, padding=1))
    except (AttributeError, RuntimeError) as error:
        logger.debug("oneDNN fused convolution with %s unavailable: %s", attribute, error)
        return False
    return bool(torch.allclose(fused, expected, atol=1e-5))


def pointwise_convolutions_work() -> bool:
    """True where oneDNN's fused conv kernels exist here and compute what conv2d + relu does."""
    return _unary_works("relu")


class FusedConv2d(nn.Module):
    """Inference-only conv (or stride-1 transposed conv) with its activation and/or skip sum fused in.

    `forward(x)` computes `unary(conv(x))`; with `binary="add"`, `forward(x, other)` computes
    `unary(conv(x) + other)`, in one oneDNN kernel on channels-last tensors: no separate memory
    pass for the activation or the sum, no temporary between them. `unary` is a oneDNN
    attribute ("relu", "tanh", "swish", "leaky_relu") with its `scalars`. Weights are copied (a
    stride-1 transposed conv's flipped into conv form), so this serves a frozen copy only.
    """

    def __init__(
        self,
        conv: nn.Conv2d | nn.ConvTranspose2d,
        *,
        unary: str | None,
        binary: str | None,
        scalars: list[float] | None = None,
    ) -> None:
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
        self.scalars = list(scalars or [])
        self.binary = binary

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        op = torch.ops.mkldnn._convolution_pointwise
        x = to_channels_last(x)
        geometry = (self.padding, self.stride, self.dilation, self.groups)
        if self.binary is None:
            return op(x, self.weight, self.bias, *geometry, self.unary or "none", self.scalars, "")
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


def _unary_of(graph_module: torch.fx.GraphModule, node: torch.fx.Node) -> Unary | None:
    """The oneDNN (attribute, scalars) that `node` computes on its one input, if any."""
    if len(node.args) != 1 or node.kwargs.get("inplace", False) or set(node.kwargs) - {"inplace"}:
        return None
    unary: Unary | None = None
    if node.op == "call_function" and node.target in _FUNCTION_UNARY:
        unary = (_FUNCTION_UNARY[node.target], [])
    elif node.op == "call_method" and node.target in _METHOD_UNARY:
        unary = (_METHOD_UNARY[node.target], [])
    elif node.op == "call_module":
        module = graph_module.get_submodule(node.target)
        if type(module) in _MODULE_UNARY:
            unary = (_MODULE_UNARY[type(module)], [])
        elif type(module) is nn.PReLU and module.num_parameters == 1:
            # One shared slope: exactly a leaky ReLU, which oneDNN fuses (per-channel: no).
            unary = ("leaky_relu", [float(module.weight.detach().reshape(()))])
    if unary is None or not _unary_works(unary[0]):
        return None
    return unary


def _is_add(node: torch.fx.Node) -> bool:
    if node.op == "call_function" and node.target in (operator.add, torch.add):
        return len(node.args) == 2 and not node.kwargs
    return node.op == "call_method" and node.target == "add" and len(node.args) == 2 and not node.kwargs


def _is_scalar_multiply(node: torch.fx.Node) -> bool:
    """`tensor * number` or `number * tensor`, as a function or a method call."""
    is_multiply = (node.op == "call_function" and node.target in (operator.mul, torch.mul)) or (
        node.op == "call_method" and node.target == "mul"
    )
    numbers = [arg for arg in node.args if isinstance(arg, (int, float)) and not isinstance(arg, bool)]
    return is_multiply and len(node.args) == 2 and len(numbers) == 1 and not node.kwargs


def _only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _drop_identities(graph_module: torch.fx.GraphModule) -> int:
    """Remove `nn.Identity` calls (left by `fold_batch_norms`), so that conv -> activation chains meet."""
    dropped = 0
    for node in list(graph_module.graph.nodes):
        if node.op == "call_module" and type(graph_module.get_submodule(node.target)) is nn.Identity:
            node.replace_all_uses_with(node.args[0])
            graph_module.graph.erase_node(node)
            dropped += 1
    return dropped


def _fold_scalar_multiplies(graph_module: torch.fx.GraphModule, conv_nodes: list[torch.fx.Node]) -> int:
    """conv -> (* constant) becomes a conv with scaled weights (EDSR's `res_scale`), so that the
    conv can meet the skip sum after it. Only convs called once are changed (weights are shared
    by every call). Returns how many were folded."""
    calls = collections.Counter(node.target for node in graph_module.graph.nodes if node.op == "call_module")
    folded = 0
    for conv_node in conv_nodes:
        multiply = _only_user(conv_node)
        if multiply is None or not _is_scalar_multiply(multiply) or calls[conv_node.target] != 1:
            continue
        factor = next(arg for arg in multiply.args if not isinstance(arg, torch.fx.Node))
        # A scaled copy under a new name: the traced model's own conv stays as it was.
        scaled = copy.deepcopy(graph_module.get_submodule(conv_node.target))
        with torch.no_grad():
            scaled.weight.mul_(factor)
            if scaled.bias is not None:
                scaled.bias.mul_(factor)
        name = f"scaled_conv_{folded}"
        graph_module.add_submodule(name, scaled)
        conv_node.target = name
        multiply.replace_all_uses_with(conv_node)
        graph_module.graph.erase_node(multiply)
        folded += 1
    return folded


def _fuse_one(graph_module: torch.fx.GraphModule, conv_node: torch.fx.Node, index: int) -> bool:
    """Fold the activation and/or sum after `conv_node` into a `FusedConv2d`; True if it did."""
    conv = graph_module.get_submodule(conv_node.target)
    follower = _only_user(conv_node)
    if follower is None or len(conv_node.args) != 1 or conv_node.kwargs:
        return False
    other = None
    last = follower
    unary: Unary | None = None
    if _is_add(follower):
        first, second = follower.args
        other = second if first is conv_node else first
        if not isinstance(other, torch.fx.Node) or other is conv_node:
            return False
        after_add = _only_user(follower)
        after_unary = None if after_add is None else _unary_of(graph_module, after_add)
        if after_unary is not None and after_unary[0] == _UNARY_AFTER_ADD:
            last, unary = after_add, after_unary
    else:
        unary = _unary_of(graph_module, follower)
        if unary is None:
            return False
    attribute, scalars = unary if unary is not None else (None, [])
    name = f"fused_conv_{index}"
    module = FusedConv2d(conv, unary=attribute, binary=None if other is None else "add", scalars=scalars)
    graph_module.add_submodule(name, module)
    with graph_module.graph.inserting_before(last):
        arguments = (conv_node.args[0],) if other is None else (conv_node.args[0], other)
        fused = graph_module.graph.call_module(name, arguments)
    last.replace_all_uses_with(fused)
    # Erase the pattern from its end, so that each node has no users left when it goes.
    for node in dict.fromkeys((last, follower, conv_node)):
        graph_module.graph.erase_node(node)
    return True


def fuse_conv_activations(model: nn.Module) -> nn.Module:
    """`model` traced with torch.fx, its conv chains rewritten into `FusedConv2d`.

    Rewrites: `nn.Identity` calls dropped; conv -> (* constant) folded into the weights;
    conv -> activation and conv -> (+ skip) [-> ReLU] replaced by one fused kernel. Inference
    only (the fused kernels have no backward). `model` itself is never changed, and is returned
    as it is where fusion cannot apply: no working oneDNN, a forward torch.fx cannot trace, or
    nothing to rewrite.
    """
    if not pointwise_convolutions_work():
        return model
    # The MATLAB resize branches on tensor sizes, which torch.fx cannot trace: keep it a call.
    from superres.ops import resize

    tracer = torch.fx.Tracer(autowrap_functions=(resize.imresize_tensor, resize.upscale_integer_tensor))
    try:
        graph = tracer.trace(model)
    except Exception as error:  # noqa: BLE001 - any trace failure just means "run unfused"
        logger.debug("not fusing %s: torch.fx cannot trace it (%s)", type(model).__name__, error)
        return model
    graph_module = torch.fx.GraphModule(model, graph, class_name=f"Fused{type(model).__name__}")
    rewritten = _drop_identities(graph_module)
    conv_nodes = [
        node
        for node in graph_module.graph.nodes
        if node.op == "call_module" and _is_fusible_conv(graph_module.get_submodule(node.target))
    ]
    rewritten += _fold_scalar_multiplies(graph_module, conv_nodes)
    fused = sum(_fuse_one(graph_module, node, index) for index, node in enumerate(conv_nodes))
    if not fused and not rewritten:
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
    Attributes `scale`, `info` and `model_kwargs` are those of the wrapped model; `precision` is
    what its inner convolutions compute in ("fp32" or "bf16", see `to_lower_precision`).
    """

    def __init__(self, model: nn.Module, *, channels_last: bool = True, precision: str = "fp32") -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.precision = precision
        self.scale = getattr(model, "scale", None)
        self.info = getattr(model, "info", None)
        self.model_kwargs = getattr(model, "model_kwargs", {})

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self.channels_last:
                lr = to_channels_last(lr)
            sr = self.model(lr)
            return sr.float().contiguous()


# --------------------------------------------------------------------------- lower precision


class CastInputs(nn.Module):
    """`inner` (a convolution) with its weights in `dtype` and its tensor inputs cast to `dtype`;
    its output in `output_dtype` (default: `dtype`).

    The elementwise work after a bf16 convolution stays bf16 until it meets a float32 tensor (the
    image, the bicubic skip), where type promotion returns to float32.
    """

    def __init__(self, inner: nn.Module, dtype: torch.dtype, output_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.inner = inner.to(dtype)
        self.dtype = dtype
        self.output_dtype = dtype if output_dtype is None else output_dtype

    def forward(self, *inputs: object) -> torch.Tensor:
        cast = [value.to(self.dtype) if isinstance(value, torch.Tensor) else value for value in inputs]
        return self.inner(*cast).to(self.output_dtype)


def _conv_channels(module: nn.Module) -> tuple[int, int] | None:
    """(input, output) channels of a convolution the fast path runs, None for anything else."""
    if isinstance(module, FusedConv2d):
        return module.weight.shape[1] * module.groups, module.weight.shape[0]
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        return module.in_channels, module.out_channels
    return None


def to_lower_precision(
    model: nn.Module, dtype: torch.dtype, *, image_channels: int, output_channels: int
) -> int:
    """Run the inner convolutions of a frozen fast-path copy in `dtype` (bf16), in place.

    A convolution that reads the image (at most `image_channels` inputs) or writes it (at most
    `output_channels` outputs: the image's channels, times scale**2 before a pixel shuffle) keeps
    float32 weights and float32 inputs: rounding the image itself to bf16 (8 significant bits,
    half a grey level near white after SPAN's x255 range) costs what the inner layers' rounding
    does not. The first hands its features on in `dtype`, so that the skips and concatenations
    that reuse them do not promote the blocks after them back to float32. Every other
    convolution holds `dtype` weights and casts its inputs (`CastInputs`); other modules with
    weights (a per-channel PReLU) keep float32 and cast their inputs up. The input, its centring
    and any bicubic skip are never touched, so the output is a float32 image plus a residual
    computed in `dtype`. Returns how many convolutions now run in `dtype`.
    """
    lowered = 0
    for parent in list(model.modules()):
        if isinstance(parent, CastInputs):
            continue
        for name, child in list(parent.named_children()):
            channels = _conv_channels(child)
            if channels is not None:
                inputs, outputs = channels
                if outputs <= output_channels:  # writes the image: float32 in and out
                    replacement = CastInputs(child, torch.float32)
                elif inputs <= image_channels:  # reads the image: float32 in, features out in dtype
                    replacement = CastInputs(child, torch.float32, output_dtype=dtype)
                else:
                    replacement = CastInputs(child, dtype)
                    lowered += 1
                setattr(parent, name, replacement)
            elif any(True for _ in child.parameters(recurse=False)) and not list(child.children()):
                setattr(parent, name, CastInputs(child, torch.float32))
    return lowered


@functools.cache
def bf16_convolutions_work() -> bool:
    """True where this torch build computes bf16 convolutions on this CPU (natively or emulated)
    and agrees with float32 on a tiny input; checked once."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    x = to_channels_last(torch.rand(1, 8, 6, 7, generator=generator))
    conv = nn.Conv2d(8, 8, 3, padding=1).requires_grad_(False)
    try:
        with torch.inference_mode():
            expected = conv(x)
            lowered = CastInputs(copy.deepcopy(conv), torch.bfloat16)(x).float()
    except (RuntimeError, TypeError) as error:
        logger.debug("bf16 convolutions unavailable: %s", error)
        return False
    return bool(torch.allclose(lowered, expected, atol=0.05, rtol=0.02))


def optimize_for_inference(
    model: nn.Module, *, channels_last: bool = True, fuse: bool = True, precision: str = "fp32"
) -> FastInferenceModel:
    """A fast inference copy of `model` (the original is left untouched).

    Every model gets: a deep copy in eval mode without gradients, re-parameterisable branches
    folded into plain convolutions (`fuse_reparameterizable`, SPAN), eval-mode batch norm folded
    into the conv before it (`fold_batch_norms`, SRResNet), stride-1 transposed convs as
    convolutions, weights channels-last and `torch.inference_mode()` around each call. With
    `fuse` and `channels_last`, conv -> activation and conv -> skip sum [-> ReLU] chains also run
    as single oneDNN kernels (`fuse_conv_activations`), where torch.fx can trace the model.
    Same outputs as `model(lr)` up to float rounding (max abs difference ~1e-6).
    `precision="bf16"`: the inner convolutions in bf16 (`to_lower_precision`; the outputs then move
    by what the model's card records, `superres.inference.precision`).
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"the fast path computes in fp32 or bf16, not {precision!r}")
    fast = copy.deepcopy(model).cpu().float().eval()  # eval first: batch norm folds its running stats
    fuse_reparameterizable(fast)
    if fuse:
        fold_batch_norms(fast)
        replace_strided_transposed_convs(fast)
    if fuse and channels_last:
        fast = fuse_conv_activations(fast)
    replace_transposed_convs(fast)
    if channels_last:
        _weights_channels_last(fast)
    if precision == "bf16":
        to_lower_precision(fast, torch.bfloat16, **_image_channels(model))
    # Again at the end: the modules the rewrites added start in training mode, with gradients.
    fast.eval().requires_grad_(False)
    return FastInferenceModel(fast, channels_last=channels_last, precision=precision)


def _weights_channels_last(module: nn.Module) -> None:
    """`module`'s 4-D weights and buffers channels-last, in place, as `module.to(memory_format=...)`
    converts them; that also tries 5-D tensors and fails on them (AuraSR's banks of conv kernels,
    spandrel), where this leaves them as they are."""
    for submodule in module.modules():
        for tensor in [*submodule._parameters.values(), *submodule._buffers.values()]:
            if tensor is not None and tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)


def _image_channels(model: nn.Module) -> dict[str, int]:
    """The channel counts at which a convolution touches the image, from the model's card: its
    input channels (1 for Y, 3 for RGB) and its output, times scale**2 where the network
    computes on the LR grid and ends in a pixel shuffle."""
    info = getattr(model, "info", None)
    scale = int(getattr(model, "scale", 1) or 1)
    if info is None:
        return {"image_channels": 4, "output_channels": 4 * scale * scale}
    channels = 1 if info.channels_for(getattr(model, "model_kwargs", None)) == "Y" else 3
    per_output = 1 if info.pre_upsample else scale * scale
    return {"image_channels": channels, "output_channels": channels * per_output}


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


def has_amx_bf16() -> bool:
    """True where the CPU has AMX bf16 tiles, on which oneDNN runs bf16 convolutions fast."""
    return "amx_bf16" in cpu_flags()


def cpu_count() -> int:
    """CPU cores this process may run on (the affinity mask, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
