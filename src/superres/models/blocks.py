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

import torch
from torch import nn

from superres.errors import ModelError

#: (scale, effective kwargs) -> LR pixels of context each side of one output pixel.
ReceptiveFieldFunction = Callable[[int, Mapping[str, Any]], int]
#: (scale, effective kwargs) -> float32 values alive at once, at the peak of a forward pass, per
#: LR pixel of the input (a pre-upsampling network counts its scale**2 HR pixels per LR pixel).
ActivationFunction = Callable[[int, Mapping[str, Any]], float]

#: LR pixels each side that one output pixel of MATLAB's integer upscale reads (kernel support / 2).
UPSAMPLE_TAPS = {"bicubic": 2, "bilinear": 1}


#: SPAN's `img_range` (and EDSR's): the centred input is multiplied by it, the output divided by it.
IMAGE_RANGE = 255.0
#: `ModelInfo.widen`: (trained network, wider num_features, seed) -> the wider network.
WidenHook = Callable[[nn.Module, int, int], nn.Module]
#: `ModelInfo.to_rgb`: a trained Y network -> the RGB network with the same Y output.
ColourHook = Callable[[nn.Module], nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """The card of one registered network: what it eats, which scales, where it comes from.

    `receptive_field` is the value for `default_kwargs` at the supported scale that needs the
    most context, so it bounds every scale; use `receptive_field_for(scale, **kwargs)` for a given
    depth and scale.

    The card is the whole contract: pipelines (tiling, evaluate, upscale, bench, export) and the
    generic tests read these fields and never a model's name or constructor arguments.
    - `pre_upsample`: the network convolves an upscaled image (SRCNN, RED-Net), not the LR one.
    - `activation_function`: peak live float32 values per LR input pixel (sizes tiles).
    - `needs_weights`: False for parameter-free models (bicubic), usable without a checkpoint.
    - `test_kwargs`: a small, fast configuration for tests and the quick benchmark.
    - `bench_kwargs`: the configuration `superres bench` times when no weights ship.
    - `widen(model, num_features, seed)`: the same network with more features and the same output
      (Net2Net growth; `init_weights` of a wider run uses it), where the architecture has one.
    - `to_rgb(model)`: a Y network turned into an RGB one with the same Y output, where it has one.
    - A `"channels"` entry in `default_kwargs` makes the colour space a constructor choice
      (`channels_for(kwargs)`); `channels` is then the default.
    - `tile_alignment`: the period of a grid the network anchors at the image's top-left corner
      (window attention, a U-Net's downsampling), 1 for a plain conv net: tiles then start at
      multiples of it, so that each sees the grid the whole image sees.
    - `half_safe`: whether the network computes in float16 without overflow or lost precision
      that changes its output; False refuses `--half` (community architectures spandrel marks
      fp16-unsafe: window attention, large intermediate values), whichever command asks.
    - `bf16_safe`: the same for bfloat16: False refuses `--precision bf16` and keeps `--precision
      auto` at fp32 (`superres.inference.precision`; community architectures spandrel marks
      bf16-unsafe, such as AuraSR).
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
    activation_function: ActivationFunction = field(repr=False, compare=False)
    needs_weights: bool = True
    test_kwargs: Mapping[str, Any] = field(default_factory=dict)
    bench_kwargs: Mapping[str, Any] = field(default_factory=dict)
    widen: WidenHook | None = field(default=None, repr=False, compare=False)
    to_rgb: ColourHook | None = field(default=None, repr=False, compare=False)
    tile_alignment: int = 1
    half_safe: bool = True
    bf16_safe: bool = True
    receptive_field: int = field(init=False)

    def __post_init__(self) -> None:
        # Frozen dataclass: the derived field has to be set through object.__setattr__. The worst
        # case over the scales: pre-upsampling nets need most at the smallest, nets that upsample
        # in several steps (EDSR x4) at the largest.
        default = max(self.receptive_field_function(s, dict(self.default_kwargs)) for s in self.scales)
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

    def channels_for(self, kwargs: Mapping[str, Any] | None = None) -> str:
        """"Y" or "RGB" for these constructor kwargs (the card's default when not a choice)."""
        if "channels" in self.default_kwargs:
            return str(self.effective_kwargs(kwargs or {})["channels"])
        return self.channels

    def activation_values_per_lr_pixel(self, scale: int, kwargs: Mapping[str, Any] | None = None) -> float:
        """Peak live float32 activations per LR input pixel at `scale` with these kwargs."""
        return float(self.activation_function(self.check_scale(scale), self.effective_kwargs(kwargs or {})))

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
        `scale=None` means the worst case over the supported scales.
        """
        effective = self.effective_kwargs(kwargs)
        if scale is None:
            return max(self.receptive_field_function(s, effective) for s in self.scales)
        return self.receptive_field_function(self.check_scale(scale), effective)


def pre_upsampled_receptive_field(scale: int, conv_radius: int, upsample_kernel: str) -> int:
    """Receptive field, in LR pixels each side, of a conv stack run after an integer upscale.

    The convolutions see `conv_radius` HR pixels each side, i.e. ceil(conv_radius / scale) LR
    pixels, and the upscale itself reads the kernel's taps beyond that.
    """
    return math.ceil(conv_radius / scale) + UPSAMPLE_TAPS[upsample_kernel]


#: Feature maps a plain conv stack keeps alive at once: input, output and the framework's slack.
BASE_LIVE_MAPS = 4


def pre_upsampled_activations(scale: int, widest: int, extra_maps: int = 0) -> float:
    """Peak values per LR pixel of a conv stack run on the upscaled image (scale**2 HR px each)."""
    return float(scale * scale * widest * (BASE_LIVE_MAPS + extra_maps))


def residual_body_activations(scale: int, num_features: int) -> float:
    """Peak values per LR pixel of a residual body with a pixel-shuffle upsampler (EDSR, SRResNet):
    the head, a block's input and two inner maps, then the upsampler's conv output and shuffle."""
    return 6.0 * num_features + 3.0 * num_features * scale * scale


def post_upsampled_receptive_field(body_radius: int, bicubic_skip: bool) -> int:
    """Receptive field of an LR-space network: its convolutions' radius, or the bicubic skip's."""
    return max(body_radius, UPSAMPLE_TAPS["bicubic"] if bicubic_skip else 0)


#: Input centre of the networks that subtract one: the DIV2K mean colour of EDSR and SPAN, and its
#: BT.601 Y (studio range) for Y models.
RGB_MEAN = (0.4488, 0.4371, 0.4040)
Y_MEAN = (0.4386,)


def mean_buffer(image_channels: int) -> torch.Tensor:
    """(1, C, 1, 1) input mean for a network on 1 (Y) or 3 (RGB) channels."""
    return torch.tensor(Y_MEAN if image_channels == 1 else RGB_MEAN).view(1, -1, 1, 1)


def check_channels(model_name: str, channels: Any) -> int:
    """The channel count of "Y" (1) or "RGB" (3); anything else -> ModelError."""
    if channels not in ("Y", "RGB"):
        raise ModelError(f"model '{model_name}': channels must be \"Y\" or \"RGB\", got {channels!r}")
    return 1 if channels == "Y" else 3


def pixel_shuffle_steps(scale: int) -> list[int]:
    """The factors of a pixel-shuffle upsampler: x2 steps for powers of two, else one step.

    Each step is one 3x3 convolution, so its length is also the upsampler's receptive field in
    LR pixels (later steps run at a higher resolution and see less of the LR image).
    """
    return [2] * int(math.log2(scale)) if scale & (scale - 1) == 0 else [scale]


class PixelShuffleUpsampler(nn.Sequential):
    """(N, F, h, w) -> (N, F, scale*h, scale*w): conv to F*r*r channels + pixel shuffle, per step.

    Scale 4 (and 8) is built of x2 steps, as EDSR and SRResNet do; 2 and 3 take one step.
    `activation` (a module factory) follows each shuffle where the paper has one (SRResNet).
    """

    def __init__(self, num_features: int, scale: int, activation: Callable[[], nn.Module] | None = None) -> None:
        layers: list[nn.Module] = []
        for factor in pixel_shuffle_steps(scale):
            layers.append(nn.Conv2d(num_features, num_features * factor * factor, 3, padding=1))
            layers.append(nn.PixelShuffle(factor))
            if activation is not None:
                layers.append(activation())
        super().__init__(*layers)


def require_positive_int(model_name: str, name: str, value: Any) -> int:
    """`value` if it is an int >= 1 (bools excluded), else `ModelError` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ModelError(f"model '{model_name}': {name} must be a positive integer, got {value!r}")
    return int(value)


def require_bool(model_name: str, name: str, value: Any) -> bool:
    """`value` if it is a real bool; a string such as "false" from a config file is an error."""
    if not isinstance(value, bool):
        raise ModelError(f"model '{model_name}': {name} must be true or false, got {value!r}")
    return value


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
