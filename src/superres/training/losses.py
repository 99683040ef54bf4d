"""The named pixel losses a config's `loss` chooses from: the one home of that knowledge.

`PIXEL_LOSSES` maps each name to a callable `(sr, hr) -> scalar`, the mean over every element.
Everything else reads this table: config validation and the `--loss` flag's choices (its keys),
the pixel-loss step of `superres.training.loop`, distillation's two targets
(`superres.training.distill.distilled_loss`), and the GAN generator's pixel term and the
distance its perceptual loss puts on features (`superres.training.gan.trainer`), all through
`pixel_loss(name)`. Adding a loss is one entry here.

- "mse": mean squared error (`torch.nn.functional.mse_loss`), the PSNR-oriented default.
- "l1": mean absolute error (`torch.nn.functional.l1_loss`), EDSR's choice.
- "charbonnier": `mean(sqrt((sr - hr)**2 + eps**2))`, eps = `CHARBONNIER_EPS` = 1e-3, the
  differentiable L1 of LapSRN (Lai et al., CVPR 2017) and the EDSR-family papers after it.

The GAN's other terms (perceptual, adversarial, feature matching, the phase lattice) have their
own weights and live in `superres.training.gan.losses`.

torch is imported inside the callables, not at the top: `superres.training.config`, which
`superres train --help` builds its flags from, reads this table and must stay free of torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from superres.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

#: Charbonnier's eps (LapSRN's 1e-3): the loss is L1 where |sr - hr| >> eps, quadratic below it.
CHARBONNIER_EPS = 1e-3


def mse(sr: Tensor, hr: Tensor) -> Tensor:
    """Mean squared error."""
    import torch.nn.functional as F

    return F.mse_loss(sr, hr)


def l1(sr: Tensor, hr: Tensor) -> Tensor:
    """Mean absolute error."""
    import torch.nn.functional as F

    return F.l1_loss(sr, hr)


def charbonnier(sr: Tensor, hr: Tensor) -> Tensor:
    """Mean of `sqrt((sr - hr)**2 + CHARBONNIER_EPS**2)`: a smooth L1."""
    import torch

    return torch.sqrt((sr - hr).square() + CHARBONNIER_EPS**2).mean()


#: The losses a config may name (its `loss` key, the `--loss` flag) -> `(sr, hr) -> scalar mean`.
PIXEL_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": mse,
    "l1": l1,
    "charbonnier": charbonnier,
}


def pixel_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss `name` stands for; ConfigError listing the choices for an unknown one."""
    if not isinstance(name, str) or name not in PIXEL_LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(PIXEL_LOSSES)}, got {name!r}")
    return PIXEL_LOSSES[name]
