"""Tests for `superres.models`: the registry, the model contract and each network's architecture.

The contract tests are generic: they run every registered network at scales 2, 3 and 4 with its
card's `test_kwargs` and read nothing but the `ModelInfo` card, so a network added to the registry
is covered without touching this file. The tests under "each network" pin one architecture each
(parameter counts against the papers, wiring, receptive-field formulas).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from superres.errors import ModelError
from superres.models import create_model, get_model_info, list_models
from superres.ops.resize import imresize_tensor

SCALES = (2, 3, 4)
MODEL_SCALES = [
    (name, scale) for name in list_models() for scale in SCALES if scale in get_model_info(name).scales
]


def _test_model(name: str, scale: int) -> nn.Module:
    """The card's small, fast configuration of `name` at `scale`."""
    return create_model(name, scale, **get_model_info(name).test_kwargs)


def _channels(name: str, kwargs: dict[str, Any] | None = None) -> int:
    info = get_model_info(name)
    return 1 if info.channels_for(info.test_kwargs if kwargs is None else kwargs) == "Y" else 3


def _lr_batch(channels: int, height: int = 7, width: int = 9, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, channels, height, width, generator=generator)


def _parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _conv_weight_count(model: nn.Module) -> int:
    """Convolution and deconvolution weights only: what papers count when they leave out biases."""
    convolutions = (nn.Conv2d, nn.ConvTranspose2d)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, convolutions))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    # Random initialisation must not make a test flaky.
    torch.manual_seed(1234)


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize(("name", "scale"), MODEL_SCALES)
def test_output_has_contract_shape_on_odd_sizes(name: str, scale: int) -> None:
    model = _test_model(name, scale).eval()
    channels = _channels(name, model.model_kwargs)
    lr = _lr_batch(channels, 7, 9)
    with torch.no_grad():
        sr = model(lr)
    assert sr.shape == (2, channels, scale * 7, scale * 9)
    assert sr.dtype == torch.float32
    assert torch.isfinite(sr).all()


@pytest.mark.parametrize(("name", "scale"), MODEL_SCALES)
def test_model_carries_scale_info_and_kwargs(name: str, scale: int) -> None:
    model = _test_model(name, scale)
    assert model.scale == scale
    assert model.info is get_model_info(name)
    assert model.model_kwargs == model.info.effective_kwargs(model.model_kwargs)  # complete


@pytest.mark.parametrize(("name", "scale"), MODEL_SCALES)
def test_model_kwargs_rebuild_an_identical_model(name: str, scale: int) -> None:
    torch.manual_seed(7)
    model = _test_model(name, scale).eval()
    # model_kwargs survive the JSON of a checkpoint header (tuples come back as lists).
    kwargs = json.loads(json.dumps(model.model_kwargs))
    torch.manual_seed(7)
    rebuilt = create_model(name, scale, **kwargs).eval()
    assert rebuilt.model_kwargs == model.model_kwargs
    expected = model.state_dict()
    assert list(rebuilt.state_dict()) == list(expected)
    for key, tensor in rebuilt.state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    lr = _lr_batch(_channels(name, kwargs))
    with torch.no_grad():
        assert torch.equal(rebuilt(lr), model(lr))


@pytest.mark.parametrize(("name", "scale"), MODEL_SCALES)
def test_gradients_reach_every_parameter(name: str, scale: int) -> None:
    model = _test_model(name, scale)
    parameters = dict(model.named_parameters())
    assert bool(parameters) == model.info.needs_weights  # only parameter-free models skip weights
    if not parameters:
        return  # bicubic: nothing to train, and no graph to run backward through
    sr = model(_lr_batch(_channels(name, model.model_kwargs)))
    F.mse_loss(sr, torch.rand_like(sr)).backward()
    for parameter_name, parameter in parameters.items():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", list_models())
def test_eval_mode_is_deterministic(name: str) -> None:
    model = _test_model(name, 3).eval()
    lr = _lr_batch(_channels(name))
    with torch.no_grad():
        assert torch.equal(model(lr), model(lr))


@pytest.mark.parametrize("name", list_models())
def test_channels_last_gives_the_same_output(name: str) -> None:
    model = _test_model(name, 2).eval()
    lr = _lr_batch(_channels(name))
    with torch.no_grad():
        expected = model(lr)
        model = model.to(memory_format=torch.channels_last)
        actual = model(lr.to(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_bicubic_has_no_parameters() -> None:
    assert _parameter_count(create_model("bicubic", 2)) == 0


# --------------------------------------------------------------------------- the registry


def test_registered_names() -> None:
    assert list_models() == [
        "bicubic", "srcnn", "srcnn-tutorial", "rednet", "fsrcnn-s", "fsrcnn", "espcn", "span", "edsr",
        "srresnet",
    ]


@pytest.mark.parametrize("name", list_models())
def test_card_has_everything(name: str) -> None:
    """What the pipelines and the generic tests read: all of it present and self-consistent."""
    info = get_model_info(name)
    assert info.name == name
    assert info.paper.strip() and info.deviations.strip()
    assert info.channels in ("Y", "RGB")
    assert info.degradation in ("bicubic", "bilinear")
    assert isinstance(info.pre_upsample, bool) and isinstance(info.needs_weights, bool)
    assert set(SCALES) <= set(info.scales) and tuple(sorted(set(info.scales))) == info.scales
    for kwargs in (info.test_kwargs, info.bench_kwargs, {}):
        effective = info.effective_kwargs(kwargs)  # no unknown names
        assert set(effective) == set(info.default_kwargs)
        assert info.channels_for(kwargs) in ("Y", "RGB")
        for scale in info.scales:
            assert info.receptive_field_for(scale, **kwargs) >= 0
            assert info.activation_values_per_lr_pixel(scale, kwargs) > 0
    assert info.channels_for() == info.channels
    assert info.receptive_field == info.receptive_field_for()  # the worst case over the scales
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.channels = "RGB"  # type: ignore[misc]


@pytest.mark.parametrize("name", list_models())
def test_card_receptive_field_bounds_every_scale(name: str) -> None:
    # An x4 pixel-shuffle upsampler (two x2 steps) reads one LR pixel more than the x2 one, while
    # pre-upsampling networks need most at x2: the card's value is the maximum over the scales.
    info = get_model_info(name)
    assert info.receptive_field == max(info.receptive_field_for(scale) for scale in info.scales)
    assert info.receptive_field_for(None) == info.receptive_field


def test_unknown_model_name_is_a_model_error() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'esrgan'; available: bicubic, srcnn"):
        create_model("esrgan", 4)
    with pytest.raises(ModelError, match="unknown model 'esrgan'"):
        get_model_info("esrgan")


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("scale", [1, 9, 2.0, "2", True])
def test_unsupported_scale_is_a_model_error(name: str, scale: object) -> None:
    supported = ", ".join(str(s) for s in get_model_info(name).scales)
    expected = rf"model '{name}' does not support scale {scale!r}; supported: {supported}"
    with pytest.raises(ModelError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        create_model(name, scale)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list_models())
def test_unknown_kwarg_is_a_model_error(name: str) -> None:
    with pytest.raises(ModelError, match=rf"model '{name}' got unknown argument\(s\) depthh"):
        create_model(name, 2, depthh=30)
    with pytest.raises(ModelError, match="unknown argument"):
        get_model_info(name).receptive_field_for(2, depthh=30)
    with pytest.raises(ModelError, match="unknown argument"):
        get_model_info(name).activation_values_per_lr_pixel(2, {"depthh": 30})


def _wrong_value(default: Any) -> Any:
    """A value of the kind a typo or a JSON slip gives, wrong for a kwarg with this default."""
    if isinstance(default, bool):
        return "false"  # a string from a hand-written config: truthy, so the opposite of meant
    if isinstance(default, int):
        return -1
    if isinstance(default, float):
        return -1.0
    if isinstance(default, (tuple, list)):
        return "x"
    return "nonsense"


BAD_VALUES = [
    pytest.param(name, key, _wrong_value(default), id=f"{name}-{key}")
    for name in list_models()
    for key, default in get_model_info(name).default_kwargs.items()
]


@pytest.mark.parametrize(("name", "key", "value"), BAD_VALUES)
def test_bad_kwarg_value_is_a_model_error(name: str, key: str, value: Any) -> None:
    kwargs = {**get_model_info(name).test_kwargs, key: value}
    with pytest.raises(ModelError, match=rf"model '{name}'.*{key}"):
        create_model(name, 2, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("rednet", {"num_features": 2.5}, "num_features must be a positive integer, got 2.5"),
        ("srcnn", {"kernel_sizes": (9, 4, 5)}, "kernel_sizes must all be odd"),
        ("srcnn", {"kernel_sizes": (9, 5)}, "kernel_sizes must be a sequence of 3 integers"),
        ("srcnn-tutorial", {"num_features": 64}, "num_features must be a sequence of 2 integers"),
        ("span", {"reparam_gain": 5}, "reparam_gain must be 0"),
        ("edsr", {"res_scale": 0}, r"res_scale must be a number in \(0, 1\]"),
    ],
)
def test_bad_kwarg_messages(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=f"model '{name}': {message}"):
        create_model(name, 2, **kwargs)


# --------------------------------------------------------------------------- each network


PAPER_COUNTS = [
    # (name, scale, kwargs, what the paper counts, expected)
    ("fsrcnn", 3, {}, "weights", 12_464),  # d=56, s=12, m=4
    ("fsrcnn-s", 3, {}, "weights", 3_937),  # d=32, s=5, m=1
    ("espcn", 3, {}, "weights", 22_624),
    ("edsr", 2, {}, "parameters", 1_369_859),  # EDSR-baseline
    ("edsr", 4, {}, "parameters", 1_517_571),
    ("srresnet", 4, {}, "parameters", 1_549_462),  # with batch norm
    ("rednet", 2, {}, "parameters", 665_921),  # RED20
    ("srcnn", 3, {}, "parameters", 57_281),  # 9-5-5
]


@pytest.mark.parametrize(("name", "scale", "kwargs", "counted", "expected"), PAPER_COUNTS)
def test_parameter_counts_match_the_papers(
    name: str, scale: int, kwargs: dict, counted: str, expected: int
) -> None:
    """Weights only (no biases, no PReLU slopes) where the paper counts so, else every parameter."""
    model = create_model(name, scale, **kwargs)
    count = _conv_weight_count(model) if counted == "weights" else _parameter_count(model)
    assert count == expected


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("srcnn", {"kernel_sizes": (9, 1, 5)}, 8_129),
        ("srcnn-tutorial", {}, 21_123),
        ("rednet", {"num_layers": 15}, 1_035_201),  # RED30
    ],
)
def test_parameter_counts_of_variants(name: str, kwargs: dict, expected: int) -> None:
    assert _parameter_count(create_model(name, 2, **kwargs)) == expected


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_bicubic_model_is_imresize_tensor(scale: int) -> None:
    lr = _lr_batch(3)
    with torch.no_grad():
        assert torch.equal(create_model("bicubic", scale)(lr), imresize_tensor(lr, scale))


def test_bicubic_accepts_scales_up_to_8_and_any_channel_count() -> None:
    assert get_model_info("bicubic").scales == (2, 3, 4, 5, 6, 7, 8)
    with pytest.raises(ModelError, match="scale 9"):
        create_model("bicubic", 9)
    assert create_model("bicubic", 2)(torch.rand(1, 4, 5, 6)).shape == (1, 4, 10, 12)


def test_srcnn_tutorial_output_is_non_negative_and_bilinear_based() -> None:
    model = create_model("srcnn-tutorial", 2)
    assert model.upsample_kernel == "bilinear"
    with torch.no_grad():
        assert (model(_lr_batch(3)) >= 0).all()


@pytest.mark.parametrize("num_layers", [1, 2, 3, 5, 15])
def test_rednet_works_at_any_depth(num_layers: int) -> None:
    model = create_model("rednet", 2, num_layers=num_layers, num_features=8)
    sr = model(_lr_batch(1))
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
    assert all(isinstance(layer, nn.Conv2d) for layer in model.encoder)
    assert all(isinstance(layer, nn.ConvTranspose2d) for layer in model.decoder)


def test_rednet_wiring_matches_a_hand_written_red8() -> None:
    """num_layers=4: skips from encoder layers 2 and 4 into decoder layers 3 and 1."""
    model = create_model("rednet", 2, num_layers=4, num_features=6).eval()
    lr = _lr_batch(1)
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
    lr = _lr_batch(1, 12, 12)
    with torch.no_grad():
        difference = (model(lr) - imresize_tensor(lr, 3)).abs().mean()
    assert difference < 0.05


# --------------------------------------------------------------------------- receptive field


def test_receptive_field_values() -> None:
    # Pre-upsampling: ceil(conv radius in HR pixels / scale) + the upscale's taps (2 bicubic,
    # 1 bilinear). Post-upsampling: the LR convolutions' radius, or the bicubic skip's 2.
    assert get_model_info("bicubic").receptive_field == 2
    assert get_model_info("srcnn").receptive_field == math.ceil(8 / 2) + 2
    assert get_model_info("srcnn").receptive_field_for(4, kernel_sizes=(9, 1, 5)) == 2 + 2
    assert get_model_info("srcnn-tutorial").receptive_field == math.ceil(3 / 2) + 1
    assert get_model_info("rednet").receptive_field == 10 + 2
    assert get_model_info("rednet").receptive_field_for(num_layers=15) == 15 + 2
    assert get_model_info("rednet").receptive_field_for(3, num_layers=15) == 10 + 2
    # 5x5, m 3x3 and the 9x9 stride-s deconvolution: ceil((4 + s - 1) / s) LR pixels.
    assert get_model_info("fsrcnn").receptive_field_for(2) == 2 + 4 + 2  # deconv: floor(5 / 2)
    assert get_model_info("fsrcnn").receptive_field_for(4) == 2 + 4 + 1  # floor(7 / 4)
    assert get_model_info("espcn").receptive_field_for(3) == 2 + 1 + 1
    assert get_model_info("span").receptive_field_for(2) == 1 + 3 * 6 + 1 + 1
    assert get_model_info("edsr").receptive_field_for(2) == 1 + 2 * 16 + 1 + 1 + 1
    assert get_model_info("edsr").receptive_field_for(4) == 1 + 2 * 16 + 1 + 2 + 1
    assert get_model_info("srresnet").receptive_field_for(3) == 4 + 2 * 16 + 1 + 1 + 2


def _measured_reach(model: nn.Module, scale: int, size: int, channels: int) -> int:
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
    model = _test_model(name, scale).double().eval()
    receptive_field = model.info.receptive_field_for(scale, **model.model_kwargs)
    channels = _channels(name, model.model_kwargs)
    reach = _measured_reach(model, scale, size=2 * receptive_field + 9, channels=channels)
    # The formula rounds up, so it is tight or one pixel generous, never short.
    assert receptive_field - 1 <= reach <= receptive_field
