"""A Y network on colour: as superres runs one on an RGB image, and turned into an RGB network.

`upscale_rgb_with_y` is the one definition of how a Y network upscales RGB (the network on the
BT.601 Y, Cb and Cr by MATLAB's bicubic, back to RGB): the upscale pipeline calls it tile by tile,
and `YNetworkOnRgb` wraps it as a module, which `superres export --rgb` writes as a 3-channel ONNX
graph with the colour conversion inside.

A trained Y-channel SPAN turned into an RGB one that starts from the same luminance detail.

The shipped SPANs see and make the BT.601 Y channel only. A real-world model must see colour (JPEG's
chroma blocks and colour noise live outside Y) and make colour, but a colour network trained from
scratch on this CPU would need days to learn what the Y bodies already know. `span_y_to_rgb` builds
the RGB network whose first convolution computes, from RGB, what the Y network's first convolution
computed from the Y of that RGB (Y is linear in RGB: `y = 16/255 + a . rgb`, MATLAB's constants),
and whose upsampler adds to each of R, G and B the Y residual divided by `sum(a)` (= 219/255), so
that the Y of its output is the Y network's output and the chroma is bicubic's. Everything between
is copied unchanged. The two agree exactly away from the border; at the border they differ
slightly, because the RGB network pads zeros around centred RGB, not around centred Y.
Training then teaches the network what only colour shows.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from superres.errors import ModelError
from superres.models.blocks import IMAGE_RANGE, RGB_MEAN, Y_MEAN
from superres.models.reparam import fuse_reparameterizable
from superres.ops.color import Y_FROM_RGB, Y_OFFSET, rgb_to_ycbcr_tensor, ycbcr_to_rgb_tensor
from superres.ops.resize import imresize_tensor

#: LR pixels each side that the bicubic chroma reads: the least context a Y network on RGB needs.
CHROMA_CONTEXT = 2


def upscale_rgb_with_y(
    network: Callable[[torch.Tensor], torch.Tensor], rgb: torch.Tensor, scale: int
) -> torch.Tensor:
    """RGB (N, 3, h, w) in [0, 1] upscaled with a Y network: `network` on the BT.601 Y, Cb and Cr
    by MATLAB's bicubic (the integer-scale path, which traces to plain ONNX operators), back to
    RGB. Not clipped: the caller clips where it quantises."""
    ycbcr = rgb_to_ycbcr_tensor(rgb)
    y_sr = network(ycbcr[:, :1])
    chroma_sr = imresize_tensor(ycbcr[:, 1:], scale)
    return ycbcr_to_rgb_tensor(torch.cat([y_sr, chroma_sr], dim=1))


class YNetworkOnRgb(nn.Module):
    """A Y network as an RGB model, (N, 3, h, w) -> (N, 3, scale*h, scale*w): `upscale_rgb_with_y`.

    Only a module (for export and tests): its card stays the Y network's (`network.info`), so that
    nothing mistakes it for a network trained on RGB.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        if network.info.channels_for(getattr(network, "model_kwargs", {})) != "Y":
            raise ModelError(
                f"{network.info.name} already works on RGB; only a Y network needs the colour wrapper"
            )
        self.network = network
        self.scale = int(network.scale)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return upscale_rgb_with_y(self.network, rgb, self.scale)


def span_y_to_rgb(model: nn.Module) -> nn.Module:
    """An RGB SPAN (plain 3x3 convolutions) whose Y output is `model`'s, chroma bicubic."""
    # SPAN's own hook (`SPAN_INFO.to_rgb`): the layer names below are SPAN's.
    if model.info.name != "span" or model.model_kwargs["channels"] != "Y":
        raise ModelError("only a Y-channel span network can be turned into an RGB one")
    source = fuse_reparameterizable(copy.deepcopy(model)).float().cpu()
    kwargs = {**model.model_kwargs, "channels": "RGB", "reparam_gain": 0}
    target = type(model)(model.scale, **kwargs)
    luma = torch.tensor(Y_FROM_RGB, dtype=torch.float64)  # a: y = 16/255 + a . rgb
    old = dict(_convolutions(source))
    with torch.no_grad():
        for name, conv in _convolutions(target):
            if name == "first.fused":
                _first_from_y(conv, old[name], luma)
            elif name == "upsample.0":
                _upsampler_from_y(conv, old[name], float(luma.sum()))
            else:
                conv.weight.copy_(old[name].weight)
                conv.bias.copy_(old[name].bias)
    return target.eval()


def _convolutions(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _first_from_y(new: nn.Conv2d, old: nn.Conv2d, luma: torch.Tensor) -> None:
    # The Y network reads (y - Y_MEAN) * R = sum_c a_c (rgb_c - m_c) R + (16/255 + a.m - Y_MEAN) R.
    new.weight.copy_(old.weight.double() * luma.view(1, 3, 1, 1))
    offset = (Y_OFFSET + float(luma @ torch.tensor(RGB_MEAN, dtype=torch.float64)) - Y_MEAN[0]) * IMAGE_RANGE
    new.bias.copy_(old.bias.double() + offset * old.weight.double().sum(dim=(1, 2, 3)))


def _upsampler_from_y(new: nn.Conv2d, old: nn.Conv2d, luma_sum: float) -> None:
    # Pixel shuffle reads channel c * s^2 + phase as colour c: each colour gets the Y phases,
    # divided by sum(a) so that the Y of the added residual is the Y network's residual.
    phases = old.out_channels
    for colour in range(3):
        new.weight[colour * phases : (colour + 1) * phases] = old.weight / luma_sum
        new.bias[colour * phases : (colour + 1) * phases] = old.bias / luma_sum
