"""`fsrcnn` and `fsrcnn-s`: the Fast Super-Resolution CNN, which works on the LR image.

Paper: Dong, Loy, Tang, "Accelerating the Super-Resolution Convolutional Neural Network",
ECCV 2016. Five parts, all at LR resolution but the last: feature extraction (5x5, d filters),
shrinking (1x1 to s), m mapping layers (3x3, s), expanding (1x1 back to d), each followed by PReLU,
then a 9x9 transposed convolution with stride `scale` that produces the HR image. FSRCNN is
d=56, s=12, m=4 (12,464 weights); FSRCNN-s is d=32, s=5, m=1 (3,937 weights), on the Y channel.

Differences from the paper (also in the cards' `deviations`): He-normal init for the PReLU layers
(the paper used it too, but drew the deconvolution from N(0, 0.001), as here); 'same' zero
padding everywhere so that the output is exactly `scale` times the input (the deconvolution is
padded by 4 with `scale - 1` extra output rows and columns on the bottom/right, as OpenCV's port
does); `bicubic_skip=True` optionally adds the bicubic upscale of the input so that the network
learns a residual (off by default, as in the paper). `reparam_gain` > 0 trains every LR-space
convolution with re-parameterisable branches (`superres.models.reparam`); the network it folds
into, and ships as, is the plain one (`reparam_gain=0`, the default).

Parameter names are stable (`features`, `shrink`, `mapping.{i}`, `expand`, `deconv`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from superres.models.blocks import (
    ModelInfo,
    he_normal_,
    post_upsampled_receptive_field,
    require_bool,
    require_positive_int,
    small_normal_,
)
from superres.models.reparam import conv_or_rep, require_gain
from superres.models.subpixel import LRSpaceConvTranspose2d
from superres.ops.resize import imresize_tensor

DECONV_KERNEL = 9


def _deconv_radius(scale: int) -> int:
    """LR pixels each side that a stride-`scale` 9x9 transposed conv (padding 4) reads.

    Output pixel o = scale*i + r (0 <= r < scale) reads LR pixels j with |scale*j - o| <= 4, i.e.
    j - i from -floor(4 / scale) to floor((4 + scale - 1) / scale); the second is the larger.
    """
    return (DECONV_KERNEL // 2 + scale - 1) // scale


def _receptive_field(scale: int, kwargs: Mapping[str, Any]) -> int:
    mapping_layers = require_positive_int("fsrcnn", "mapping_layers", kwargs["mapping_layers"])
    body = 2 + mapping_layers + _deconv_radius(scale)  # 5x5, m 3x3, deconv
    return post_upsampled_receptive_field(body, bool(kwargs["bicubic_skip"]))


def _activations(scale: int, kwargs: Mapping[str, Any]) -> float:
    return 4.0 * kwargs["num_features"] + 2 * scale * scale


_PAPER = "Dong, Loy, Tang, 'Accelerating the Super-Resolution Convolutional Neural Network', ECCV 2016"
_DEVIATIONS = (
    "'Same' zero padding throughout; the 9x9 deconvolution is padded by 4 with scale-1 extra "
    "output rows/columns on the bottom/right (as OpenCV's port) so that the output is exactly "
    "scale times the input; optional bicubic_skip (off by default) adds the bicubic upscale of "
    "the input. Trained on the 291 images (T91 + BSD200) rather than 91 + General-100."
)

FSRCNN_INFO = ModelInfo(
    name="fsrcnn",
    channels="Y",
    scales=(2, 3, 4),
    pre_upsample=False,
    degradation="bicubic",
    paper=_PAPER,
    deviations=_DEVIATIONS,
    default_kwargs={
        "num_features": 56, "shrink_features": 12, "mapping_layers": 4, "bicubic_skip": False, "reparam_gain": 0,
    },
    receptive_field_function=_receptive_field,
    activation_function=_activations,
    test_kwargs={"num_features": 8, "shrink_features": 4, "mapping_layers": 1, "bicubic_skip": False},
)

FSRCNN_S_INFO = ModelInfo(
    name="fsrcnn-s",
    channels="Y",
    scales=(2, 3, 4),
    pre_upsample=False,
    degradation="bicubic",
    paper=_PAPER + " (FSRCNN-s)",
    deviations=_DEVIATIONS,
    default_kwargs={
        "num_features": 32, "shrink_features": 5, "mapping_layers": 1, "bicubic_skip": False, "reparam_gain": 0,
    },
    receptive_field_function=_receptive_field,
    activation_function=_activations,
    test_kwargs={"num_features": 8, "shrink_features": 4, "mapping_layers": 1, "bicubic_skip": True, "reparam_gain": 2},
)


class FSRCNN(nn.Module):
    """FSRCNN on Y: LR (N, 1, h, w) -> SR (N, 1, scale*h, scale*w)."""

    info: ModelInfo = FSRCNN_INFO

    def __init__(
        self,
        scale: int,
        *,
        num_features: int = 56,
        shrink_features: int = 12,
        mapping_layers: int = 4,
        bicubic_skip: bool = False,
        reparam_gain: int = 0,
    ) -> None:
        super().__init__()
        name = self.info.name
        self.scale = self.info.check_scale(scale)
        d = require_positive_int(name, "num_features", num_features)
        s = require_positive_int(name, "shrink_features", shrink_features)
        m = require_positive_int(name, "mapping_layers", mapping_layers)
        self.bicubic_skip = require_bool(self.info.name, "bicubic_skip", bicubic_skip)
        gain = require_gain(name, reparam_gain)
        self.model_kwargs: dict[str, Any] = {
            "num_features": d, "shrink_features": s, "mapping_layers": m, "bicubic_skip": self.bicubic_skip,
            "reparam_gain": gain,
        }
        self.features = nn.Sequential(conv_or_rep(1, d, 5, gain), nn.PReLU(d))
        self.shrink = nn.Sequential(conv_or_rep(d, s, 1, gain), nn.PReLU(s))
        self.mapping = nn.Sequential(*(nn.Sequential(conv_or_rep(s, s, 3, gain), nn.PReLU(s)) for _ in range(m)))
        self.expand = nn.Sequential(conv_or_rep(s, d, 1, gain), nn.PReLU(d))
        # The paper's 9x9 deconvolution, computed as the LR conv + pixel shuffle it equals
        # (same weights, faster to train and run on a CPU).
        self.deconv = LRSpaceConvTranspose2d(d, 1, DECONV_KERNEL, stride=self.scale, padding=DECONV_KERNEL // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal for the PReLU layers (the paper's choice); N(0, 0.001) for the deconvolution."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                he_normal_(module)
        small_normal_(self.deconv, std=1e-3)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.features(lr)  # (N, d, h, w)
        x = self.expand(self.mapping(self.shrink(x)))  # (N, d, h, w)
        sr = self.deconv(x)  # (N, 1, scale*h, scale*w)
        return sr + imresize_tensor(lr, self.scale) if self.bicubic_skip else sr


class FSRCNNSmall(FSRCNN):
    """FSRCNN-s: the same network with d=32, s=5, m=1."""

    info: ModelInfo = FSRCNN_S_INFO

    def __init__(
        self,
        scale: int,
        *,
        num_features: int = 32,
        shrink_features: int = 5,
        mapping_layers: int = 1,
        bicubic_skip: bool = False,
        reparam_gain: int = 0,
    ) -> None:
        super().__init__(
            scale,
            num_features=num_features,
            shrink_features=shrink_features,
            mapping_layers=mapping_layers,
            bicubic_skip=bicubic_skip,
            reparam_gain=reparam_gain,
        )
