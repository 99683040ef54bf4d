"""`srresnet`: SRResNet, the generator of SRGAN, trained for PSNR.

Paper: Ledig, Theis, Huszar, Caballero, Cunningham, Acosta, Aitken, Tejani, Totz, Wang, Shi,
"Photo-Realistic Single Image Super-Resolution Using a Generative Adversarial Network", CVPR 2017.
A 9x9 head convolution with PReLU, 16 residual blocks (conv-BN-PReLU-conv-BN plus the input),
a 3x3 convolution with BN and a long skip from the head, sub-pixel upsampling steps (3x3 conv to
4x the features, pixel shuffle x2, PReLU; two steps at x4) and a 9x9 tail convolution.
1,549,462 parameters at x4 with batch norm.

Differences from the paper (also in `SRRESNET_INFO.deviations`): `batch_norm=False` removes every
BN layer (as EDSR and later SRGAN ports recommend); x3 uses one x3 sub-pixel step; `channels="Y"`
is offered besides the paper's RGB; the input is centred on the DIV2K mean colour rather than
scaled to [-1, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from superres.models.blocks import (
    ModelInfo,
    PixelShuffleUpsampler,
    check_channels,
    mean_buffer,
    pixel_shuffle_steps,
    require_bool,
    require_positive_int,
    residual_body_activations,
)


def _receptive_field(scale: int, kwargs: Mapping[str, Any]) -> int:
    num_blocks = require_positive_int("srresnet", "num_blocks", kwargs["num_blocks"])
    # 9x9 head, two 3x3 per block, body conv, upsampler, 9x9 tail at HR (ceil(4 / scale) LR px)
    return 4 + 2 * num_blocks + 1 + len(pixel_shuffle_steps(scale)) + 2


def _activations(scale: int, kwargs: Mapping[str, Any]) -> float:
    return residual_body_activations(scale, kwargs["num_features"])


SRRESNET_INFO = ModelInfo(
    name="srresnet",
    channels="RGB",
    scales=(2, 3, 4),
    pre_upsample=False,
    degradation="bicubic",
    paper="Ledig et al., 'Photo-Realistic Single Image Super-Resolution Using a Generative "
    "Adversarial Network', CVPR 2017 (SRResNet, the SRGAN generator)",
    deviations="batch_norm=False removes the BN layers; x3 is one x3 sub-pixel step; "
    "channels='Y' is offered besides the paper's RGB; input centred on the DIV2K mean colour "
    "instead of scaled to [-1, 1]; trained on the 291 images rather than ImageNet.",
    default_kwargs={"num_blocks": 16, "num_features": 64, "batch_norm": True, "channels": "RGB"},
    receptive_field_function=_receptive_field,
    activation_function=_activations,
    test_kwargs={"num_blocks": 2, "num_features": 8, "batch_norm": True, "channels": "RGB"},
)


def _conv_bn(num_features: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(num_features, num_features, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(num_features))
    return nn.Sequential(*layers)


class SRResBlock(nn.Module):
    """conv-BN-PReLU-conv-BN plus the input: (N, F, h, w) -> (N, F, h, w)."""

    def __init__(self, num_features: int, batch_norm: bool) -> None:
        super().__init__()
        self.conv1 = _conv_bn(num_features, batch_norm)
        self.act = nn.PReLU()
        self.conv2 = _conv_bn(num_features, batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class SRResNet(nn.Module):
    """SRResNet: LR (N, C, h, w) -> SR (N, C, scale*h, scale*w)."""

    info: ModelInfo = SRRESNET_INFO

    def __init__(
        self,
        scale: int,
        *,
        num_blocks: int = 16,
        num_features: int = 64,
        batch_norm: bool = True,
        channels: str = "RGB",
    ) -> None:
        super().__init__()
        name = self.info.name
        self.scale = self.info.check_scale(scale)
        depth = require_positive_int(name, "num_blocks", num_blocks)
        width = require_positive_int(name, "num_features", num_features)
        image_channels = check_channels(name, channels)
        batch_norm = require_bool(name, "batch_norm", batch_norm)
        self.model_kwargs: dict[str, Any] = {
            "num_blocks": depth, "num_features": width, "batch_norm": batch_norm, "channels": channels,
        }
        self.register_buffer("mean", mean_buffer(image_channels), persistent=False)
        self.head = nn.Sequential(nn.Conv2d(image_channels, width, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(*(SRResBlock(width, batch_norm) for _ in range(depth)))
        self.body_end = _conv_bn(width, batch_norm)
        self.upsample = PixelShuffleUpsampler(width, self.scale, activation=nn.PReLU)
        self.tail = nn.Conv2d(width, image_channels, 9, padding=4)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        head = self.head(lr - self.mean)  # (N, F, h, w)
        x = self.body_end(self.body(head)) + head  # (N, F, h, w)
        return self.tail(self.upsample(x)) + self.mean  # (N, C, scale*h, scale*w)
