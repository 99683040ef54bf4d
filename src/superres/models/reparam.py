"""Re-parameterisable convolutions: several branches while training, one plain conv afterwards.

`RepConv` is SPAN's `Conv3XC` (Wan et al., NTIRE 2024 efficient SR winner) for any odd kernel: a
k x k convolution whose training form is a 1x1 expansion, a k x k convolution at `gain` times the
width, a 1x1 reduction, plus a parallel 1x1 shortcut. All of it is linear, so it folds exactly into
one k x k convolution for inference (`fuse()`), export and the fast CPU path, and training folds
it too on every call (see `forward`), so a step costs about what the plain convolution's does.
`gain=0` trains the plain convolution directly (no branches). `RepConv3x3` is the 3x3 one SPAN is
built of.

The branches change how training moves through the same set of functions, not the set: networks
as small as FSRCNN and ESPCN train their convolutions this way with `reparam_gain` and ship plain
(`without_branches`). `start_from_plain` gives a branched network exactly a trained plain one's
output, so a converged plain network can continue with branches.

Exactness at the border: the expansion has no bias (it would be redundant anywhere but the zero
padding, where it would make the branches differ from one padded 3x3 convolution), and the zero
padding is applied after the expansion, so the folded conv equals the branches everywhere.

`fuse_reparameterizable(model)` folds every such block of a model in place.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from superres.errors import ModelError

#: Branch widths a network may train with: 0 is no branches.
GAINS = (0, 1, 2, 3, 4)


def require_gain(model_name: str, value: Any) -> int:
    """`value` as a `reparam_gain`, or a one-line ModelError."""
    if isinstance(value, bool) or value not in GAINS:
        raise ModelError(f"model '{model_name}': reparam_gain must be 0 (no branches) to {GAINS[-1]}, got {value!r}")
    return int(value)


class RepConv(nn.Module):
    """(N, in, h, w) -> (N, out, h, w): a k x k 'same' convolution with training-time branches."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, gain: int = 2) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"RepConv needs an odd kernel size, got {kernel_size}")
        self.in_channels, self.out_channels, self.gain = in_channels, out_channels, gain
        self.kernel_size = kernel_size
        self.fused: nn.Conv2d | None = None
        if gain == 0:
            self.fused = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
            return
        mid_in, mid_out = in_channels * gain, out_channels * gain
        self.expand = nn.Conv2d(in_channels, mid_in, 1, bias=False)
        self.body = nn.Conv2d(mid_in, mid_out, kernel_size, padding=kernel_size // 2)
        self.reduce = nn.Conv2d(mid_out, out_channels, 1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)

    @property
    def is_fused(self) -> bool:
        return self.fused is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        # The branches are linear, so running the one kernel they fold into is the same function
        # with the same gradients for every branch weight (Hu et al., "Online Convolutional
        # Re-parameterization", CVPR 2022), at the cost of the plain convolution: folding the
        # small weight tensors each step is far cheaper than convolving at `gain` times the width.
        weight, bias = self._folded()
        return F.conv2d(x, weight, bias, padding=self.kernel_size // 2)

    def _folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (out, in, k, k), bias (out,)) the branches equal, differentiable in every branch."""
        expand = self.expand.weight[:, :, 0, 0]  # (mid_in, in)
        reduce = self.reduce.weight[:, :, 0, 0]  # (out, mid_out)
        # reduce . body . expand, tap by tap: (out, mid_out) x (mid_out, mid_in, k, k) x (mid_in, in)
        weight = torch.einsum("om,mnyx,ni->oiyx", reduce, self.body.weight, expand)
        # The 1x1 shortcut is the centre tap of the k x k kernel.
        centre = self.kernel_size // 2
        weight = weight + F.pad(self.shortcut.weight, (centre, centre, centre, centre))
        return weight, reduce @ self.body.bias + self.reduce.bias + self.shortcut.bias

    @torch.no_grad()
    def fused_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (out, in, k, k), bias (out,)) of the single convolution the branches equal."""
        if self.fused is not None:
            return self.fused.weight.detach().clone(), self.fused.bias.detach().clone()
        return self._folded()

    @torch.no_grad()
    def fuse(self) -> None:
        """Replace the branches by the one convolution they equal (in place, irreversible)."""
        if self.fused is not None:
            return
        weight, bias = self.fused_weights()
        k = self.kernel_size
        fused = nn.Conv2d(self.in_channels, self.out_channels, k, padding=k // 2)
        fused = fused.to(device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
        for name in ("expand", "body", "reduce", "shortcut"):
            delattr(self, name)
        self.fused = fused

    @torch.no_grad()
    def start_from_plain(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Set the branches so that they equal the plain convolution (`weight`, `bias`).

        The first `out` channels of the expanded body carry the trained kernel from the first
        `in` expanded channels (an identity expansion), and the reduction reads only them. The
        other body weights and expansions keep their random initialisation and meet zero weights
        on the way out (the rest of the reduction, the trained rows' other inputs, the shortcut),
        so the output is exact and those zeros have non-zero gradients to grow from (Net2Net).
        """
        if self.fused is not None:
            self.fused.weight.copy_(weight)
            self.fused.bias.copy_(bias)
            return
        trained_in, trained_out = torch.arange(self.in_channels), torch.arange(self.out_channels)
        self.expand.weight[trained_in] = 0.0
        self.expand.weight[trained_in, trained_in] = 1.0
        self.body.weight[trained_out] = 0.0
        self.body.weight[trained_out[:, None], trained_in[None, :]] = weight
        self.body.bias.zero_()
        self.body.bias[trained_out] = bias
        self.reduce.weight.zero_()
        self.reduce.weight[trained_out, trained_out] = 1.0
        self.reduce.bias.zero_()
        self.shortcut.weight.zero_()
        self.shortcut.bias.zero_()


class RepConv3x3(RepConv):
    """SPAN's `Conv3XC`: a `RepConv` with a 3x3 kernel."""

    def __init__(self, in_channels: int, out_channels: int, *, gain: int = 2) -> None:
        super().__init__(in_channels, out_channels, 3, gain=gain)


def conv_or_rep(in_channels: int, out_channels: int, kernel_size: int, gain: int) -> nn.Module:
    """A plain 'same' convolution for `gain=0` (its parameter names stay `weight`, `bias`), else
    a `RepConv` that folds into one."""
    if gain == 0:
        return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return RepConv(in_channels, out_channels, kernel_size, gain=gain)


def _plain_conv(module: nn.Module) -> nn.Conv2d:
    """The convolution holding a plain network's weights where a branched one has `module`."""
    if isinstance(module, RepConv):
        if module.fused is None:
            raise ModelError("expected a network without branches")
        return module.fused
    if not isinstance(module, nn.Conv2d):
        raise ModelError(f"expected a convolution, found {type(module).__name__}")
    return module


@torch.no_grad()
def copy_between_forms(source: nn.Module, target: nn.Module) -> None:
    """Copy `source`'s weights into `target`, the same network with or without branches.

    Branched to plain: each `RepConv` gives its folded kernel. Plain to branched: each `RepConv`
    starts from the plain kernel (`start_from_plain`). Every other parameter and buffer is copied
    by name; both networks compute the same function afterwards.
    """
    source_reps = {name: m for name, m in source.named_modules() if isinstance(m, RepConv) and not m.is_fused}
    target_reps = {name: m for name, m in target.named_modules() if isinstance(m, RepConv) and not m.is_fused}
    if source_reps and target_reps:
        raise ModelError("one of the two networks must be without branches")
    for name, rep in source_reps.items():
        weight, bias = rep.fused_weights()
        conv = _plain_conv(target.get_submodule(name))
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    for name, rep in target_reps.items():
        conv = _plain_conv(source.get_submodule(name))
        rep.start_from_plain(conv.weight, conv.bias)
    done = tuple(f"{name}." for name in (*source_reps, *target_reps))
    source_state = source.state_dict()
    for key, tensor in target.state_dict().items():
        if key.startswith(done):
            continue
        if key not in source_state or source_state[key].shape != tensor.shape:
            raise ModelError(f"the two networks differ beyond their branches: {key}")
        tensor.copy_(source_state[key])


def without_branches(model: nn.Module) -> nn.Module:
    """The same network built with `reparam_gain=0` and `model`'s folded weights (a new module)."""
    from superres.models import create_model  # the registry imports this module

    plain = create_model(model.info.name, model.scale, **{**model.model_kwargs, "reparam_gain": 0})
    copy_between_forms(model, plain.to(next(model.parameters()).dtype))
    return plain.eval()


def fuse_reparameterizable(model: nn.Module) -> nn.Module:
    """Fold every re-parameterisable block of `model` in place; returns `model`."""
    for module in model.modules():
        if isinstance(module, RepConv):
            module.fuse()
    return model


def has_branches(model: nn.Module) -> bool:
    """Whether `model` still holds training-time branches that `fuse_reparameterizable` would fold."""
    return any(isinstance(m, RepConv) and not m.is_fused for m in model.modules())

