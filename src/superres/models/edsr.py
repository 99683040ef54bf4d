"""`edsr`: Enhanced Deep Super-Resolution network (EDSR), residual blocks without batch norm.

Paper: Lim, Son, Kim, Nah, Lee, "Enhanced Deep Residual Networks for Single Image
Super-Resolution", CVPRW 2017. A 3x3 head convolution, `num_blocks` residual blocks
(conv-ReLU-conv, scaled by `res_scale`, added to the input; no batch norm), a 3x3 convolution and a
long skip from the head, then a pixel-shuffle upsampler (x4 as two x2 steps) and a 3x3 tail
convolution. The input is centred on the DIV2K mean colour and the mean added back at the end.
EDSR-baseline is 16 blocks of 64 features, res_scale 1 (1.37 M parameters at x2, 1.52 M at x4);
the large EDSR is 32 blocks of 256 features with res_scale 0.1.

Differences from the paper (also in `EDSR_INFO.deviations`): `channels="Y"` is available besides
the paper's RGB; trained on the 291 images rather than DIV2K.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from superres.errors import ModelError
from superres.models.blocks import (
    ModelInfo,
    PixelShuffleUpsampler,
    check_channels,
    mean_buffer,
    pixel_shuffle_steps,
    require_positive_int,
    residual_body_activations,
)


def _receptive_field(scale: int, kwargs: Mapping[str, Any]) -> int:
    num_blocks = require_positive_int("edsr", "num_blocks", kwargs["num_blocks"])
    # head, two per block, body conv, upsampler, tail (the tail runs at HR: at most one LR px)
    return 1 + 2 * num_blocks + 1 + len(pixel_shuffle_steps(scale)) + 1


def _activations(scale: int, kwargs: Mapping[str, Any]) -> float:
    return residual_body_activations(scale, kwargs["num_features"])


EDSR_INFO = ModelInfo(
    name="edsr",
    channels="RGB",
    scales=(2, 3, 4),
    pre_upsample=False,
    degradation="bicubic",
    paper="Lim, Son, Kim, Nah, Lee, 'Enhanced Deep Residual Networks for Single Image "
    "Super-Resolution', CVPRW 2017 (defaults: EDSR-baseline)",
    deviations="channels='Y' is offered besides the paper's RGB; trained on the 291 images "
    "rather than DIV2K.",
    default_kwargs={"num_blocks": 16, "num_features": 64, "res_scale": 1.0, "channels": "RGB"},
    receptive_field_function=_receptive_field,
    activation_function=_activations,
    test_kwargs={"num_blocks": 2, "num_features": 8, "res_scale": 1.0, "channels": "RGB"},
)


class ResidualBlock(nn.Module):
    """conv-ReLU-conv, scaled, plus the input: (N, F, h, w) -> (N, F, h, w)."""

    def __init__(self, num_features: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.conv2 = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x))) * self.res_scale


class EDSR(nn.Module):
    """EDSR: LR (N, C, h, w) -> SR (N, C, scale*h, scale*w), C = 3 (RGB) or 1 (Y)."""

    info: ModelInfo = EDSR_INFO

    def __init__(
        self,
        scale: int,
        *,
        num_blocks: int = 16,
        num_features: int = 64,
        res_scale: float = 1.0,
        channels: str = "RGB",
    ) -> None:
        super().__init__()
        name = self.info.name
        self.scale = self.info.check_scale(scale)
        depth = require_positive_int(name, "num_blocks", num_blocks)
        width = require_positive_int(name, "num_features", num_features)
        if isinstance(res_scale, bool) or not isinstance(res_scale, (int, float)) or not 0 < res_scale <= 1:
            raise ModelError(f"model '{name}': res_scale must be a number in (0, 1], got {res_scale!r}")
        image_channels = check_channels(name, channels)
        self.model_kwargs: dict[str, Any] = {
            "num_blocks": depth, "num_features": width, "res_scale": float(res_scale), "channels": channels,
        }
        self.register_buffer("mean", mean_buffer(image_channels), persistent=False)
        self.head = nn.Conv2d(image_channels, width, 3, padding=1)
        self.body = nn.Sequential(*(ResidualBlock(width, float(res_scale)) for _ in range(depth)))
        self.body_end = nn.Conv2d(width, width, 3, padding=1)
        self.upsample = PixelShuffleUpsampler(width, self.scale)
        self.tail = nn.Conv2d(width, image_channels, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        head = self.head(lr - self.mean)  # (N, F, h, w)
        x = self.body_end(self.body(head)) + head  # (N, F, h, w)
        return self.tail(self.upsample(x)) + self.mean  # (N, C, scale*h, scale*w)
