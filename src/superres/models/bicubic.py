"""`bicubic`: the parameter-free baseline, MATLAB's bicubic `imresize` as a model.

Every super-resolution paper reports bicubic interpolation as its floor. Wrapping it in the model
contract lets the evaluator, the upscaler and the benchmarks treat it like any trained network.
It has no weights, works on any number of channels and is not clipped (the callers clip).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from superres.models.blocks import ModelInfo, pre_upsampled_activations, pre_upsampled_receptive_field
from superres.ops.resize import imresize_tensor


def _receptive_field(scale: int, kwargs: Mapping[str, Any]) -> int:
    # No convolutions after the upscale: only the bicubic taps.
    return pre_upsampled_receptive_field(scale, conv_radius=0, upsample_kernel="bicubic")


BICUBIC_INFO = ModelInfo(
    name="bicubic",
    channels="RGB",  # any channel count works; RGB is what the upscaler feeds it
    scales=(2, 3, 4, 5, 6, 7, 8),
    pre_upsample=True,
    degradation="bicubic",
    paper="Keys, 'Cubic convolution interpolation for digital image processing', IEEE TASSP 1981 "
    "(as implemented by MATLAB imresize)",
    deviations="None: this is MATLAB's imresize bicubic (a = -0.5, edge pixels replicated).",
    default_kwargs={},
    receptive_field_function=_receptive_field,
    # At most RGB(A) images pass through it: four channels, the upscale's two passes.
    activation_function=lambda scale, kwargs: pre_upsampled_activations(scale, widest=4),
    needs_weights=False,
)


class Bicubic(nn.Module):
    """LR (N, C, h, w) -> SR (N, C, scale*h, scale*w) by MATLAB bicubic interpolation."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = BICUBIC_INFO.check_scale(scale)
        self.info = BICUBIC_INFO
        self.model_kwargs: dict[str, Any] = {}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        # (N, C, h, w) -> (N, C, scale*h, scale*w)
        return imresize_tensor(lr, self.scale)
