"""`GanTraining`: what `superres.training.loop` adds when `config.gan` is set, and the GAN step.

One step (BasicSR's order, as ESRGAN and Real-ESRGAN train):
1. generator: SR = G(LR); loss = pixel_weight * loss(SR, HR) + perceptual_weight * perceptual +
   feature_matching_weight * feature matching + adversarial_weight * adversarial (the pixel
   term is computed and logged even at weight 0), with the discriminator frozen (its
   parameters get no gradient) and run as the plain module, so that DDP's gradient hooks on it
   do not fire;
2. discriminator: one forward of HR and the detached SR together (one DDP forward per backward;
   batch norm sees both halves, as in the generator's step), its own optimizer at
   `discriminator_learning_rate` on the generator's schedule.
One GradScaler serves both optimizers and is updated once per step, as PyTorch's AMP notes
prescribe for several optimizers. Nothing in a step draws random numbers, so a resumed run
repeats the killed one exactly.

Its part of last.safetensors: the discriminator's state dict under `disc.` (batch-norm
statistics and spectral-norm vectors included), its optimizer under `disc_optim.`, and that
optimizer's JSON part as `training.discriminator_optimizer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from superres.errors import CheckpointError
from superres.training.config import OPTIMIZERS, TrainConfig
from superres.training.distributed import Distributed
from superres.training.gan.discriminators import create_discriminator
from superres.training.gan.losses import (
    create_perceptual_loss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    phase_lattice_loss,
)
from superres.training.losses import pixel_loss
from superres.training.runlog import GAN_HISTORY_COLUMNS
from superres.training.state import load_optimizer_state
from superres.zoo.checkpoint import optimizer_state_to_storage

DISCRIMINATOR_PREFIX = "disc."
DISCRIMINATOR_OPTIMIZER_PREFIX = "disc_optim."


class GanTraining:
    """The discriminator, its optimizer, the loss terms, and the step that trains both networks."""

    def __init__(
        self, config: TrainConfig, device: torch.device, dist: Distributed, channels_last: bool
    ) -> None:
        self.config = config
        channels = 1 if config.channels == "Y" else 3
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        discriminator = create_discriminator(config.discriminator, channels, config.discriminator_features)
        self.discriminator = discriminator.to(device, memory_format=memory_format)
        self.distance = pixel_loss(config.loss)
        perceptual = create_perceptual_loss(
            config.perceptual, channels, self.distance,
            layer=config.perceptual_layer, weights_path=config.vgg_weights,
        )
        self.perceptual = None if perceptual is None else perceptual.to(device, memory_format=memory_format)
        optimizer_class = getattr(torch.optim, OPTIMIZERS[config.optimizer])
        self.rate_factor = (config.discriminator_learning_rate or config.learning_rate) / config.learning_rate
        self.optimizer = optimizer_class(
            self.discriminator.parameters(),
            lr=config.learning_rate * self.rate_factor,
            betas=config.betas,
            weight_decay=config.weight_decay,
            fused=device.type == "cuda",
        )
        self.net: nn.Module = self.discriminator
        if dist.world_size > 1:
            self.net = nn.parallel.DistributedDataParallel(
                self.discriminator, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.pending: list[torch.Tensor] = []  # per step: the GAN_HISTORY_COLUMNS values

    def step(
        self,
        generator: nn.Module,
        model: nn.Module,
        lr: torch.Tensor,
        hr: torch.Tensor,
        learning_rate: float,
        generator_optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        autocast: torch.autocast,
    ) -> torch.Tensor:
        """One generator and one discriminator update; returns the generator's total loss.

        `generator` is what runs (DDP/compiled), `model` the plain module (for clipping).
        """
        config = self.config
        zero = hr.new_zeros(())
        # 1. the generator, against a frozen discriminator
        self.discriminator.requires_grad_(False)
        with autocast:
            sr = generator(lr)
        sr = sr.float()
        pixel = self.distance(sr, hr)  # also at weight 0: history.csv shows it
        use_perceptual = self.perceptual is not None and config.perceptual_weight
        perceptual = self.perceptual(sr, hr) if use_perceptual else zero
        with autocast:
            logits, features = self.discriminator.forward_with_features(torch.cat([hr, sr]))
        real_logits, fake_logits = logits.float().chunk(2)
        adversarial = generator_adversarial_loss(real_logits.detach(), fake_logits, config.adversarial_loss)
        matching = zero
        if config.feature_matching_weight:
            halves = [feature.chunk(2) for feature in features]
            matching = feature_matching_loss([real for real, _ in halves], [fake for _, fake in halves])
        loss = (
            config.pixel_weight * pixel + config.perceptual_weight * perceptual
            + config.feature_matching_weight * matching + config.adversarial_weight * adversarial
        )
        if config.phase_weight:  # not a history column: the lattice is measured by `evaluate --grid`
            loss = loss + config.phase_weight * phase_lattice_loss(sr, hr, config.scale)
        generator_optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(generator_optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(generator_optimizer)
        self.discriminator.requires_grad_(True)

        # 2. the discriminator, on HR and the detached SR in one forward
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate * self.rate_factor
        with autocast:
            logits = self.net(torch.cat([hr, sr.detach()]))
        real_logits, fake_logits = logits.float().chunk(2)
        loss_discriminator = discriminator_loss(real_logits, fake_logits, config.adversarial_loss)
        self.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss_discriminator).backward()
        scaler.step(self.optimizer)
        scaler.update()
        self.pending.append(
            torch.stack([loss_discriminator, pixel, perceptual, matching, adversarial]).detach()
        )
        return loss.detach()

    def window_means(self) -> dict[str, float]:
        """Means of this process's loss terms since the last call (for history.csv)."""
        if not self.pending:
            return {}
        means = torch.stack(self.pending).mean(dim=0).cpu().tolist()
        self.pending.clear()
        return {name: round(value, 8) for name, value in zip(GAN_HISTORY_COLUMNS, means)}

    # --- the checkpoint's part (superres.training.state.TrainingCompanion) --------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors, _ = optimizer_state_to_storage(self.optimizer, DISCRIMINATOR_OPTIMIZER_PREFIX)
        for name, tensor in self.discriminator.state_dict().items():
            tensors[DISCRIMINATOR_PREFIX + name] = tensor
        return tensors

    def training_metadata(self) -> dict[str, Any]:
        _, json_part = optimizer_state_to_storage(self.optimizer, DISCRIMINATOR_OPTIMIZER_PREFIX)
        return {"discriminator": self.config.discriminator, "discriminator_optimizer": json_part}

    def load_state(self, path: Path, extra: dict[str, torch.Tensor], training: dict[str, Any]) -> None:
        state = {
            name[len(DISCRIMINATOR_PREFIX):]: tensor
            for name, tensor in extra.items() if name.startswith(DISCRIMINATOR_PREFIX)
        }
        if not state or "discriminator_optimizer" not in training:
            raise CheckpointError(
                f"{path} holds no discriminator: it is not a GAN run; start one from its weights "
                "with --gan --init-weights instead"
            )
        expected = self.discriminator.state_dict()
        if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
            raise CheckpointError(
                f"{path} holds a '{training.get('discriminator')}' discriminator that does not match "
                f"this run's '{self.config.discriminator}' of {self.config.discriminator_features} features"
            )
        self.discriminator.load_state_dict(state)
        load_optimizer_state(
            self.optimizer, extra, training["discriminator_optimizer"], DISCRIMINATOR_OPTIMIZER_PREFIX
        )
