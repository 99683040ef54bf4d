"""Knowledge distillation for pixel-loss training: a teacher's outputs as a second target.

`teacher_images(config, lr_images, device)` runs the configured teacher (a shipped model name or a
`.safetensors` checkpoint, `superres.zoo.names.resolve_model`) once over every training image's
LR and returns its outputs, rounded to uint8 like the HR images they sit beside. Training then
cuts each teacher crop where it cuts the HR crop (`superres.training.data.DeviceBatches`), so the teacher
costs one pass over the training set at start-up, not a forward pass per step (under torchrun
the ranks share it); a resumed run recomputes the same outputs. Rounding to 8 bits costs the
targets under 0.001 dB at these PSNRs.
With `teacher_self_ensemble` the teacher is its geometric self-ensemble (`superres.ops.ensemble`):
the mean of its outputs over the 8 flips and rotations, which scores above the teacher alone
(span80 x4 on Set5: 31.63 against 31.41 dB) at 8x the start-up pass.

`distilled_loss` mixes the two targets: `(1 - w) * loss(sr, hr) + w * loss(sr, teacher)`, `loss`
the config's pixel loss (`superres.training.losses.pixel_loss`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn

from superres.errors import ConfigError, ModelError
from superres.ops.ensemble import ENSEMBLE_LABEL, SelfEnsemble
from superres.training.config import TrainConfig
from superres.training.distributed import Distributed

logger = logging.getLogger(__name__)


def teacher_images(
    config: TrainConfig,
    lr_images: list[np.ndarray],
    device: torch.device,
    dist: Distributed | None = None,
) -> list[np.ndarray]:
    """The teacher's (H*s, W*s, C) uint8 output for each (H, W, C) uint8 LR training image.

    Under torchrun (`dist`) each rank runs the teacher on every world_size-th image only and the
    ranks then send each other their outputs, so the start-up pass takes 1/world_size of the time
    and every rank still ends with all the outputs (the same numbers as one process computes).
    """
    dist = dist or Distributed()
    teacher = _load_teacher(config, device)
    own = {
        index: _teach_one(teacher, config, lr_images[index], device)
        for index in range(dist.rank, len(lr_images), dist.world_size)
    }
    outputs = []
    for index, lr in enumerate(lr_images):
        pixels = own.get(index)
        if dist.world_size > 1:
            if pixels is None:
                shape = (lr.shape[0] * config.scale, lr.shape[1] * config.scale, lr.shape[2])
                pixels = torch.empty(shape, dtype=torch.uint8, device=device)
            torch_dist.broadcast(pixels, src=index % dist.world_size)
        assert pixels is not None
        outputs.append(np.ascontiguousarray(pixels.cpu().numpy()))
    label = f"{config.teacher}{ENSEMBLE_LABEL if config.teacher_self_ensemble else ''}"
    logger.info("teacher %s ran once over the %d training images", label, len(outputs))
    return outputs


def _load_teacher(config: TrainConfig, device: torch.device) -> nn.Module:
    from superres.zoo.names import resolve_model  # the model registry, only when a teacher is set

    try:
        teacher = resolve_model(str(config.teacher), config.scale, device=str(device))
    except ModelError as error:
        raise ConfigError(f"teacher: {error}") from None
    teacher.eval()
    return SelfEnsemble(teacher) if config.teacher_self_ensemble else teacher


def _teach_one(teacher: nn.Module, config: TrainConfig, lr: np.ndarray, device: torch.device) -> torch.Tensor:
    """The teacher's output for one (H, W, C) uint8 LR image, as an (H*s, W*s, C) uint8 tensor."""
    batch = torch.from_numpy(lr).permute(2, 0, 1)[None].to(device, torch.float32) / 255.0
    with torch.no_grad():
        try:
            sr = teacher(batch)
        except RuntimeError as error:  # a channel-count mismatch surfaces in the first conv
            raise ConfigError(
                f"teacher {config.teacher!r} cannot take this run's {lr.shape[2]}-channel "
                f"training images: {str(error).splitlines()[0]}"
            ) from None
    expected = (lr.shape[2], lr.shape[0] * config.scale, lr.shape[1] * config.scale)
    if tuple(sr.shape[1:]) != expected:
        raise ConfigError(
            f"teacher {config.teacher!r} gives {tuple(sr.shape[1:])} for this run's "
            f"training images, not (channels, height, width) = {expected}"
        )
    return sr[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()


def distilled_loss(
    loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sr: torch.Tensor,
    hr: torch.Tensor,
    taught: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """`(1 - weight) * loss(sr, hr) + weight * loss(sr, taught)`; `loss_function` from `pixel_loss`."""
    return (1 - weight) * loss_function(sr, hr) + weight * loss_function(sr, taught)
