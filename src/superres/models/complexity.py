"""How much work a network does: multiply-accumulates (MACs) of its convolutions, counted exactly.

The one MAC counter of superres: `superres models`, the frontier and the "fast" model choice read
MACs per output pixel (`conv_macs_per_output_pixel`); `superres bench` turns the same count into
FLOPs (2 per MAC, `count_conv_flops`) for its GFLOP/s figures.

Counted on the network as it runs for inference (re-parameterisable branches folded) by forward
hooks on every convolution and transposed convolution, on the meta device (shapes only, no
arithmetic, so any size is instant): for a convolution, one MAC per output value per input
channel (of its group) per kernel tap; for a transposed convolution, the same per *input* value.
Element-wise work (activations, additions, pixel shuffle, the bicubic upscale's few taps) is left
out: it is small beside the convolutions and not what separates networks.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from superres.models.reparam import fuse_reparameterizable

#: LR side of the probe image for the per-pixel count: exact whatever the size (a convolution's
#: cost is per output pixel whatever the padding).
PROBE_SIDE = 24


def conv_macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of one call of a Conv2d or ConvTranspose2d from its input and output shapes."""
    kernel_area = module.kernel_size[0] * module.kernel_size[1]
    if isinstance(module, nn.ConvTranspose2d):
        # Every input pixel scatters a kernel into every output channel of its group.
        return inputs.numel() * (module.out_channels // module.groups) * kernel_area
    return output.numel() * (module.in_channels // module.groups) * kernel_area


def count_conv_macs(
    model: nn.Module, input_shape: Iterable[int], *, training: bool = False, meta: bool = True
) -> tuple[int, tuple[int, ...]]:
    """(MACs, output shape) of one call of `model` on an input of `input_shape`.

    `meta`: run on the meta device (any size is instant, but torch's first meta call of a kind
    costs some 0.1 s); False runs a real CPU forward, faster for a small probe.

    With `training`, adds the backward pass: weight gradients of every layer and input gradients
    of every layer whose input needs one (not the first layer after the upscale). Training runs
    the folded convolutions too (online folding: the branches fold only their small weights).
    """
    device = "meta" if meta else "cpu"
    meta_model = fuse_reparameterizable(copy.deepcopy(model).to(device).float())
    meta_model.train(training)
    total = 0

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        passes = 1
        if training:
            passes += int(module.weight.requires_grad) + int(args[0].requires_grad)
        total += conv_macs(module, args[0], output) * passes

    handles = [
        module.register_forward_hook(hook)
        for module in meta_model.modules()
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    try:
        with torch.set_grad_enabled(training):
            output = meta_model(torch.rand(*input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total, tuple(output.shape)


def count_conv_flops(model: nn.Module, input_shape: Iterable[int], *, training: bool = False) -> int:
    """FLOPs (2 per multiply-accumulate) of the conv and transposed-conv layers for one call."""
    return 2 * count_conv_macs(model, input_shape, training=training)[0]


def conv_macs_per_output_pixel(model: nn.Module) -> float:
    """MACs of `model`'s convolutions per SR pixel (per image channel set), inference form."""
    channels = 1 if model.info.channels_for(getattr(model, "model_kwargs", {})) == "Y" else 3
    # A real forward of a small probe: quicker than the meta device's first calls (`superres models`).
    probe = (1, channels, PROBE_SIDE, PROBE_SIDE)
    macs, output_shape = count_conv_macs(model.eval(), probe, meta=False)
    return macs / (output_shape[-2] * output_shape[-1])
