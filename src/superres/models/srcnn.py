"""`srcnn` and `srcnn-tutorial`: the three-layer Super-Resolution CNN and its Keras-tutorial cousin.

Paper: Dong, Loy, He, Tang, "Image Super-Resolution Using Deep Convolutional Networks",
IEEE TPAMI 38(2), 2016 (the 9-5-5 network, 64 and 32 filters, on the Y channel of YCbCr).
The LR image is first upscaled to the target size by bicubic interpolation; three convolutions
(patch extraction, non-linear mapping, reconstruction) then restore the detail.

Differences from the paper, recorded in `SRCNN_INFO.deviations` too:
- zero 'same' padding, so the output has the full contract size; the paper used valid
  convolutions and scored only the centre crop they produce;
- hidden layers use He-normal init (the paper drew every layer from N(0, 0.001)); the linear
  output layer keeps the paper's N(0, 0.001);
- the bicubic upscale is part of `forward` rather than a preprocessing step.

`srcnn-tutorial` is the variant from the widely copied Keras tutorial: 3x3 kernels, 64-32-3 filters
on RGB, a ReLU after the last layer too, and a *bilinear* upscale both in training and inference.
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
    he_normal_,
    pre_upsampled_activations,
    pre_upsampled_receptive_field,
    require_int_sequence,
    small_normal_,
)
from superres.ops.resize import imresize_tensor


def _check_kernel_sizes(model_name: str, kernel_sizes: Any) -> tuple[int, ...]:
    checked = require_int_sequence(model_name, "kernel_sizes", kernel_sizes, length=3)
    if any(k % 2 == 0 for k in checked):
        # An even kernel cannot be padded symmetrically: a 'same' output would shift the image.
        raise ModelError(
            f"model '{model_name}': kernel_sizes must all be odd, got {kernel_sizes!r}"
        )
    return checked


def _conv_radius(model_name: str, kernel_sizes: Any) -> int:
    """HR pixels each side that the stack of 'same' convolutions looks at."""
    return sum((k - 1) // 2 for k in _check_kernel_sizes(model_name, kernel_sizes))


def _srcnn_receptive_field(scale: int, kwargs: Mapping[str, Any]) -> int:
    conv_radius = _conv_radius("srcnn", kwargs["kernel_sizes"])
    return pre_upsampled_receptive_field(scale, conv_radius, "bicubic")


def _activations(scale: int, kwargs: Mapping[str, Any]) -> float:
    return pre_upsampled_activations(scale, widest=max(kwargs["num_features"]))


def _tutorial_receptive_field(scale: int, kwargs: Mapping[str, Any]) -> int:
    conv_radius = _conv_radius("srcnn-tutorial", kwargs["kernel_sizes"])
    return pre_upsampled_receptive_field(scale, conv_radius, "bilinear")


SRCNN_INFO = ModelInfo(
    name="srcnn",
    channels="Y",
    scales=(2, 3, 4),
    pre_upsample=True,
    degradation="bicubic",
    paper="Dong, Loy, He, Tang, 'Image Super-Resolution Using Deep Convolutional Networks', "
    "IEEE TPAMI 38(2):295-307, 2016",
    deviations="Zero 'same' padding keeps the output at the full size (the paper used valid "
    "convolutions and a smaller output); hidden layers He-normal initialised (paper: N(0, 0.001) "
    "everywhere; the output layer keeps it); the bicubic pre-upscale runs inside forward.",
    default_kwargs={"kernel_sizes": (9, 5, 5), "num_features": (64, 32)},
    receptive_field_function=_srcnn_receptive_field,
    activation_function=_activations,
    test_kwargs={"kernel_sizes": (9, 1, 5), "num_features": (16, 8)},
)

SRCNN_TUTORIAL_INFO = ModelInfo(
    name="srcnn-tutorial",
    channels="RGB",
    scales=(2, 3, 4),
    pre_upsample=True,
    degradation="bilinear",
    paper="Keras-tutorial variant of Dong et al., 'Image Super-Resolution Using Deep "
    "Convolutional Networks', IEEE TPAMI 2016",
    deviations="From the paper: 3x3 kernels, RGB instead of Y, ReLU after the output layer too, "
    "bilinear instead of bicubic degradation and pre-upscale, 'same' padding. From the tutorial: "
    "the upscale is MATLAB-style bilinear inside forward instead of a preprocessing resize.",
    default_kwargs={"kernel_sizes": (3, 3, 3), "num_features": (64, 32)},
    receptive_field_function=_tutorial_receptive_field,
    activation_function=_activations,
    test_kwargs={"num_features": (16, 8)},
)


class SRCNN(nn.Module):
    """Dong et al.'s SRCNN on Y: LR (N, 1, h, w) -> SR (N, 1, scale*h, scale*w).

    Weights are `layers.0`, `layers.1`, `layers.2` (patch extraction, mapping, reconstruction).
    """

    info: ModelInfo = SRCNN_INFO
    image_channels = 1
    final_relu = False
    upsample_kernel = "bicubic"

    def __init__(
        self,
        scale: int,
        *,
        kernel_sizes: tuple[int, int, int] = (9, 5, 5),
        num_features: tuple[int, int] = (64, 32),
    ) -> None:
        super().__init__()
        name = self.info.name
        self.scale = self.info.check_scale(scale)
        kernel_sizes = _check_kernel_sizes(name, kernel_sizes)
        num_features = require_int_sequence(name, "num_features", num_features, length=2)
        self.model_kwargs: dict[str, Any] = {
            "kernel_sizes": kernel_sizes,
            "num_features": num_features,
        }
        widths = (self.image_channels, *num_features, self.image_channels)
        self.layers = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], k, padding=k // 2)
            for i, k in enumerate(kernel_sizes)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal for the ReLU layers; the paper's N(0, 0.001) for the linear output layer."""
        for conv in self.layers[:-1]:
            he_normal_(conv)
        small_normal_(self.layers[-1], std=1e-3)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        # (N, C, h, w) -> (N, C, scale*h, scale*w): interpolate first, then restore detail.
        x = imresize_tensor(lr, self.scale, kernel=self.upsample_kernel)
        for conv in self.layers[:-1]:
            x = F.relu(conv(x))  # (N, F_i, scale*h, scale*w)
        x = self.layers[-1](x)  # (N, C, scale*h, scale*w)
        return F.relu(x) if self.final_relu else x


class SRCNNTutorial(SRCNN):
    """The Keras tutorial's SRCNN on RGB: LR (N, 3, h, w) -> SR (N, 3, scale*h, scale*w)."""

    info: ModelInfo = SRCNN_TUTORIAL_INFO
    image_channels = 3
    final_relu = True
    upsample_kernel = "bilinear"

    def __init__(
        self,
        scale: int,
        *,
        kernel_sizes: tuple[int, int, int] = (3, 3, 3),
        num_features: tuple[int, int] = (64, 32),
    ) -> None:
        super().__init__(scale, kernel_sizes=kernel_sizes, num_features=num_features)

    def reset_parameters(self) -> None:
        """Keras defaults, as in the tutorial: Glorot-uniform weights, zero biases."""
        for conv in self.layers:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
