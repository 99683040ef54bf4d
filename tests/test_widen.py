"""Tests for `superres.models.widen`: a wider SPAN that starts with the trained one's output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from superres.errors import ModelError
from superres.models import create_model
from superres.models.widen import widen_span

SMALL_SPAN = {"num_features": 6, "num_blocks": 2, "bicubic_skip": True, "channels": "Y"}


def _trained_like_span(scale: int, reparam_gain: int) -> torch.nn.Module:
    """A span whose every weight is random and sizeable, as after training (the upsampler too)."""
    torch.manual_seed(scale + reparam_gain)
    model = create_model("span", scale, **SMALL_SPAN, reparam_gain=reparam_gain).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize(("scale", "reparam_gain"), [(2, 0), (3, 2), (4, 0)])
def test_widened_span_gives_the_trained_output(scale: int, reparam_gain: int) -> None:
    trained = _trained_like_span(scale, reparam_gain)
    before = {name: tensor.clone() for name, tensor in trained.state_dict().items()}
    widened = widen_span(trained, 10, seed=3)
    assert widened.model_kwargs == {**trained.model_kwargs, "num_features": 10, "reparam_gain": 0}
    lr = torch.rand(2, 1, 13, 11)
    with torch.no_grad():
        torch.testing.assert_close(widened(lr), trained(lr), rtol=0, atol=1e-5)
    for name, tensor in trained.state_dict().items():  # the source is left as it was
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0)


def test_new_channels_are_live_and_learn_from_the_first_step() -> None:
    widened = widen_span(_trained_like_span(2, 0), 9, seed=0).train()
    upsampler = widened.upsample[0]
    assert upsampler.weight[:, 6:].abs().sum() == 0  # they reach the output through zero weights...
    F.mse_loss(widened(torch.rand(1, 1, 12, 12)), torch.rand(1, 1, 24, 24)).backward()
    assert upsampler.weight.grad[:, 6:].abs().sum() > 0  # ...which the first step moves


def test_widening_refuses_a_narrower_width_or_another_network() -> None:
    trained = _trained_like_span(2, 0)
    for width in (6, 4, 6.5, True):
        with pytest.raises(ModelError, match="more than 6 features"):
            widen_span(trained, width)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="span networks"):
        widen_span(create_model("fsrcnn", 2), 64)  # type: ignore[arg-type]
