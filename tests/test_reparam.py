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

from superres.errors import ModelError
from superres.models import create_model, get_model_info, list_models
from superres.models.reparam import (
    RepConv,
    RepConv3x3,
    copy_between_forms,
    fuse_reparameterizable,
    has_branches,
    without_branches,
)

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
        branches = _explicit_branches(block, x)
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


def _explicit_branches(block: RepConv, x: torch.Tensor) -> torch.Tensor:
    """What the branches compute run one by one (the training form before online folding)."""
    return block.reduce(block.body(block.expand(x))) + block.shortcut(x)


@pytest.mark.parametrize(("kernel_size", "gain"), [(1, 2), (3, 1), (3, 2), (5, 2), (5, 4)])
def test_the_online_fold_is_the_branches_in_output_and_gradients(kernel_size: int, gain: int) -> None:
    torch.manual_seed(kernel_size * 10 + gain)
    block = RepConv(3, 4, kernel_size, gain=gain).double()
    x = torch.rand(2, 3, 9, 7, dtype=torch.float64)
    target = torch.rand(2, 4, 9, 7, dtype=torch.float64)
    results = []
    for forward in (block, lambda inputs: _explicit_branches(block, inputs)):
        block.zero_grad()
        output = forward(x)
        ((output - target) ** 2).sum().backward()
        results.append((output.detach(), {name: p.grad.clone() for name, p in block.named_parameters()}))
    (online, online_grads), (explicit, explicit_grads) = results
    torch.testing.assert_close(online, explicit)  # the whole image: borders included
    for name, grad in explicit_grads.items():
        torch.testing.assert_close(online_grads[name], grad, msg=name)


def test_start_from_plain_is_exact_and_every_branch_can_learn() -> None:
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(3, 5, 5, padding=2).double()
    block = RepConv(3, 5, 5, gain=2).double()
    block.start_from_plain(plain.weight, plain.bias)
    x = torch.rand(2, 3, 8, 9, dtype=torch.float64)
    torch.testing.assert_close(block(x), plain(x))
    block(x).square().sum().backward()
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    # The parts that start at zero (the reduction's untrained inputs, the shortcut) have gradients.
    assert block.reduce.weight.grad[:, 5:].abs().sum() > 0
    assert block.shortcut.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["fsrcnn", "espcn"])
def test_a_network_moves_between_its_plain_and_branched_forms_exactly(name: str) -> None:
    torch.manual_seed(1)
    kwargs = {**get_model_info(name).test_kwargs, "reparam_gain": 0}
    plain = create_model(name, 3, **kwargs).eval()
    branched = create_model(name, 3, **{**kwargs, "reparam_gain": 2}).eval()
    copy_between_forms(plain, branched)
    lr = torch.rand(1, 1, 11, 9)
    with torch.no_grad():
        torch.testing.assert_close(branched(lr), plain(lr), rtol=0, atol=TOLERANCE)
        for parameter in branched.parameters():  # as after training: every branch weight moved
            parameter.add_(0.05 * torch.randn_like(parameter))
        shipped = without_branches(branched)
        torch.testing.assert_close(shipped(lr), branched(lr), rtol=0, atol=TOLERANCE)
    # The shipped form is the plain network: the same names as one built without branches.
    assert shipped.model_kwargs == plain.model_kwargs
    assert list(shipped.state_dict()) == list(plain.state_dict())
    with pytest.raises(ModelError, match="one of the two networks must be without branches"):
        copy_between_forms(branched, copy.deepcopy(branched))


def test_an_even_kernel_or_an_unknown_gain_is_refused() -> None:
    with pytest.raises(ValueError, match="odd kernel"):
        RepConv(2, 2, 4)
    with pytest.raises(ModelError, match="reparam_gain must be 0"):
        create_model("fsrcnn", 2, reparam_gain=5)
