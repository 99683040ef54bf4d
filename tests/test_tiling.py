"""Tiled inference: tiled == untiled for every model, bounded tiles, auto tile sizes.

Every registered network is covered through its card alone: its `test_kwargs`, its
`receptive_field_for` as the overlap and its `activation_values_per_lr_pixel` for auto tiles.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from superres.errors import ModelError
from superres.inference import tiling
from superres.inference.pipeline import Backend, upscale_image
from superres.inference.tiling import (
    DEFAULT_CPU_BUDGET_BYTES,
    MAX_AUTO_TILE,
    MIN_AUTO_TILE,
    auto_tile,
    tile_memory_bytes,
    tile_spans,
    tiled_forward,
)
from superres.models import create_model, get_model_info, list_models

#: Relative to the output's size: tiled inference with enough overlap is exact up to rounding.
#: The test runs in float64, so that rounding (which oneDNN's blocking and networks with large
#: features, such as SPAN's x255 input, make visible in float32) stays far below any seam.
EXACT_TOLERANCE = 1e-9


def randomise_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter moved by noise of its own scale: far from init, outputs of order one.

    An untrained RED-Net, SRCNN or FSRCNN starts with a near-zero output layer (close to bicubic
    or to zero), and a zero bias or unit PReLU slope is special; either could hide a too-small
    overlap. The noise is relative to a layer's fan-in so that deep stacks stay bounded.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = parameter[0].numel() if parameter.ndim > 1 else 10
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise / math.sqrt(fan_in))
    return model.eval()


def model_input(model: nn.Module, height: int, width: int, seed: int = 1) -> torch.Tensor:
    channels = 1 if model.info.channels_for(model.model_kwargs) == "Y" else 3
    return torch.rand((1, channels, height, width), generator=torch.Generator().manual_seed(seed))


MODEL_SCALES = [
    (name, scale) for name in list_models() for scale in (2, 3, 4) if scale in get_model_info(name).scales
]


@pytest.mark.parametrize(("name", "scale"), MODEL_SCALES)
def test_tiled_equals_untiled_for_every_model(name: str, scale: int) -> None:
    model = randomise_weights(create_model(name, scale, **get_model_info(name).test_kwargs)).double()
    overlap = model.info.receptive_field_for(scale, **model.model_kwargs)
    # Odd sizes (uneven tiles, clamped borders), large enough that a tile plus its context never
    # spans the whole image: otherwise a deep model's tiles would all be the image itself.
    lr = model_input(model, 2 * overlap + 23, 2 * overlap + 17).double()
    with torch.inference_mode():
        whole = model(lr)
        assert whole.abs().max().item() > 0.1  # a real signal, not a near-zero output layer
        rounding = EXACT_TOLERANCE * max(1.0, whole.abs().max().item())
        for tile in (4, 7, 12):
            tiled = tiled_forward(model, lr, scale, tile=tile, overlap=overlap)
            assert tiled.shape == whole.shape
            assert (tiled - whole).abs().max().item() <= rounding, f"tile {tile}"
        # The comparison has power: with two LR pixels less context than the card says (the
        # formula may be one generous), the seams stand well above rounding.
        short = tiled_forward(model, lr, scale, tile=7, overlap=max(0, overlap - 2))
    assert (short - whole).abs().max().item() > 10 * rounding


def nearest(scale: int, calls: list[tuple[int, ...]]):
    def fn(lr: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(lr.shape))
        return F.interpolate(lr, scale_factor=scale, mode="nearest")

    return fn


@pytest.mark.parametrize("tile", [None, 40, 100])
def test_one_call_when_tile_covers_the_image(tile: int | None) -> None:
    calls: list[tuple[int, ...]] = []
    lr = torch.rand(1, 3, 30, 40)
    out = tiled_forward(nearest(2, calls), lr, 2, tile=tile, overlap=5)
    assert calls == [(1, 3, 30, 40)]
    assert out.shape == (1, 3, 60, 80)


def test_call_count_and_tile_shapes_are_bounded() -> None:
    calls: list[tuple[int, ...]] = []
    lr = torch.rand(1, 1, 800, 1000)
    out = tiled_forward(nearest(2, calls), lr, 2, tile=100, overlap=4)
    assert len(calls) == 8 * 10
    assert max(max(shape[2:]) for shape in calls) <= 100 + 2 * 4
    assert torch.equal(out, F.interpolate(lr, scale_factor=2, mode="nearest"))


def test_every_call_gets_the_same_shape() -> None:
    # Border tiles take their context from the inner side: one shape for the allocator to reuse.
    calls: list[tuple[int, ...]] = []
    lr = torch.rand(1, 2, 37, 53)
    out = tiled_forward(nearest(3, calls), lr, 3, tile=10, overlap=3)
    # The longest spans: 10 of 37 rows, 9 of 53 columns; plus 3 of context on each side.
    assert set(calls) == {(1, 2, 16, 15)}
    assert torch.equal(out, F.interpolate(lr, scale_factor=3, mode="nearest"))


def test_channels_last_output_is_an_hwc_view() -> None:
    lr = torch.rand(1, 3, 20, 30)
    out = tiled_forward(nearest(2, []), lr, 2, tile=8, overlap=2, memory_format=torch.channels_last)
    assert out[0].permute(1, 2, 0).is_contiguous()
    assert torch.equal(out, F.interpolate(lr, scale_factor=2, mode="nearest"))


def test_tile_spans_cover_the_image_exactly_once() -> None:
    covered = np.zeros((37, 53), dtype=int)
    for top, bottom, left, right in tile_spans(37, 53, 10):
        assert bottom - top <= 10 and right - left <= 10
        covered[top:bottom, left:right] += 1
    assert (covered == 1).all()


def test_wrong_output_size_is_reported() -> None:
    with pytest.raises(ValueError, match="expected"):
        tiled_forward(lambda x: x, torch.rand(1, 1, 20, 20), 2, tile=8, overlap=2)


def test_auto_tile_follows_the_budget() -> None:
    info = get_model_info("rednet")
    small = auto_tile(info, 1, "cpu", 64 * 2**20, scale=2)
    large = auto_tile(info, 1, "cpu", 1024 * 2**20, scale=2)
    half = auto_tile(info, 1, "cpu", 64 * 2**20, scale=2, bytes_per_value=2)
    assert small < half < large
    assert auto_tile(info, 1, "cpu", 1, scale=2) == MIN_AUTO_TILE  # the floor keeps tiny budgets usable
    assert auto_tile(get_model_info("bicubic"), 3, "cpu", 2**40, scale=2) == MAX_AUTO_TILE


@pytest.mark.parametrize(("name", "scale"), MODEL_SCALES)
def test_auto_tile_is_the_largest_tile_within_the_budget(name: str, scale: int) -> None:
    info = get_model_info(name)
    budget = 256 * 2**20
    tile = auto_tile(info, 3, "cpu", budget, scale=scale)
    assert MIN_AUTO_TILE <= tile <= MAX_AUTO_TILE
    assert tile == MIN_AUTO_TILE or tile_memory_bytes(info, tile, scale=scale) <= budget
    assert tile == MAX_AUTO_TILE or tile_memory_bytes(info, tile + 1, scale=scale) > budget


def test_auto_tile_reads_the_card_alone() -> None:
    """Overlap from `receptive_field_for`, memory from `activation_values_per_lr_pixel`."""
    card = dataclasses.replace(
        get_model_info("edsr"),
        name="stand-in",
        default_kwargs={"width": 10},
        receptive_field_function=lambda scale, kwargs: 3 * scale,
        activation_function=lambda scale, kwargs: kwargs["width"] * scale,
    )
    budget = 200 * 2**20
    for scale, width in ((2, 10), (4, 10), (4, 1000)):
        tile = auto_tile(card, 3, "cpu", budget, scale=scale, model_kwargs={"width": width})
        # Largest t with (t + 2 * 3 * scale)**2 * width * scale * 4 bytes within the budget.
        expected = math.isqrt(budget // (width * scale * 4)) - 2 * 3 * scale
        assert tile == min(max(expected, MIN_AUTO_TILE), MAX_AUTO_TILE)
    with pytest.raises(ModelError, match="unknown argument"):
        auto_tile(card, 3, "cpu", budget, scale=2, model_kwargs={"num_features": 64})


def test_a_wider_network_gets_a_smaller_tile() -> None:
    budget = 256 * 2**20
    for name in ("rednet", "edsr"):  # one pre-, one post-upsampling network
        info = get_model_info(name)
        default = auto_tile(info, 1, "cpu", budget, scale=2)
        wide = auto_tile(info, 1, "cpu", budget, scale=2, model_kwargs={"num_features": 256})
        assert wide < default, name


def test_a_64_channel_post_upsampling_network_is_sized_by_its_card() -> None:
    # EDSR-baseline at x4 holds ~3,456 values per LR pixel: 64 features at LR and again at 4x4
    # HR pixels, far more than 64 maps of an LR-sized plane (the old, width-only estimate).
    info = get_model_info("edsr")
    budget = DEFAULT_CPU_BUDGET_BYTES
    tile = auto_tile(info, 3, "cpu", budget, scale=4, model_kwargs={"num_features": 64})
    overlap = info.receptive_field_for(4)
    assert (tile + 2 * overlap) ** 2 * info.activation_values_per_lr_pixel(4) * 4 <= budget
    width_only = math.isqrt(budget // (64 * 4 * 4)) - 2 * overlap
    assert tile < width_only / 2


class RecordingRedNetStandIn(nn.Module):
    """Claims to be RED20 (so auto_tile budgets for its activations) but upscales cheaply."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = 2
        self.info = get_model_info("rednet")
        self.model_kwargs = {"num_layers": 10, "num_features": 64}
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(lr.shape))
        return F.interpolate(lr, scale_factor=2, mode="nearest")


def test_upscale_image_tiles_a_large_image_within_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    # Untiled, RED20 at x2 on 1000x800 would hold ~9 maps of 64 x 2000 x 1600 floats (7 GB).
    # The default CPU budget follows the machine's memory; the smallest one keeps the count fixed.
    monkeypatch.setattr(tiling, "DEFAULT_CPU_BUDGET_BYTES", tiling.MIN_CPU_BUDGET_BYTES)
    model = RecordingRedNetStandIn()
    pixels = np.random.default_rng(0).integers(0, 256, (800, 1000, 3), dtype=np.uint8)
    # The stand-in itself as the backend: the torch backend would call an optimised copy.
    backend = Backend(forward=model, device=torch.device("cpu"))
    sr = upscale_image(pixels, model, tile="auto", backend=backend)
    assert sr.shape == (1600, 2000, 3)
    tile = auto_tile(model.info, 3, "cpu", scale=2, model_kwargs=model.model_kwargs)
    overlap = model.info.receptive_field_for(2, **model.model_kwargs)
    assert len(model.shapes) >= math.ceil(800 / tile) * math.ceil(1000 / tile) >= 12
    assert all(max(shape[2:]) <= tile + 2 * overlap for shape in model.shapes)
    memory = tile_memory_bytes(model.info, tile, scale=2, model_kwargs=model.model_kwargs)
    assert memory <= tiling.MIN_CPU_BUDGET_BYTES
