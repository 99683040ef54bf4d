"""How much work a network does: multiply-accumulates (MACs) per output pixel, counted exactly.

Counted on the network as it runs for inference (re-parameterisable branches folded, eval mode),
by forward hooks on every convolution and transposed convolution: for a convolution, one MAC per
output value per input channel (of its group) per kernel tap; for a transposed convolution, the
same per *input* value. Element-wise work (activations, additions, pixel shuffle, the bicubic
upscale's few taps) is left out: it is small beside the convolutions and not what separates
networks. The count divided by the SR pixels gives a machine-independent cost that `superres
models`, the frontier and the "fast" model choice compare.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from superres.models.reparam import fuse_reparameterizable

#: LR side of the probe image: large enough that border effects on the count are nil (exact for
#: convolutions, whose cost is per output pixel whatever the padding).
PROBE_SIDE = 24


def conv_macs_per_output_pixel(model: nn.Module) -> float:
    """MACs of `model`'s convolutions per SR pixel (per image channel set), inference form."""
    network = fuse_reparameterizable(copy.deepcopy(model)).eval().cpu().float()
    info = network.info
    channels = 1 if info.channels_for(getattr(network, "model_kwargs", {})) == "Y" else 3
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        taps = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):
            per_input = module.out_channels // module.groups * taps
            total += inputs[0].numel() * per_input
        else:
            total += output.numel() * (module.in_channels // module.groups) * taps

    hooks = [
        module.register_forward_hook(count)
        for module in network.modules()
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    try:
        with torch.no_grad():
            sr = network(torch.rand(1, channels, PROBE_SIDE, PROBE_SIDE))
    finally:
        for hook in hooks:
            hook.remove()
    return total / (sr.shape[-2] * sr.shape[-1])
