"""Tests for `superres.models.reparam`: folding training-time branches into one convolution.

Every registered network whose test configuration holds branches (`has_branches`) is covered
without being named: folding must give the same output everywhere, borders included, at every
scale, and leave no branch behind.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from superres.models import create_model, get_model_info, list_models
from superres.models.reparam import RepConv3x3, fuse_reparameterizable, has_branches

TOLERANCE = 1e-5


def _test_model(name: str, scale: int) -> torch.nn.Module:
    return create_model(name, scale, **get_model_info(name).test_kwargs)


BRANCHED = [
    (name, scale)
    for name in list_models()
    for scale in (2, 3, 4)
    if scale in get_model_info(name).scales and has_branches(_test_model(name, scale))
]


def test_some_registered_network_has_branches() -> None:
    # Otherwise the parametrised test below would silently test nothing.
    assert BRANCHED


@pytest.mark.parametrize(("name", "scale"), BRANCHED)
def test_fusing_keeps_the_output_and_removes_every_branch(name: str, scale: int) -> None:
    torch.manual_seed(0)
    model = _test_model(name, scale).eval()
    info = model.info
    channels = 1 if info.channels_for(model.model_kwargs) == "Y" else 3
    lr = torch.rand(2, channels, 13, 11, generator=torch.Generator().manual_seed(1))  # odd sizes
    fused = fuse_reparameterizable(copy.deepcopy(model))
    assert not has_branches(fused)
    assert has_branches(model)  # the copy was fused, not the original
    with torch.no_grad():
        expected, actual = model(lr), fused(lr)
    assert actual.shape == expected.shape
    # The whole image, so that the zero-padded border rows and columns are compared too.
    assert (actual - expected).abs().max().item() <= TOLERANCE
    parameters = sum(p.numel() for p in fused.parameters())
    assert parameters < sum(p.numel() for p in model.parameters())


def _affine_3x3_of(block: RepConv3x3) -> tuple[torch.Tensor, torch.Tensor]:
    """The (weight, bias) of the affine map `block` computes, probed with impulses.

    With one input channel set to 1 at the centre of a 5x5 zero image, the output at
    (centre + 1 - dy, centre + 1 - dx) is the kernel tap (dy, dx) plus the bias.
    """
    size, centre = 5, 2
    dtype = block.shortcut.weight.dtype
    with torch.no_grad():
        bias = block(torch.zeros(1, block.in_channels, size, size, dtype=dtype))[0, :, centre, centre]
        weight = torch.empty(block.out_channels, block.in_channels, 3, 3, dtype=dtype)
        for channel in range(block.in_channels):
            impulse = torch.zeros(1, block.in_channels, size, size, dtype=dtype)
            impulse[0, channel, centre, centre] = 1.0
            response = block(impulse)[0]
            for dy in range(3):
                for dx in range(3):
                    tap = response[:, centre + 1 - dy, centre + 1 - dx] - bias
                    weight[:, channel, dy, dx] = tap
    return weight, bias


@pytest.mark.parametrize("gain", [1, 2, 4])
def test_fused_weights_equal_the_branch_sum(gain: int) -> None:
    torch.manual_seed(gain)
    block = RepConv3x3(3, 5, gain=gain).double()
    weight, bias = block.fused_weights()
    probed_weight, probed_bias = _affine_3x3_of(block)
    torch.testing.assert_close(weight, probed_weight)
    torch.testing.assert_close(bias, probed_bias)
    x = torch.rand(2, 3, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        branches = block.reduce(block.body(block.expand(x))) + block.shortcut(x)
        torch.testing.assert_close(F.conv2d(x, weight, bias, padding=1), branches)
        block.fuse()
        torch.testing.assert_close(block(x), branches)
    assert block.is_fused and not has_branches(block)
    block.fuse()  # a second fold changes nothing
    assert torch.equal(block.fused_weights()[0], weight)


def test_gain_zero_has_no_branches() -> None:
    block = RepConv3x3(4, 6, gain=0)
    assert block.is_fused and not has_branches(block)
    assert [name for name, _ in block.named_parameters()] == ["fused.weight", "fused.bias"]
    weight, bias = block.fused_weights()
    assert torch.equal(weight, block.fused.weight) and torch.equal(bias, block.fused.bias)


def test_a_branchless_span_loads_the_weights_of_a_fused_one() -> None:
    """reparam_gain=0 trains the inference network itself: same names and shapes as a fold."""
    kwargs = dict(get_model_info("span").test_kwargs)
    fused = fuse_reparameterizable(create_model("span", 2, **{**kwargs, "reparam_gain": 2})).eval()
    plain = create_model("span", 2, **{**kwargs, "reparam_gain": 0}).eval()
    assert not has_branches(plain)
    plain.load_state_dict(fused.state_dict(), strict=True)
    lr = torch.rand(1, 1, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(plain(lr), fused(lr))
