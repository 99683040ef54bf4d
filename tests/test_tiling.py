"""Tiled inference: tiled == untiled for every model, bounded tiles, auto tile sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from superres.models import create_model, get_model_info, list_models
from superres.tiling import (
    DEFAULT_CPU_BUDGET_BYTES,
    auto_tile,
    tile_memory_bytes,
    tile_spans,
    tiled_forward,
)
from superres.upscale import Backend, upscale_image

TOLERANCE = 1.0 / 255.0


def randomise_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights far from the near-bicubic init, yet with outputs of order one.

    An untrained RED-Net or SRCNN starts close to bicubic, which would hide a too-small overlap.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            fan_in = parameter[0].numel() if parameter.ndim > 1 else 10
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(noise / math.sqrt(fan_in))
    return model.eval()


def model_input(model: nn.Module, height: int, width: int, seed: int = 1) -> torch.Tensor:
    channels = 1 if model.info.channels == "Y" else 3
    return torch.rand((1, channels, height, width), generator=torch.Generator().manual_seed(seed))


# Narrower, shallower (and odd-depth) RED-Net keeps the suite fast; its receptive field is
# computed from these kwargs, so the formula is still what is tested.
SMALL_KWARGS = {"rednet": {"num_layers": 5, "num_features": 16}}


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("scale", [2, 3])
def test_tiled_equals_untiled_for_every_model(name: str, scale: int) -> None:
    model = randomise_weights(create_model(name, scale, **SMALL_KWARGS.get(name, {})))
    overlap = model.info.receptive_field_for(scale, **model.model_kwargs)
    lr = model_input(model, 23, 17)  # odd sizes: uneven tiles and clamped borders
    with torch.inference_mode():
        whole = model(lr)
        for tile in (4, 7, 12):
            tiled = tiled_forward(model, lr, scale, tile=tile, overlap=overlap)
            assert tiled.shape == whole.shape
            assert (tiled - whole).abs().max().item() <= TOLERANCE, f"tile {tile}"


def test_too_small_overlap_is_detected() -> None:
    # The test above has power: with too little context the seams show.
    model = randomise_weights(create_model("srcnn", 2))
    lr = model_input(model, 23, 17)
    with torch.inference_mode():
        whole = model(lr)
        tiled = tiled_forward(model, lr, 2, tile=7, overlap=2)
    assert (tiled - whole).abs().max().item() > TOLERANCE


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
    assert auto_tile(info, 1, "cpu", 1, scale=2) == 32  # the floor keeps tiny budgets usable
    assert auto_tile(get_model_info("bicubic"), 3, "cpu", 2**40, scale=2) == 1024
    kwargs = dict(scale=2, overlap=info.receptive_field_for(2), num_features=64, pre_upsample=True)
    assert tile_memory_bytes(small, live_activations=9, **kwargs) <= 64 * 2**20


def test_auto_tile_sees_wider_models() -> None:
    info = get_model_info("rednet")
    default = auto_tile(info, 1, "cpu", 256 * 2**20, scale=2)
    wide = auto_tile(info, 1, "cpu", 256 * 2**20, scale=2, model_kwargs={"num_features": 256})
    assert wide < default


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


def test_upscale_image_tiles_a_large_image_within_the_budget() -> None:
    # Untiled, RED20 at x2 on 1000x800 would hold ~9 maps of 64 x 2000 x 1600 floats (7 GB).
    model = RecordingRedNetStandIn()
    pixels = np.random.default_rng(0).integers(0, 256, (800, 1000, 3), dtype=np.uint8)
    # The stand-in itself as the backend: the torch backend would call an optimised copy.
    backend = Backend(forward=model, device=torch.device("cpu"))
    sr = upscale_image(pixels, model, tile="auto", backend=backend)
    assert sr.shape == (1600, 2000, 3)
    tile = auto_tile(model.info, 3, "cpu", scale=2, model_kwargs=model.model_kwargs)
    overlap = model.info.receptive_field_for(2)
    assert len(model.shapes) >= math.ceil(800 / tile) * math.ceil(1000 / tile) >= 12
    assert all(max(shape[2:]) <= tile + 2 * overlap for shape in model.shapes)
    assert tile_memory_bytes(
        tile, scale=2, overlap=overlap, num_features=64, live_activations=9, pre_upsample=True
    ) <= DEFAULT_CPU_BUDGET_BYTES
