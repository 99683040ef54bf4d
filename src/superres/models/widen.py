"""Widening a trained SPAN: more features per layer, exactly the same output at the start.

A network that has stopped improving on its data can be given more capacity without starting
over (Chen, Goodfellow, Shlens, "Net2Net", ICLR 2016, function-preserving growth). `widen_span`
builds a SPAN with `num_features` > the trained one's and copies every trained weight into it.
The new feature channels get PyTorch's fresh initialisation on their *inputs* and zero weight on
their way *into* the old channels, so the old channels compute exactly what they did (the
attention, SiLU and additions are per channel, and the merge and upsampler read new channels
through zero weights): the widened network's output equals the trained one's. Training then
grows the zero weights from the new channels' (non-zero) activations; had the new channels'
inputs been zero too, their gradients would be zero and they would never wake up.

Only the inference form is widened: a source with re-parameterisable branches is folded first,
and the result trains plain 3x3 convolutions (`reparam_gain=0`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from superres.errors import ModelError
from superres.models.reparam import fuse_reparameterizable

#: The merge convolution reads four feature maps stacked along channels (see `SPAN.forward`).
MERGED_MAPS = 4


def widen_span(model: nn.Module, num_features: int, seed: int = 0) -> nn.Module:
    """A SPAN `num_features` wide whose output equals `model`'s; `model` is left unchanged."""
    # SPAN's own hook (`SPAN_INFO.widen`): the layout below is SPAN's.
    if model.info.name != "span":
        raise ModelError(f"widening works on span networks, not {type(model).__name__}")
    old_width = model.model_kwargs["num_features"]
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= old_width:
        raise ModelError(f"span: the widened network needs more than {old_width} features, got {num_features!r}")
    source = fuse_reparameterizable(copy.deepcopy(model)).float().cpu()
    kwargs = {**model.model_kwargs, "num_features": num_features, "reparam_gain": 0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        widened = type(model)(model.scale, **kwargs)
    old_convs = dict(_convolutions(source))
    with torch.no_grad():
        for name, conv in _convolutions(widened):
            _copy_trained_weights(conv, old_convs[name], _input_map(name, old_convs[name], num_features))
    return widened.eval()


def _convolutions(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _input_map(name: str, old: nn.Conv2d, new_width: int) -> torch.Tensor:
    """Where each of the trained convolution's input channels sits in the widened one."""
    if name != "merge":
        return torch.arange(old.in_channels)
    old_width = old.in_channels // MERGED_MAPS
    return torch.cat([part * new_width + torch.arange(old_width) for part in range(MERGED_MAPS)])


def _copy_trained_weights(new: nn.Conv2d, old: nn.Conv2d, input_map: torch.Tensor) -> None:
    """Trained outputs come first and read nothing from new inputs; new outputs keep their init."""
    trained = torch.arange(old.out_channels)
    new.weight[trained] = 0.0
    new.weight[trained[:, None], input_map[None, :]] = old.weight
    new.bias[trained] = old.bias
