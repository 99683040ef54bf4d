"""`rednet`: the Residual Encoder-Decoder Network (RED-Net) for super-resolution on Y.

Paper: Mao, Shen, Yang, "Image Restoration Using Very Deep Convolutional Encoder-Decoder Networks
with Symmetric Skip Connections", NIPS 2016. The LR image is upscaled by bicubic interpolation,
then `num_layers` 3x3 convolutions encode it and `num_layers` 3x3 transposed convolutions decode
it; every second encoder feature map is added to its mirror decoder layer. RED20 is
`num_layers=10`, RED30 is `num_layers=15`.

Layer wiring, with L = num_layers and layers counted from 1:
- encoder layer k: conv (1 -> F for k = 1, else F -> F), then ReLU; its output is kept when k is
  even;
- decoder layer j mirrors encoder layer L + 1 - j: transposed conv (F -> F, or F -> 1 for j = L);
  the kept encoder output of the mirror layer, if any, is added, then ReLU (not for j = L, whose
  output is the residual);
- the upscaled input is added to the residual.
The mirror of decoder layer L is encoder layer 1 (odd), so the output layer never takes a skip,
and the same code path serves any L >= 1, odd or even.

Differences from the paper and from the Keras seed it was ported from (also in
`REDNET_INFO.deviations`): a ReLU after every layer but the last (the Keras seed had no activation
on its convolutions); skip sums are taken before the decoder's ReLU (sum, then ReLU); the whole
network learns a residual over the bicubic upscale (global input skip); odd depths work (the Keras
seed crashed on them); He-normal init with a near-zero output layer so an untrained model starts at
bicubic.

Stride-1, padding-1 transposed convolutions equal ordinary convolutions with flipped, transposed
weights; they stay `nn.ConvTranspose2d` here for fidelity, with stable names `encoder.{i}` and
`decoder.{i}` (0-based) so that a faster conv-only equivalent can load the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from superres.models.blocks import (
    ModelInfo,
    he_normal_,
    pre_upsampled_activations,
    pre_upsampled_receptive_field,
    require_positive_int,
    small_normal_,
)
from superres.ops.resize import imresize_tensor

KERNEL_SIZE = 3
#: Std of the output layer's weights. The skip sums grow the activations (2-4x rms from the first
#: to the last decoder layer at He init); with 1e-3 an untrained RED20/RED30 sat up to 0.06 from
#: bicubic (mean abs, [0, 1] scale), 1e-4 keeps it under 0.01, and Adam still trains it at once.
OUTPUT_INIT_STD = 1e-4


def _receptive_field(scale: int, kwargs: Mapping[str, Any]) -> int:
    # 2 * num_layers layers of 3x3, each one HR pixel each side.
    num_layers = require_positive_int("rednet", "num_layers", kwargs["num_layers"])
    conv_radius = 2 * num_layers * (KERNEL_SIZE // 2)
    return pre_upsampled_receptive_field(scale, conv_radius, "bicubic")


def _activations(scale: int, kwargs: Mapping[str, Any]) -> float:
    # Every second encoder map stays alive for its mirror decoder layer.
    num_layers = require_positive_int("rednet", "num_layers", kwargs["num_layers"])
    return pre_upsampled_activations(scale, kwargs["num_features"], extra_maps=num_layers // 2)


REDNET_INFO = ModelInfo(
    name="rednet",
    channels="Y",
    scales=(2, 3, 4),
    pre_upsample=True,
    degradation="bicubic",
    paper="Mao, Shen, Yang, 'Image Restoration Using Very Deep Convolutional Encoder-Decoder "
    "Networks with Symmetric Skip Connections', NIPS 2016",
    deviations="ReLU after every conv and deconv except the output layer (the Keras seed had no "
    "activation on its convs); skips from every second encoder layer are summed into the mirror "
    "decoder layer before its ReLU; a global skip adds the bicubic-upscaled input, so the network "
    "learns a residual; any depth works, odd ones included (the Keras seed crashed on odd depths); "
    "He-normal init with an N(0, 1e-4) output layer so an untrained model starts at bicubic.",
    default_kwargs={"num_layers": 10, "num_features": 64},
    receptive_field_function=_receptive_field,
    activation_function=_activations,
    test_kwargs={"num_layers": 3, "num_features": 8},
    bench_kwargs={"num_layers": 10, "num_features": 64},
)


class REDNet(nn.Module):
    """RED-Net on Y: LR (N, 1, h, w) -> SR (N, 1, scale*h, scale*w)."""

    info: ModelInfo = REDNET_INFO

    def __init__(self, scale: int, *, num_layers: int = 10, num_features: int = 64) -> None:
        super().__init__()
        self.scale = self.info.check_scale(scale)
        num_layers = require_positive_int(self.info.name, "num_layers", num_layers)
        num_features = require_positive_int(self.info.name, "num_features", num_features)
        self.num_layers = num_layers
        self.model_kwargs: dict[str, Any] = {"num_layers": num_layers, "num_features": num_features}

        encoder_widths = [1] + [num_features] * num_layers
        decoder_widths = [num_features] * num_layers + [1]
        padding = KERNEL_SIZE // 2
        self.encoder = nn.ModuleList(
            nn.Conv2d(encoder_widths[i], encoder_widths[i + 1], KERNEL_SIZE, padding=padding)
            for i in range(num_layers)
        )
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(
                decoder_widths[i], decoder_widths[i + 1], KERNEL_SIZE, padding=padding
            )
            for i in range(num_layers)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal for every layer followed by ReLU; a near-zero output layer."""
        for conv in [*self.encoder, *self.decoder[:-1]]:
            he_normal_(conv)
        small_normal_(self.decoder[-1], std=OUTPUT_INIT_STD)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        upscaled = imresize_tensor(lr, self.scale)  # (N, 1, H, W), H = scale*h, W = scale*w
        num_layers = self.num_layers

        # Encoder: keep the output of every even layer (1-based k) for its mirror decoder layer.
        kept: dict[int, torch.Tensor] = {}
        x = upscaled
        for index, conv in enumerate(self.encoder):
            x = F.relu(conv(x))  # (N, F, H, W)
            layer = index + 1
            if layer % 2 == 0:
                kept[layer] = x

        # Decoder: layer j mirrors encoder layer L + 1 - j; sum the skip first, then ReLU.
        for index, deconv in enumerate(self.decoder[:-1]):
            x = deconv(x)  # (N, F, H, W)
            mirror = num_layers - index  # L + 1 - j with j = index + 1
            if mirror in kept:
                x = x + kept[mirror]
            x = F.relu(x)
        residual = self.decoder[-1](x)  # (N, 1, H, W); its mirror is layer 1, never kept
        return upscaled + residual
