"""`span`: the Swift Parameter-free Attention Network, re-parameterisable, on the LR image.

Paper: Wan, Yu, Li, Liu, Yin, Wang, Wang, Hu, Ma, "Swift Parameter-free Attention Network for
Efficient Super-Resolution", CVPRW 2024 (winner of the NTIRE 2024 efficient SR challenge's
overall track). Every convolution is a `RepConv3x3` (SPAN's Conv3XC): 1x1 expansion, 3x3 at twice
the width, 1x1 reduction and a 1x1 shortcut while training, one plain 3x3 afterwards. Each block
(SPAB) is three such convolutions with SiLU after the first two and a parameter-free attention
at the end: `out = (c3 + x) * (sigmoid(c3) - 0.5)`. The network: a first convolution, `num_blocks`
blocks, a convolution after the last block, a 1x1 fusion of four feature maps (the first
convolution's, the last block's after its convolution, the first block's and the last block's
first inner convolution), and a 3x3 convolution + pixel shuffle to the HR image.

As in the paper, the centred input is multiplied by 255 (`IMAGE_RANGE`): the features are then
large enough for the attention's sigmoid to work as a gate (near +-0.5) rather than in its linear
range around 0, where it squares small features and starves the deep blocks of gradient (on this
CPU, 300 steps reached an L1 loss of 0.0198 with the range against 0.0210 without). The
upsampler's output is divided by the same factor.

Differences from the paper (also in `SPAN_INFO.deviations`): Y channel by default (`channels`
"RGB" is the paper's); the upsampler starts near zero so that an untrained network gives its
skip (bicubic or the mean); the expansion 1x1 has no bias (it would only differ at the zero padding, where it would make the
re-parameterisation inexact); `bicubic_skip` (on by default) adds the bicubic upscale of the input
so that the network learns a residual, which trains faster on a CPU; `reparam_gain=0` trains plain
3x3 convolutions without the branches (the same inference network; it used to cost a quarter of
the branches' training time, which online folding, `superres.models.reparam`, now mostly saves); the
merge takes the last block's first inner convolution before its SiLU, where the released code's
in-place SiLU hands it over after (up to 1.8e-4 apart, so released SPAN weights are read through
spandrel, not loaded into this class). `num_blocks` and `num_features` are free (the paper: 6 and 48).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from superres.models.blocks import (
    IMAGE_RANGE,
    ModelInfo,
    check_channels,
    mean_buffer,
    post_upsampled_receptive_field,
    require_bool,
    require_positive_int,
)
from superres.models.colour import span_y_to_rgb
from superres.models.reparam import RepConv3x3, require_gain
from superres.models.widen import widen_span
from superres.ops.resize import imresize_tensor

#: Factor on the upsampler's default initialisation: small, so training starts at the skip.
UPSAMPLER_INIT_SCALE = 0.01

def _receptive_field(scale: int, kwargs: Mapping[str, Any]) -> int:
    num_blocks = require_positive_int("span", "num_blocks", kwargs["num_blocks"])
    body = 1 + 3 * num_blocks + 1 + 1  # first conv, three per block, last conv, upsampler conv
    return post_upsampled_receptive_field(body, bool(kwargs["bicubic_skip"]))


def _activations(scale: int, kwargs: Mapping[str, Any]) -> float:
    # The four kept maps and their concatenation, a block's three, and the upsampler's output.
    return 11.0 * kwargs["num_features"] + 3 * scale * scale * 3


SPAN_INFO = ModelInfo(
    name="span",
    channels="Y",
    scales=(2, 3, 4),
    pre_upsample=False,
    degradation="bicubic",
    paper="Wan et al., 'Swift Parameter-free Attention Network for Efficient Super-Resolution', "
    "CVPRW 2024 (NTIRE 2024 efficient SR winner)",
    deviations="Y channel by default (the paper: RGB); the upsampler starts near zero (an untrained "
    "network gives its skip); the 1x1 expansion of each re-parameterisable conv has no bias, so that folding is "
    "exact at the zero-padded border; a bicubic skip (bicubic_skip, on by default) makes the "
    "network learn a residual over bicubic; reparam_gain=0 trains plain 3x3 convs instead of the "
    "branches; the merge reads the last block's first inner convolution before its SiLU (the "
    "released code's in-place SiLU hands it over after, so its weights do not load here unchanged). "
    "Trained on the 291 images rather than DIV2K + LSDIR.",
    default_kwargs={
        "num_features": 48, "num_blocks": 6, "reparam_gain": 2, "bicubic_skip": True, "channels": "Y",
    },
    receptive_field_function=_receptive_field,
    activation_function=_activations,
    test_kwargs={"num_features": 8, "num_blocks": 2, "reparam_gain": 2, "bicubic_skip": True, "channels": "Y"},
    widen=widen_span,
    to_rgb=span_y_to_rgb,
)


class SPAB(nn.Module):
    """One attention block: (N, F, h, w) -> (out, first inner map), both (N, F, h, w)."""

    def __init__(self, num_features: int, gain: int) -> None:
        super().__init__()
        self.c1 = RepConv3x3(num_features, num_features, gain=gain)
        self.c2 = RepConv3x3(num_features, num_features, gain=gain)
        self.c3 = RepConv3x3(num_features, num_features, gain=gain)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inner = self.c1(x)
        out = self.c3(F.silu(self.c2(F.silu(inner))))
        attention = torch.sigmoid(out) - 0.5  # parameter-free, symmetric around zero
        return (out + x) * attention, inner


class SPAN(nn.Module):
    """SPAN: LR (N, C, h, w) -> SR (N, C, scale*h, scale*w), C = 1 (Y) or 3 (RGB)."""

    info: ModelInfo = SPAN_INFO

    def __init__(
        self,
        scale: int,
        *,
        num_features: int = 48,
        num_blocks: int = 6,
        reparam_gain: int = 2,
        bicubic_skip: bool = True,
        channels: str = "Y",
    ) -> None:
        super().__init__()
        name = self.info.name
        self.scale = self.info.check_scale(scale)
        width = require_positive_int(name, "num_features", num_features)
        depth = require_positive_int(name, "num_blocks", num_blocks)
        reparam_gain = require_gain(name, reparam_gain)
        image_channels = check_channels(name, channels)
        self.bicubic_skip = require_bool(self.info.name, "bicubic_skip", bicubic_skip)
        self.model_kwargs: dict[str, Any] = {
            "num_features": width, "num_blocks": depth, "reparam_gain": reparam_gain,
            "bicubic_skip": self.bicubic_skip, "channels": channels,
        }
        self.register_buffer("mean", mean_buffer(image_channels), persistent=False)
        self.first = RepConv3x3(image_channels, width, gain=reparam_gain)
        self.blocks = nn.ModuleList(SPAB(width, reparam_gain) for _ in range(depth))
        self.last = RepConv3x3(width, width, gain=reparam_gain)
        self.merge = nn.Conv2d(4 * width, width, 1)
        self.upsample = nn.Sequential(
            nn.Conv2d(width, image_channels * self.scale * self.scale, 3, padding=1),
            nn.PixelShuffle(self.scale),
        )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """PyTorch's default init everywhere; the upsampler's conv scaled down, bias zero."""
        self.upsample[0].weight.mul_(UPSAMPLER_INIT_SCALE)
        self.upsample[0].bias.zero_()

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        features = self.first((lr - self.mean) * IMAGE_RANGE)  # (N, F, h, w)
        x, first_block_out, last_inner = features, None, None
        for block in self.blocks:
            x, last_inner = block(x)
            if first_block_out is None:
                first_block_out = x
        x = self.last(x)
        x = self.merge(torch.cat([features, x, first_block_out, last_inner], dim=1))  # (N, F, h, w)
        sr = self.upsample(x) / IMAGE_RANGE  # (N, C, scale*h, scale*w)
        if self.bicubic_skip:
            return sr + imresize_tensor(lr, self.scale)
        return sr + self.mean
