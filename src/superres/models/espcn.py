"""`espcn`: the Efficient Sub-Pixel Convolutional Network, which works on the LR image.

Paper: Shi, Caballero, Huszar, Totz, Aitken, Bishop, Wang, "Real-Time Single Image and Video
Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016. Three
convolutions at LR resolution (5x5 to 64, 3x3 to 32, 3x3 to scale**2 channels), tanh after the
first two, and a pixel shuffle (the sub-pixel convolution layer) that rearranges the last layer's
scale**2 channels into the HR image. Y channel.

Differences from the paper (also in `ESPCN_INFO.deviations`): 'same' zero padding so that the
output is exactly `scale` times the input; `bicubic_skip=True` optionally adds the bicubic upscale
of the input (off by default, as in the paper); Xavier init for the tanh layers. `reparam_gain` > 0
trains the three convolutions with re-parameterisable branches (`superres.models.reparam`); the
network ships as the plain one they fold into (`reparam_gain=0`, the default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from superres.models.blocks import (
    ModelInfo,
    post_upsampled_receptive_field,
    require_bool,
    require_int_sequence,
)
from superres.models.reparam import conv_or_rep, require_gain
from superres.ops.resize import imresize_tensor


def _receptive_field(scale: int, kwargs: Mapping[str, Any]) -> int:
    return post_upsampled_receptive_field(2 + 1 + 1, bool(kwargs["bicubic_skip"]))


def _activations(scale: int, kwargs: Mapping[str, Any]) -> float:
    return 4.0 * max(kwargs["num_features"]) + 2 * scale * scale


ESPCN_INFO = ModelInfo(
    name="espcn",
    channels="Y",
    scales=(2, 3, 4),
    pre_upsample=False,
    degradation="bicubic",
    paper="Shi et al., 'Real-Time Single Image and Video Super-Resolution Using an Efficient "
    "Sub-Pixel Convolutional Neural Network', CVPR 2016",
    deviations="'Same' zero padding so the output is exactly scale times the input; optional "
    "bicubic_skip (off by default) adds the bicubic upscale of the input; Xavier init for the tanh "
    "layers. Trained on the 291 images rather than ImageNet.",
    default_kwargs={"num_features": (64, 32), "bicubic_skip": False, "reparam_gain": 0},
    receptive_field_function=_receptive_field,
    activation_function=_activations,
    test_kwargs={"num_features": (8, 4), "bicubic_skip": True, "reparam_gain": 1},
)


class ESPCN(nn.Module):
    """ESPCN on Y: LR (N, 1, h, w) -> SR (N, 1, scale*h, scale*w)."""

    info: ModelInfo = ESPCN_INFO

    def __init__(
        self,
        scale: int,
        *,
        num_features: tuple[int, int] = (64, 32),
        bicubic_skip: bool = False,
        reparam_gain: int = 0,
    ) -> None:
        super().__init__()
        self.scale = self.info.check_scale(scale)
        first, second = require_int_sequence(self.info.name, "num_features", num_features, length=2)
        self.bicubic_skip = require_bool(self.info.name, "bicubic_skip", bicubic_skip)
        gain = require_gain(self.info.name, reparam_gain)
        self.model_kwargs: dict[str, Any] = {
            "num_features": (first, second), "bicubic_skip": self.bicubic_skip, "reparam_gain": gain,
        }
        self.layers = nn.ModuleList([
            conv_or_rep(1, first, 5, gain),
            conv_or_rep(first, second, 3, gain),
            conv_or_rep(second, self.scale * self.scale, 3, gain),
        ])
        self.shuffle = nn.PixelShuffle(self.scale)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():  # the plain convolutions, or every branch of them
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight, gain=nn.init.calculate_gain("tanh"))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        last = self.layers[-1]
        for conv in [last] if isinstance(last, nn.Conv2d) else [last.reduce, last.shortcut]:
            nn.init.normal_(conv.weight, std=1e-3)  # the output starts near zero (or at the skip)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.layers[0](lr))  # (N, 64, h, w)
        x = torch.tanh(self.layers[1](x))  # (N, 32, h, w)
        sr = self.shuffle(self.layers[2](x))  # (N, scale**2, h, w) -> (N, 1, scale*h, scale*w)
        return sr + imresize_tensor(lr, self.scale) if self.bicubic_skip else sr
