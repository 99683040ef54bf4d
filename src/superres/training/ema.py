"""An exponential moving average (EMA) of a model's weights, for validation and release.

Averaging the weights over the last few thousand steps removes most of the noise that Adam's
steps leave in them: the averaged model scores higher than the raw one at any point of a run, and
most of all early and at a high learning rate, which is where short CPU runs spend their time.
The trainer validates the average, saves it as best.safetensors and keeps it in
last.safetensors (as `ema.` tensors) so that a resumed run continues the same average.

The decay warms up as `min(decay, (1 + updates) / (10 + updates))`, so that the first updates do
not drag the average back towards the random initial weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

#: Prefix of the averaged tensors among a checkpoint's extra tensors.
EMA_PREFIX = "ema."


class WeightAverage:
    """Keeps `average`, a frozen copy of `model` whose parameters trail the model's."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.average = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the average towards `model` after optimizer step `step` (1-based)."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        averaged = list(self.average.parameters())
        current = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(averaged, current, 1.0 - decay)
        # Buffers (batch-norm statistics) are copied, not averaged: they are estimates already.
        for mine, theirs in zip(self.average.buffers(), model.buffers()):
            mine.copy_(theirs)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The averaged state dict, keyed with `EMA_PREFIX`, for a checkpoint's extra tensors."""
        return {EMA_PREFIX + name: tensor for name, tensor in self.average.state_dict().items()}

    def load_state_tensors(self, extra: dict[str, torch.Tensor], model: nn.Module) -> bool:
        """Restore the average from checkpoint tensors; without them, restart it from `model`.

        Returns whether saved averages were found (a run started before the EMA was switched on
        has none).
        """
        saved = averaged_state(extra)
        source = saved if saved else model.state_dict()
        self.average.load_state_dict(source, strict=True)
        return bool(saved)


def averaged_state(extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The averaged state dict among a checkpoint's extra tensors (empty when it has none)."""
    return {name[len(EMA_PREFIX):]: t for name, t in extra.items() if name.startswith(EMA_PREFIX)}
