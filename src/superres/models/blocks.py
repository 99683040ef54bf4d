"""What every network module shares: the `ModelInfo` card, kwarg checks and weight initialisers.

`ModelInfo` lives here rather than in `superres.models.__init__` so that each network module can
declare its own card next to its code without importing the registry (which imports them).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from superres.errors import ModelError

#: (scale, effective kwargs) -> LR pixels of context each side of one output pixel.
ReceptiveFieldFunction = Callable[[int, Mapping[str, Any]], int]

#: LR pixels each side that one output pixel of MATLAB's integer upscale reads (kernel support / 2).
UPSAMPLE_TAPS = {"bicubic": 2, "bilinear": 1}


@dataclass(frozen=True)
class ModelInfo:
    """The card of one registered network: what it eats, which scales, where it comes from.

    `receptive_field` is the value for `default_kwargs` at the smallest supported scale, which
    bounds every supported scale (a larger scale needs fewer LR pixels); use
    `receptive_field_for(scale, **kwargs)` for a given depth and scale.
    """

    name: str
    channels: str  # "Y" or "RGB"
    scales: tuple[int, ...]
    pre_upsample: bool
    degradation: str  # "bicubic" or "bilinear": how its training LR images were made
    paper: str
    deviations: str
    default_kwargs: Mapping[str, Any]
    receptive_field_function: ReceptiveFieldFunction = field(repr=False, compare=False)
    receptive_field: int = field(init=False)

    def __post_init__(self) -> None:
        # Frozen dataclass: the derived field has to be set through object.__setattr__.
        default = self.receptive_field_function(min(self.scales), dict(self.default_kwargs))
        object.__setattr__(self, "receptive_field", default)

    def effective_kwargs(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The defaults overridden by `kwargs`; an unknown name raises `ModelError`."""
        unknown = sorted(set(kwargs) - set(self.default_kwargs))
        if unknown:
            accepted = ", ".join(sorted(self.default_kwargs)) or "none"
            raise ModelError(
                f"model '{self.name}' got unknown argument(s) {', '.join(unknown)}; "
                f"accepted: {accepted}"
            )
        return {**self.default_kwargs, **kwargs}

    def check_scale(self, scale: Any) -> int:
        """`scale` as an int if this model supports it, else `ModelError`."""
        # numpy integers are welcome; floats such as 2.0 are not (a scale is a whole factor).
        integral = isinstance(scale, numbers.Integral) and not isinstance(scale, bool)
        if not integral or int(scale) not in self.scales:
            supported = ", ".join(str(s) for s in self.scales)
            raise ModelError(
                f"model '{self.name}' does not support scale {scale!r}; supported: {supported}"
            )
        return int(scale)

    def receptive_field_for(self, scale: int | None = None, **kwargs: Any) -> int:
        """LR pixels of context each side of one output pixel for this scale and these kwargs.

        This is the tile overlap that makes tiled inference equal to whole-image inference.
        `scale=None` means the smallest supported scale, the worst case.
        """
        checked_scale = min(self.scales) if scale is None else self.check_scale(scale)
        return self.receptive_field_function(checked_scale, self.effective_kwargs(kwargs))


def pre_upsampled_receptive_field(scale: int, conv_radius: int, upsample_kernel: str) -> int:
    """Receptive field, in LR pixels each side, of a conv stack run after an integer upscale.

    The convolutions see `conv_radius` HR pixels each side, i.e. ceil(conv_radius / scale) LR
    pixels, and the upscale itself reads the kernel's taps beyond that.
    """
    return math.ceil(conv_radius / scale) + UPSAMPLE_TAPS[upsample_kernel]


def require_positive_int(model_name: str, name: str, value: Any) -> int:
    """`value` if it is an int >= 1 (bools excluded), else `ModelError` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"model '{model_name}': {name} must be a positive integer, got {value!r}")
    return int(value)


def require_int_sequence(model_name: str, name: str, value: Any, length: int) -> tuple[int, ...]:
    """`value` as a tuple of `length` positive ints; a list is fine (JSON makes tuples lists)."""
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ModelError(
            f"model '{model_name}': {name} must be a sequence of {length} integers, got {value!r}"
        )
    return tuple(require_positive_int(model_name, name, item) for item in value)


def he_normal_(conv: nn.Conv2d | nn.ConvTranspose2d) -> None:
    """He et al. (2015) normal init for a conv followed by ReLU; zero bias.

    The fan-in is computed from the layer's true inputs per output pixel (in_channels * k * k)
    because `nn.init.kaiming_normal_` reads a transposed conv's weight dimensions the other way.
    """
    kernel_area = conv.kernel_size[0] * conv.kernel_size[1]
    fan_in = conv.in_channels * kernel_area
    nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def small_normal_(conv: nn.Conv2d | nn.ConvTranspose2d, std: float) -> None:
    """Near-zero Gaussian init with zero bias, for an output layer that should start quiet."""
    nn.init.normal_(conv.weight, mean=0.0, std=std)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
