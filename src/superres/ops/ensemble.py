"""Geometric self-ensemble (the "+" models of EDSR, Lim et al. 2017).

The network runs on the eight flips and 90-degree rotations of its input; each output is turned
back and the eight are averaged. Convolutions are not exactly equivariant to these transforms, so
the eight answers differ a little and their mean is usually a better estimate, at eight times the
cost. Papers report such numbers separately ("+"): `superres evaluate --self-ensemble` labels them
so, and they are never compared with single-pass results.

Because each transform maps a tile of the input onto the matching tile of the output, the
ensemble commutes with tiled inference: tiled and untiled runs still agree.

Pipelines get it from `superres.inference.backends.make_backend(..., self_ensemble=True)`, which wraps a
runtime's forward in `self_ensemble`; `SelfEnsemble` is the same as a module, for code that
wants an `nn.Module` (it keeps the card attributes: `info`, `scale`, `model_kwargs`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

TensorFunction = Callable[[torch.Tensor], torch.Tensor]

#: (quarter turns, mirrored first): the eight symmetries of a square.
DIHEDRAL_TRANSFORMS: tuple[tuple[int, bool], ...] = tuple(
    (turns, mirrored) for mirrored in (False, True) for turns in range(4)
)
#: Suffix for the names of models run this way, as in the papers' tables.
ENSEMBLE_LABEL = "+x8"


def _transform(images: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    if mirrored:
        images = images.flip(-1)
    return torch.rot90(images, turns, dims=(-2, -1))


def _untransform(images: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    images = torch.rot90(images, -turns, dims=(-2, -1))
    return images.flip(-1) if mirrored else images


def ensemble_average(forward: TensorFunction, images: torch.Tensor) -> torch.Tensor:
    """`forward(images)` averaged over the eight symmetries of the (N, C, H, W) input."""
    total: torch.Tensor | None = None
    for turns, mirrored in DIHEDRAL_TRANSFORMS:
        output = forward(_transform(images, turns, mirrored).contiguous())
        output = _untransform(output, turns, mirrored)
        # The first output may be a backend's own buffer: accumulate into a fresh tensor.
        total = output.clone() if total is None else total.add_(output)
    assert total is not None
    return total.div_(len(DIHEDRAL_TRANSFORMS))


def self_ensemble(forward: TensorFunction) -> TensorFunction:
    """`forward` averaged over the eight symmetries of its input."""
    return functools.partial(ensemble_average, forward)


class SelfEnsemble(nn.Module):
    """A model wrapper whose forward is the self-ensemble of `model`.

    It keeps the attributes the rest of superres reads from a model (`info`, `scale`,
    `model_kwargs`), so it can stand wherever the model itself can be evaluated. The wrapped
    model is a submodule, so copies and the fast CPU path (`superres.inference.fast`) transform it too.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.info = model.info
        self.scale = model.scale
        self.model_kwargs = getattr(model, "model_kwargs", {})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return ensemble_average(self.model, images)
