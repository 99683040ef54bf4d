"""A strided transposed convolution computed in LR space: one conv to out*s*s channels + a shuffle.

Output pixel s*q + r of a stride-s transposed conv reads input pixels q - t through kernel tap
s*t + r + padding. For each phase r that is an ordinary correlation at LR resolution, so all s*s
phases together are one LR conv whose output channels a pixel shuffle interleaves. Same outputs
(up to float rounding), but oneDNN's dense convolution and its backward pass run much faster
than its strided deconvolution: FSRCNN's 9x9 deconv 2.3x in inference, a whole FSRCNN training
step 1.1-1.3x.

- `subpixel_conv_weight(weight, stride, padding)`: the LR conv's weight, gathered from the
  deconv's, differentiably (so a network can train through it).
- `LRSpaceConvTranspose2d`: an `nn.ConvTranspose2d` (same parameters, same state-dict keys,
  same card arithmetic) whose forward is the LR conv + shuffle. FSRCNN's last layer; `as_plain()`
  gives the plain layer back (ONNX export writes that).
- `computes_in_lr_space(module)`: whether a transposed conv's output is exactly stride x its
  input, the one case the rewrite covers.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


def subpixel_radius(kernel: int, stride: int, padding: int) -> int:
    """Radius R of the LR kernel (2R + 1 taps) that covers every phase of a strided deconv."""
    return max(
        abs(t)
        for phase in range(stride)
        for t in range(-kernel, kernel + 1)
        if 0 <= stride * t + phase + padding < kernel
    )


@functools.cache
def _tap_index(kernel: int, stride: int, padding: int) -> torch.Tensor:
    """(s, s, taps, taps): which flattened deconv tap each LR-conv tap of each phase reads;
    `kernel * kernel` (one past the last tap) where it reads none and the weight is zero."""
    radius = subpixel_radius(kernel, stride, padding)
    taps = 2 * radius + 1
    index = torch.full((stride, stride, taps, taps), kernel * kernel, dtype=torch.long)
    for phase_y in range(stride):
        for phase_x in range(stride):
            for u_y in range(-radius, radius + 1):
                for u_x in range(-radius, radius + 1):
                    k_y, k_x = -stride * u_y + phase_y + padding, -stride * u_x + phase_x + padding
                    if 0 <= k_y < kernel and 0 <= k_x < kernel:
                        index[phase_y, phase_x, u_y + radius, u_x + radius] = k_y * kernel + k_x
    return index


def subpixel_conv_weight(weight: torch.Tensor, stride: int, padding: int) -> tuple[torch.Tensor, int]:
    """(out*s*s, in, taps, taps) LR-conv weight for a deconv weight (in, out, k, k), and its padding.

    Output channel c*s*s + r_y*s + r_x is phase (r_y, r_x) of deconv output channel c, the order
    `F.pixel_shuffle` reads. Built by indexing, so gradients flow back to `weight`.
    """
    in_channels, out_channels, kernel, _ = weight.shape
    index = _tap_index(kernel, stride, padding).to(weight.device)
    flat = torch.cat([weight.reshape(in_channels, out_channels, -1), weight.new_zeros(in_channels, out_channels, 1)], 2)
    gathered = flat[:, :, index]  # (in, out, s, s, taps, taps)
    taps = index.shape[-1]
    conv_weight = gathered.permute(1, 2, 3, 0, 4, 5).reshape(out_channels * stride * stride, in_channels, taps, taps)
    return conv_weight, taps // 2


def computes_in_lr_space(module: nn.Module) -> bool:
    """True for a square, ungrouped, undilated strided deconv whose output is stride x its input."""
    if not isinstance(module, nn.ConvTranspose2d) or module.padding_mode != "zeros":
        return False
    (s_y, s_x), (k_y, k_x), (p_y, p_x) = module.stride, module.kernel_size, module.padding
    square = s_y == s_x > 1 and k_y == k_x and p_y == p_x and module.output_padding[0] == module.output_padding[1]
    # Output (n - 1) s - 2p + k + output_padding equals n s exactly when this holds.
    exact = k_y - 2 * p_y + module.output_padding[0] == s_y and 0 <= module.output_padding[0] < s_y
    return square and exact and module.groups == 1 and module.dilation == (1, 1)


class LRSpaceConvTranspose2d(nn.ConvTranspose2d):
    """A stride-s `nn.ConvTranspose2d` with output exactly s x input, run as LR conv + shuffle.

    Construct it as the deconv it replaces (`output_padding = stride - (kernel - 2 * padding)`);
    its parameters and state-dict keys are that deconv's, so checkpoints of either load into both.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int, padding: int) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            output_padding=stride - (kernel_size - 2 * padding),
        )
        if not computes_in_lr_space(self):
            raise ValueError(
                f"a {kernel_size}x{kernel_size} deconv with stride {stride} and padding {padding} "
                "cannot give exactly stride x its input"
            )

    def as_plain(self) -> nn.ConvTranspose2d:
        """The plain `nn.ConvTranspose2d` this layer computes, with a copy of its weights."""
        plain = nn.ConvTranspose2d(
            self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
            padding=self.padding, output_padding=self.output_padding, bias=self.bias is not None,
        )
        plain.load_state_dict(self.state_dict())
        return plain

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        stride = self.stride[0]
        weight, radius = subpixel_conv_weight(self.weight, stride, self.padding[0])
        bias = None if self.bias is None else self.bias.repeat_interleave(stride * stride)
        return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=radius), stride)
