"""Discriminators: an HR-sized image (N, C, H, W) in [0, 1] -> realness logits.

`VGGStyleDiscriminator`: SRGAN's (Ledig et al., CVPR 2017, fig. 4): eight 3x3 convolutions, 64 to
512 features, every second one strided, batch norm after all but the first, LeakyReLU(0.2), then
a dense 1024 layer and a dense logit. The dense head reads a 6x6 adaptive average of the last
features, which is the paper's flattening at its 96-pixel patches and lets other patch sizes
through. Output (N, 1).

`UNetDiscriminator`: Real-ESRGAN's (Wang et al., ICCVW 2021): a U-Net with spectral-normalised
convolutions, three stride-2 steps down and three bilinear steps up with skips, giving a logit
per pixel: (N, 1, H, W). Its skips are resized to the skip's size, so H and W need not divide by 8.

Both offer `forward_with_features`, whose intermediate maps feature matching compares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from superres.errors import ConfigError

#: Side of the pooled grid the VGG-style dense head reads: SRGAN's 96 px patch after four
#: stride-2 steps.
DENSE_GRID = 6


class VGGStyleDiscriminator(nn.Module):
    """SRGAN's discriminator: (N, C, H, W) -> (N, 1) logits."""

    def __init__(self, channels: int = 3, num_features: int = 64) -> None:
        super().__init__()
        widths = [num_features * factor for factor in (1, 1, 2, 2, 4, 4, 8, 8)]
        layers: list[nn.Module] = []
        in_channels = channels
        for index, width in enumerate(widths):
            stride = 2 if index % 2 == 1 else 1
            block: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, stride=stride, padding=1)]
            if index > 0:
                block.append(nn.BatchNorm2d(width))
            block.append(nn.LeakyReLU(0.2))
            layers.append(nn.Sequential(*block))
            in_channels = width
        self.features = nn.ModuleList(layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(DENSE_GRID),
            nn.Flatten(),
            nn.Linear(in_channels * DENSE_GRID * DENSE_GRID, 16 * num_features),  # 1024 at 64
            nn.LeakyReLU(0.2),
            nn.Linear(16 * num_features, 1),
        )

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for block in self.features:
            x = block(x)  # (N, F_i, H / 2^k, W / 2^k)
            features.append(x)
        return self.head(x), features  # (N, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


class UNetDiscriminator(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral norm: (N, C, H, W) -> (N, 1, H, W) logits."""

    def __init__(self, channels: int = 3, num_features: int = 64) -> None:
        super().__init__()
        width = num_features

        def sn_conv(c_in: int, c_out: int, stride: int = 1, kernel: int = 3) -> nn.Module:
            return spectral_norm(nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, bias=False))

        self.conv0 = nn.Conv2d(channels, width, 3, padding=1)
        # Real-ESRGAN's 4x4 stride-2 steps down, 3x3 convolutions on the way up.
        self.down = nn.ModuleList(sn_conv(width * 2**i, width * 2 ** (i + 1), 2, 4) for i in range(3))
        self.up = nn.ModuleList(sn_conv(width * 2 ** (i + 1), width * 2**i) for i in (2, 1, 0))
        self.refine = nn.ModuleList([sn_conv(width, width), sn_conv(width, width)])
        self.conv_out = nn.Conv2d(width, 1, 3, padding=1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = [F.leaky_relu(self.conv0(x), 0.2)]  # (N, F, H, W)
        for conv in self.down:
            skips.append(F.leaky_relu(conv(skips[-1]), 0.2))  # (N, 2F..8F, H/2..H/8, W/2..W/8)
        x, features = skips.pop(), []
        for conv in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = F.leaky_relu(conv(x), 0.2) + skip  # (N, 4F..F, H/4..H, W/4..W)
            features.append(x)
        for conv in self.refine:
            x = F.leaky_relu(conv(x), 0.2)
        return self.conv_out(x), features  # (N, 1, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


DISCRIMINATOR_CLASSES: dict[str, type[nn.Module]] = {"vgg": VGGStyleDiscriminator, "unet": UNetDiscriminator}


def create_discriminator(name: str, channels: int, num_features: int) -> nn.Module:
    """The discriminator a config names (`superres.training.config.DISCRIMINATORS`)."""
    if name not in DISCRIMINATOR_CLASSES:
        raise ConfigError(f"discriminator must be one of {', '.join(DISCRIMINATOR_CLASSES)}, got {name!r}")
    return DISCRIMINATOR_CLASSES[name](channels=channels, num_features=num_features)
