"""Tests for `superres.inference.fast.optimize_for_inference` on every registered model, and its rewrites.

Each model is built at its card's `test_kwargs` and given random weights (every parameter and
batch-norm statistic, so that folding batch norm or branches has something to get wrong), then
its fast copy is compared with the plain model on odd-sized inputs at every scale.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from superres.inference import fast
from superres.models import create_model, get_model_info, list_models
from superres.models.reparam import has_branches

TOLERANCE = 1e-4

CASES = [
    (name, scale)
    for name in list_models()
    for scale in (2, 3, 4)
    if scale in get_model_info(name).scales
]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every float parameter and buffer of `model` redrawn, keeping activations of order one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if not tensor.is_floating_point() or (name == "mean" and tensor.dim() == 4):
                continue  # the input-centring mean buffers keep their meaning
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(0.5 + noise.abs())
            elif tensor.dim() >= 2:  # a kernel: unit gain over its fan-in
                tensor.copy_(noise / math.sqrt(tensor[0].numel()))
            else:  # biases, PReLU slopes, batch-norm affine and running means
                tensor.copy_(0.2 * noise)
    return model


def random_model(name: str, scale: int, **overrides) -> nn.Module:
    torch.manual_seed(0)
    info = get_model_info(name)
    return randomize(create_model(name, scale, **{**info.test_kwargs, **overrides}))


def image_channels(model: nn.Module) -> int:
    return 1 if model.info.channels_for(model.model_kwargs) == "Y" else 3


def reference(model: nn.Module, lr: torch.Tensor) -> torch.Tensor:
    frozen = copy.deepcopy(model).eval()
    with torch.no_grad():
        return frozen(lr)


def snapshot(model: nn.Module) -> tuple:
    """What the fast path must not change: structure, mode, gradients flags and every tensor."""
    state = {key: value.clone() for key, value in model.state_dict().items()}
    modules = [(name, type(module), module.training) for name, module in model.named_modules()]
    parameters = [(name, id(p), p.requires_grad) for name, p in model.named_parameters()]
    return state, modules, parameters


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    state, modules, parameters = snapshot(model)
    assert state.keys() == before[0].keys()
    for key, value in state.items():
        assert torch.equal(value, before[0][key]), key
        assert value.is_contiguous(), key  # not moved to channels-last under the caller
    assert modules == before[1]
    assert parameters == before[2]


@pytest.mark.parametrize("name, scale", CASES)
def test_fast_copy_equals_the_model_and_leaves_it_alone(name: str, scale: int) -> None:
    model = random_model(name, scale).train()  # training mode: the copy must still run in eval
    before = snapshot(model)
    branched = has_branches(model)
    fast_model = fast.optimize_for_inference(model)
    lr = torch.rand(2, image_channels(model), 11, 13, generator=torch.Generator().manual_seed(1))
    expected = reference(model, lr)
    actual = fast_model(lr)
    assert actual.shape == (2, image_channels(model), 11 * scale, 13 * scale)
    assert actual.is_contiguous() and not actual.requires_grad
    assert (actual - expected).abs().max().item() <= TOLERANCE
    assert torch.equal(fast_model(lr), actual)  # a second call computes the same
    assert model.training and has_branches(model) == branched
    assert_unchanged(model, before)
    assert fast_model.scale == scale and fast_model.info == model.info


@pytest.mark.parametrize("name", [name for name in list_models() if get_model_info(name).needs_weights])
def test_fast_copy_has_no_training_time_structure_left(name: str) -> None:
    fast_model = fast.optimize_for_inference(random_model(name, 2))
    modules = list(fast_model.model.modules())
    assert not has_branches(fast_model.model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in modules)
    assert not any(type(m) is nn.ConvTranspose2d for m in modules)  # all computed as convs
    assert not any(p.requires_grad for p in fast_model.parameters())
    assert all(not m.training for m in modules)


def test_a_constant_multiply_is_folded_into_a_copy_of_the_conv() -> None:
    model = random_model("edsr", 2, res_scale=0.5).eval()
    before = snapshot(model)
    fast_model = fast.optimize_for_inference(model)
    lr = torch.rand(1, 3, 9, 7)
    assert (fast_model(lr) - reference(model, lr)).abs().max().item() <= TOLERANCE
    assert_unchanged(model, before)
    if fast.pointwise_convolutions_work():  # traced and rewritten: no multiply left in the graph
        targets = [getattr(node.target, "__name__", node.target) for node in fast_model.model.graph.nodes]
        assert "mul" not in targets


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("kernel, padding", [(9, 4), (3, 1), (5, 2), (4, 1)])
def test_strided_transposed_conv_equals_conv_plus_pixel_shuffle(
    scale: int, kernel: int, padding: int
) -> None:
    torch.manual_seed(scale)
    output_padding = scale - (kernel - 2 * padding)
    if not 0 <= output_padding < scale:
        pytest.skip("no output padding makes this deconv's output exactly scale x its input")
    deconv = nn.ConvTranspose2d(5, 2, kernel, stride=scale, padding=padding, output_padding=output_padding)
    assert fast.SubpixelConvTranspose2d.can_replace(deconv)
    x = torch.randn(2, 5, 7, 10)
    assert (fast.SubpixelConvTranspose2d(deconv)(x) - deconv(x)).abs().max().item() <= 1e-5


def test_deconvs_it_cannot_compute_are_left_as_they_are() -> None:
    sizes_differ = nn.ConvTranspose2d(2, 2, 3, stride=2)  # output 2n + 1
    grouped = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, groups=2)
    model = nn.Sequential(sizes_differ, grouped)
    assert fast.replace_strided_transposed_convs(model) == 0


def test_batch_norm_after_a_conv_is_folded_exactly() -> None:
    model = randomize(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())).eval()
    folded = copy.deepcopy(model)
    assert fast.fold_batch_norms(folded) == 1
    assert isinstance(folded[1], nn.Identity)
    x = torch.randn(1, 2, 6, 5)
    assert (folded(x) - model(x)).abs().max().item() <= 1e-5
    assert (
        fast.fold_batch_norms(randomize(nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4)))) == 0
    )  # training


def test_an_untraceable_model_still_gets_folded_and_channels_last() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.body(x))
            return y if x.sum() > 0 else -y  # control flow on values: torch.fx cannot trace it

    model = randomize(DataDependent()).eval()
    fast_model = fast.optimize_for_inference(model)
    assert isinstance(fast_model.model, DataDependent)  # not traced, yet optimised
    assert isinstance(fast_model.model.body[1], nn.Identity)
    assert fast_model.model.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(1, 1, 7, 9)
    assert (fast_model(x) - reference(model, x)).abs().max().item() <= 1e-5
