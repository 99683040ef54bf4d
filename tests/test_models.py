"""Tests for `superres.models`: the registry, the model contract and each network's architecture."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from superres.errors import ModelError
from superres.models import create_model, get_model_info, list_models
from superres.resize import imresize_tensor

MODEL_SCALES = [(name, scale) for name in list_models() for scale in get_model_info(name).scales]
TRAINABLE = [name for name in list_models() if name != "bicubic"]
# Narrow networks for the tests whose result does not depend on the width.
NARROW_KWARGS = {
    "bicubic": {},
    "srcnn": {"num_features": (8, 4)},
    "srcnn-tutorial": {"num_features": (8, 4)},
    "rednet": {"num_features": 8},
}


def _channels(name: str) -> int:
    return 1 if get_model_info(name).channels == "Y" else 3


def _lr_batch(name: str, height: int = 7, width: int = 9, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, _channels(name), height, width, generator=generator)


def _parameter_count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.fixture(autouse=True)
def _seeded() -> None:
    # Random initialisation must not make a test flaky.
    torch.manual_seed(1234)


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize(("name", "scale"), MODEL_SCALES)
def test_output_has_contract_shape(name: str, scale: int) -> None:
    model = create_model(name, scale).eval()
    lr = _lr_batch(name)
    with torch.no_grad():
        sr = model(lr)
    assert sr.shape == (2, _channels(name), scale * 7, scale * 9)
    assert sr.dtype == torch.float32
    assert torch.isfinite(sr).all()


@pytest.mark.parametrize(("name", "scale"), MODEL_SCALES)
def test_model_carries_scale_info_and_kwargs(name: str, scale: int) -> None:
    model = create_model(name, scale)
    assert model.scale == scale
    assert model.info is get_model_info(name)
    # model_kwargs survive the JSON of a checkpoint header and rebuild the same architecture.
    kwargs = json.loads(json.dumps(model.model_kwargs))
    rebuilt = create_model(name, scale, **kwargs)
    assert rebuilt.model_kwargs == model.model_kwargs
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    assert {key: value.shape for key, value in rebuilt.state_dict().items()} == shapes


@pytest.mark.parametrize(("name", "scale"), [item for item in MODEL_SCALES if item[0] in TRAINABLE])
def test_gradients_reach_every_parameter(name: str, scale: int) -> None:
    model = create_model(name, scale, **NARROW_KWARGS[name])
    sr = model(_lr_batch(name))
    target = torch.rand_like(sr)
    F.mse_loss(sr, target).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


def test_bicubic_has_no_parameters() -> None:
    assert _parameter_count(create_model("bicubic", 2)) == 0


@pytest.mark.parametrize("name", list_models())
def test_eval_mode_is_deterministic(name: str) -> None:
    model = create_model(name, 3, **NARROW_KWARGS[name]).eval()
    lr = _lr_batch(name)
    with torch.no_grad():
        assert torch.equal(model(lr), model(lr))


@pytest.mark.parametrize("name", list_models())
def test_channels_last_gives_the_same_output(name: str) -> None:
    model = create_model(name, 2).eval()
    lr = _lr_batch(name)
    with torch.no_grad():
        expected = model(lr)
        model = model.to(memory_format=torch.channels_last)
        actual = model(lr.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- the registry


def test_registered_names() -> None:
    assert list_models() == ["bicubic", "srcnn", "srcnn-tutorial", "rednet"]


@pytest.mark.parametrize("name", list_models())
def test_model_info_is_a_consistent_frozen_card(name: str) -> None:
    info = get_model_info(name)
    assert info.name == name
    assert info.channels in ("Y", "RGB")
    assert info.degradation in ("bicubic", "bilinear")
    assert info.pre_upsample is True
    assert {2, 3, 4} <= set(info.scales)
    assert info.paper and info.deviations
    assert info.receptive_field == info.receptive_field_for()
    assert info.receptive_field == max(info.receptive_field_for(scale) for scale in info.scales)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.channels = "RGB"  # type: ignore[misc]


def test_unknown_model_name_is_a_model_error() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'esrgan'; available: bicubic, srcnn"):
        create_model("esrgan", 4)
    with pytest.raises(ModelError, match="unknown model 'esrgan'"):
        get_model_info("esrgan")


@pytest.mark.parametrize("scale", [1, 5, 2.0, "2", True])
def test_unsupported_scale_is_a_model_error(scale: object) -> None:
    expected = rf"model 'srcnn' does not support scale {scale!r}; supported: 2, 3, 4"
    with pytest.raises(ModelError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        create_model("srcnn", scale)  # type: ignore[arg-type]


def test_bicubic_accepts_scales_up_to_8() -> None:
    assert get_model_info("bicubic").scales == (2, 3, 4, 5, 6, 7, 8)
    with pytest.raises(ModelError, match="scale 9"):
        create_model("bicubic", 9)


def test_unknown_kwarg_is_a_model_error() -> None:
    with pytest.raises(ModelError, match=r"model 'rednet' got unknown argument\(s\) depth"):
        create_model("rednet", 2, depth=30)
    with pytest.raises(ModelError, match="model 'bicubic' got unknown argument"):
        create_model("bicubic", 2, num_layers=3)
    with pytest.raises(ModelError, match="unknown argument"):
        get_model_info("rednet").receptive_field_for(2, depth=30)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("rednet", {"num_layers": 0}, "num_layers must be a positive integer, got 0"),
        ("rednet", {"num_features": 2.5}, "num_features must be a positive integer, got 2.5"),
        ("srcnn", {"kernel_sizes": (9, 4, 5)}, "kernel_sizes must all be odd"),
        ("srcnn", {"kernel_sizes": (9, 5)}, "kernel_sizes must be a sequence of 3 integers"),
        ("srcnn-tutorial", {"num_features": 64}, "num_features must be a sequence of 2 integers"),
    ],
)
def test_bad_kwarg_value_is_a_model_error(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=f"model '{name}': {message}".replace("(", r"\(")):
        create_model(name, 2, **kwargs)


# --------------------------------------------------------------------------- each network


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("srcnn", {}, 57_281),  # 9-5-5
        ("srcnn", {"kernel_sizes": (9, 1, 5)}, 8_129),
        ("srcnn-tutorial", {}, 21_123),
        ("rednet", {}, 665_921),  # RED20
        ("rednet", {"num_layers": 15}, 1_035_201),  # RED30
    ],
)
def test_parameter_counts(name: str, kwargs: dict, expected: int) -> None:
    assert _parameter_count(create_model(name, 2, **kwargs)) == expected


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_bicubic_model_is_imresize_tensor(scale: int) -> None:
    lr = _lr_batch("bicubic")
    with torch.no_grad():
        assert torch.equal(create_model("bicubic", scale)(lr), imresize_tensor(lr, scale))


def test_bicubic_works_on_any_channel_count() -> None:
    lr = torch.rand(1, 4, 5, 6)
    assert create_model("bicubic", 2)(lr).shape == (1, 4, 10, 12)


def test_srcnn_tutorial_output_is_non_negative_and_bilinear_based() -> None:
    model = create_model("srcnn-tutorial", 2)
    assert model.upsample_kernel == "bilinear"
    with torch.no_grad():
        assert (model(_lr_batch("srcnn-tutorial")) >= 0).all()


@pytest.mark.parametrize("num_layers", [1, 2, 3, 5, 15])
def test_rednet_works_at_any_depth(num_layers: int) -> None:
    model = create_model("rednet", 2, num_layers=num_layers, num_features=8)
    sr = model(_lr_batch("rednet"))
    assert sr.shape == (2, 1, 14, 18)
    sr.sum().backward()
    assert all(parameter.grad is not None for parameter in model.parameters())
    assert len(model.encoder) == len(model.decoder) == num_layers


def test_rednet_weight_names_are_stable() -> None:
    model = create_model("rednet", 2, num_layers=3, num_features=4)
    assert list(model.state_dict()) == [
        f"{part}.{index}.{kind}"
        for part in ("encoder", "decoder")
        for index in range(3)
        for kind in ("weight", "bias")
    ]
    assert all(isinstance(layer, torch.nn.Conv2d) for layer in model.encoder)
    assert all(isinstance(layer, torch.nn.ConvTranspose2d) for layer in model.decoder)


def test_rednet_wiring_matches_a_hand_written_red8() -> None:
    """num_layers=4: skips from encoder layers 2 and 4 into decoder layers 3 and 1."""
    model = create_model("rednet", 2, num_layers=4, num_features=6).eval()
    lr = _lr_batch("rednet")
    enc, dec = model.encoder, model.decoder
    with torch.no_grad():
        upscaled = imresize_tensor(lr, 2)
        e1 = F.relu(enc[0](upscaled))
        e2 = F.relu(enc[1](e1))
        e3 = F.relu(enc[2](e2))
        e4 = F.relu(enc[3](e3))
        d1 = F.relu(dec[0](e4) + e4)
        d2 = F.relu(dec[1](d1))
        d3 = F.relu(dec[2](d2) + e2)
        expected = upscaled + dec[3](d3)
        torch.testing.assert_close(model(lr), expected)


@pytest.mark.parametrize("num_layers", [10, 15])
def test_untrained_rednet_starts_near_bicubic(num_layers: int) -> None:
    model = create_model("rednet", 3, num_layers=num_layers).eval()
    lr = _lr_batch("rednet", 12, 12)
    with torch.no_grad():
        difference = (model(lr) - imresize_tensor(lr, 3)).abs().mean()
    assert difference < 0.05


# --------------------------------------------------------------------------- receptive field


def test_receptive_field_values() -> None:
    # ceil(conv radius in HR pixels / scale) + the upscale's taps (2 bicubic, 1 bilinear).
    assert get_model_info("bicubic").receptive_field == 2
    assert get_model_info("srcnn").receptive_field == math.ceil(8 / 2) + 2
    assert get_model_info("srcnn").receptive_field_for(4, kernel_sizes=(9, 1, 5)) == 2 + 2
    assert get_model_info("srcnn-tutorial").receptive_field == math.ceil(3 / 2) + 1
    assert get_model_info("rednet").receptive_field == 10 + 2
    assert get_model_info("rednet").receptive_field_for(num_layers=15) == 15 + 2
    assert get_model_info("rednet").receptive_field_for(3, num_layers=15) == 10 + 2


def _measured_reach(model: torch.nn.Module, scale: int, size: int, channels: int) -> int:
    """LR pixels between a perturbed LR pixel and the farthest output pixel it changes."""
    generator = torch.Generator().manual_seed(5)
    lr = torch.rand(1, channels, size, size, generator=generator, dtype=torch.float64)
    centre = size // 2
    perturbed = lr.clone()
    perturbed[:, :, centre, centre] += 1.0
    with torch.no_grad():
        change = (model(perturbed) - model(lr)).abs().amax(dim=(0, 1))
    rows, columns = torch.nonzero(change > 1e-12, as_tuple=True)
    # An SR pixel belongs to the LR pixel it lies in: index // scale.
    return int(max((rows // scale - centre).abs().max(), (columns // scale - centre).abs().max()))


@pytest.mark.parametrize(("name", "scale"), MODEL_SCALES)
def test_receptive_field_bounds_the_measured_reach(name: str, scale: int) -> None:
    """What tiling relies on: no output pixel depends on LR pixels beyond the receptive field."""
    kwargs = NARROW_KWARGS[name]
    model = create_model(name, scale, **kwargs).double().eval()
    receptive_field = model.info.receptive_field_for(scale, **kwargs)
    reach = _measured_reach(model, scale, size=2 * receptive_field + 9, channels=_channels(name))
    # The formula rounds up, so it is tight or one pixel generous, never short.
    assert receptive_field - 1 <= reach <= receptive_field
