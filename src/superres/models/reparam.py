"""Re-parameterisable convolutions: several branches while training, one plain conv afterwards.

`RepConv3x3` is SPAN's `Conv3XC` (Wan et al., NTIRE 2024 efficient SR winner): a 3x3 convolution
whose training form is a 1x1 expansion, a 3x3 convolution at `gain` times the width, a 1x1
reduction, plus a parallel 1x1 shortcut. All of it is linear, so it folds exactly into one 3x3
convolution for inference (`fuse()`), export and the fast CPU path. `gain=0` trains the plain 3x3
directly (no branches): the same inference network for a fraction of the training cost.

Exactness at the border: the expansion has no bias (it would be redundant anywhere but the zero
padding, where it would make the branches differ from one padded 3x3 convolution), and the zero
padding is applied after the expansion, so the folded conv equals the branches everywhere.

`fuse_reparameterizable(model)` folds every such block of a model in place.
"""

from __future__ import annotations

import torch
from torch import nn


class RepConv3x3(nn.Module):
    """(N, in, h, w) -> (N, out, h, w): a 3x3 'same' convolution with training-time branches."""

    def __init__(self, in_channels: int, out_channels: int, *, gain: int = 2) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.gain = in_channels, out_channels, gain
        self.fused: nn.Conv2d | None = None
        if gain == 0:
            self.fused = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            return
        mid_in, mid_out = in_channels * gain, out_channels * gain
        self.expand = nn.Conv2d(in_channels, mid_in, 1, bias=False)
        self.body = nn.Conv2d(mid_in, mid_out, 3, padding=1)
        self.reduce = nn.Conv2d(mid_out, out_channels, 1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    @property
    def is_fused(self) -> bool:
        return self.fused is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        return self.reduce(self.body(self.expand(x))) + self.shortcut(x)

    @torch.no_grad()
    def fused_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (out, in, 3, 3), bias (out,)) of the single convolution the branches equal."""
        if self.fused is not None:
            return self.fused.weight.detach().clone(), self.fused.bias.detach().clone()
        expand = self.expand.weight[:, :, 0, 0]  # (mid_in, in)
        reduce = self.reduce.weight[:, :, 0, 0]  # (out, mid_out)
        # reduce . body . expand, tap by tap: (out, mid_out) x (mid_out, mid_in, 3, 3) x (mid_in, in)
        weight = torch.einsum("om,mnyx,ni->oiyx", reduce, self.body.weight, expand)
        bias = reduce @ self.body.bias + self.reduce.bias
        # The 1x1 shortcut is the centre tap of a 3x3 kernel.
        weight[:, :, 1, 1] += self.shortcut.weight[:, :, 0, 0]
        bias = bias + self.shortcut.bias
        return weight, bias

    @torch.no_grad()
    def fuse(self) -> None:
        """Replace the branches by the one 3x3 convolution they equal (in place, irreversible)."""
        if self.fused is not None:
            return
        weight, bias = self.fused_weights()
        fused = nn.Conv2d(self.in_channels, self.out_channels, 3, padding=1)
        fused = fused.to(device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        for name in ("expand", "body", "reduce", "shortcut"):
            delattr(self, name)
        self.fused = fused


def fuse_reparameterizable(model: nn.Module) -> nn.Module:
    """Fold every re-parameterisable block of `model` in place; returns `model`."""
    for module in model.modules():
        if isinstance(module, RepConv3x3):
            module.fuse()
    return model


def has_branches(model: nn.Module) -> bool:
    """Whether `model` still holds training-time branches that `fuse_reparameterizable` would fold."""
    return any(isinstance(m, RepConv3x3) and not m.is_fused for m in model.modules())

