"""Tiled inference: run a super-resolution function tile by tile with bounded peak memory.

A convolutional network's output pixel depends only on the LR pixels within its receptive field,
so an image can be cut into tiles, each read with `overlap` LR pixels of extra context on every
side, and only the central part of each tile's output kept. With `overlap` at least the model's
receptive field the stitched result equals the whole-image result (up to float rounding): tiles
are clamped at the image border rather than padded, so the network sees exactly the border it
would see on the whole image.

`auto_tile` picks the largest tile that keeps the network's activations under a memory budget,
sized from the model's `ModelInfo` card alone (its receptive field and activation count), so
every registered network, pre- or post-upsampling, is sized by what it really holds. Each tile
recomputes `overlap` pixels of context on every side, so larger tiles waste less: with a tile of
t LR pixels the network computes (t + 2 * overlap)**2 / t**2 times the pixels it keeps (SPAN60 x2,
overlap 21: 1.24 at t = 397, 1.12 at t = 711, the tile of a 1.5 GB budget). The CPU budget is
therefore a share of the machine's memory (`CPU_BUDGET_SHARE`, within `MIN_CPU_BUDGET_BYTES` and
`MAX_CPU_BUDGET_BYTES`) rather than a fixed size. The core count does not enter: tiles run one
after another with every core inside each convolution (oneDNN splits a convolution's output
across threads), so a tile that fits the budget keeps every core busy, and the overlap's share,
not the core count, is what the tile size changes (`superres bench --pipeline` measures the
overhead: tiled time over one-pass time).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from superres.images.limits import memory_bytes

if TYPE_CHECKING:  # the card's type only; tiling itself never imports the model registry
    from superres.models.blocks import ModelInfo

logger = logging.getLogger(__name__)

#: A super-resolution function: LR (N, C, h, w) -> SR (N, C', scale*h, scale*w).
TileFunction = Callable[[torch.Tensor], torch.Tensor]

#: The smallest tile `auto_tile` proposes: below this the overlap dominates the work.
MIN_AUTO_TILE = 32
#: The largest tile `auto_tile` proposes: beyond this, tiles only make the progress coarser.
MAX_AUTO_TILE = 1024
#: Share of the machine's memory (or its container's limit) one tile's activations may take on the
#: CPU when the caller gives no budget, within the two bounds below.
CPU_BUDGET_SHARE = 1 / 16
MIN_CPU_BUDGET_BYTES = 512 * 1024**2
MAX_CPU_BUDGET_BYTES = 2 * 1024**3
#: Share of the free GPU memory one tile may use when the caller gives no budget.
GPU_BUDGET_SHARE = 0.5


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, length) into ceil(length / tile) near-equal spans, none longer than `tile`.

    Near-equal rather than `tile, tile, ..., remainder` so the last tile is not a sliver whose
    context costs more than its content.
    """
    count = math.ceil(length / tile)
    bounds = [round(i * length / count) for i in range(count + 1)]
    return [(start, stop) for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start]


def tile_spans(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """The (top, bottom, left, right) LR rectangles, without context, that cover the image."""
    return [
        (top, bottom, left, right)
        for top, bottom in _spans(height, tile)
        for left, right in _spans(width, tile)
    ]


def _context_window(start: int, stop: int, window: int, length: int) -> tuple[int, int]:
    """A `window`-long span of [0, length) centred on [start, stop), shifted inwards at borders.

    With `window` >= (stop - start) + 2 * overlap it holds the tile's full context (clamped at
    the image border). Every tile gets the same window: near the border it takes more context on
    the inner side instead of less. Extra context never changes the result, and equal shapes let
    the allocator and oneDNN reuse buffers and kernels from tile to tile.
    """
    margin = (window - (stop - start)) // 2
    first = min(max(0, start - margin), length - window)
    return first, first + window


def _aligned_window(start: int, stop: int, window: int, length: int, align: int) -> tuple[int, int]:
    """`_context_window` moved back to start at a multiple of `align`, and lengthened by up to
    `align - 1` pixels so that it still holds the same context (cut at the image's end).

    A network that anchors a grid at the image's top-left corner (window attention, a U-Net's
    downsampling) then sees in each tile the grid it sees in the whole image. A window that ends
    at the image's end starts on the grid too, so it is padded exactly as the whole image is.
    """
    first, last = _context_window(start, stop, window, length)
    if align <= 1:
        return first, last
    first -= first % align
    return first, min(length, first + window + align - 1)


def tiled_forward(
    fn: TileFunction,
    lr: torch.Tensor,
    scale: int,
    *,
    tile: int | None,
    overlap: int,
    memory_format: torch.memory_format = torch.contiguous_format,
    on_tile: Callable[[int, int], None] | None = None,
    align: int = 1,
) -> torch.Tensor:
    """`fn(lr)` computed tile by tile: tiles of at most `tile` LR pixels, `overlap` of context.

    `tile=None`, or a tile at least as large as the image, makes a single call. The output is
    allocated once, with the dtype and device of `fn`'s first result and `memory_format`
    (`torch.channels_last` makes `output[0].permute(1, 2, 0)` an HWC view without a copy), and
    only the centre of each tile's output (the part its context makes exact) is written into it.
    Every call gets the same LR shape, min(image, largest tile + 2 * overlap) on each axis.
    `on_tile(done, total)`, if given, is called after every tile (a progress bar's hook).
    `align` > 1 (the card's `tile_alignment`) starts every call at a multiple of it and lets it run
    up to `align - 1` pixels longer, so calls may then differ in shape (`_aligned_window`).
    """
    if lr.ndim != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got shape {tuple(lr.shape)}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    _, _, height, width = lr.shape
    if tile is None or (tile >= height and tile >= width):
        whole = fn(lr).contiguous(memory_format=memory_format)
        if on_tile is not None:
            on_tile(1, 1)
        return whole
    if tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile}")

    spans = tile_spans(height, width, tile)
    # Context is clamped at the image border: no padding the whole-image model would not see.
    window_height = min(height, max(bottom - top for top, bottom, _, _ in spans) + 2 * overlap)
    window_width = min(width, max(right - left for _, _, left, right in spans) + 2 * overlap)
    output: torch.Tensor | None = None
    for done, (top, bottom, left, right) in enumerate(spans, start=1):
        context_top, context_bottom = _aligned_window(top, bottom, window_height, height, align)
        context_left, context_right = _aligned_window(left, right, window_width, width, align)
        sr_tile = fn(lr[:, :, context_top:context_bottom, context_left:context_right])
        expected = (scale * (context_bottom - context_top), scale * (context_right - context_left))
        if tuple(sr_tile.shape[-2:]) != expected:
            raise ValueError(
                f"tile function returned {tuple(sr_tile.shape[-2:])} pixels for an LR tile of "
                f"{context_bottom - context_top}x{context_right - context_left} at scale {scale}; "
                f"expected {expected}"
            )
        if output is None:
            batch, channels = sr_tile.shape[:2]
            output = torch.empty(
                (batch, channels, scale * height, scale * width),
                dtype=sr_tile.dtype,
                device=sr_tile.device,
                memory_format=memory_format,
            )
        row, col = scale * (top - context_top), scale * (left - context_left)
        output[:, :, scale * top : scale * bottom, scale * left : scale * right] = sr_tile[
            :, :, row : row + scale * (bottom - top), col : col + scale * (right - left)
        ]
        if on_tile is not None:
            on_tile(done, len(spans))
    assert output is not None  # the image has at least one pixel, so at least one tile ran
    return output


def tile_memory_bytes(
    model_info: ModelInfo,
    tile: int,
    *,
    scale: int,
    model_kwargs: Mapping[str, Any] | None = None,
    bytes_per_value: int = 4,
) -> int:
    """Peak activation memory of one `tile` (LR pixels, plus its context) in the network.

    Everything comes from the card: the context is `receptive_field_for(scale, **model_kwargs)`
    on each side, and the card's `activation_values_per_lr_pixel` already counts the network's
    width, its live maps and, for a pre-upsampling network, the scale**2 HR pixels per LR pixel.
    """
    kwargs = dict(model_kwargs or {})
    overlap = model_info.receptive_field_for(scale, **kwargs)
    values_per_pixel = model_info.activation_values_per_lr_pixel(scale, kwargs)
    return math.ceil((tile + 2 * overlap) ** 2 * values_per_pixel * bytes_per_value)


def cpu_budget_bytes(memory: int | None) -> int:
    """One tile's activation budget on a CPU with `memory` bytes (None: unknown): `CPU_BUDGET_SHARE`
    of it, within [MIN_CPU_BUDGET_BYTES, MAX_CPU_BUDGET_BYTES] (a 24 GB machine: 1.5 GB)."""
    if memory is None:
        return MIN_CPU_BUDGET_BYTES
    return int(min(MAX_CPU_BUDGET_BYTES, max(MIN_CPU_BUDGET_BYTES, memory * CPU_BUDGET_SHARE)))


#: CPU memory budget for one tile's activations on this machine when the caller gives none.
DEFAULT_CPU_BUDGET_BYTES = cpu_budget_bytes(memory_bytes())


def default_budget_bytes(device: torch.device | str) -> int:
    """Memory for one tile: a share of the machine's memory on CPU, half the free memory on a GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_BUDGET_SHARE)
    return DEFAULT_CPU_BUDGET_BYTES


def auto_tile(
    model_info: ModelInfo,
    channels: int,
    device: torch.device | str,
    budget_bytes: int | None = None,
    *,
    scale: int | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    bytes_per_value: int = 4,
) -> int:
    """The largest tile (LR pixels) whose activations fit `budget_bytes`, within
    [MIN_AUTO_TILE, MAX_AUTO_TILE].

    `model_info` is the model's `ModelInfo` card and the only thing read about the model (see
    `tile_memory_bytes`); `model_kwargs` its actual kwargs (the card's defaults otherwise);
    `scale` defaults to the largest the model supports, the worst case. `channels`, the image's
    channel count, is accepted for the callers' sake: the card's activation count already
    bounds the channels a model can be fed (bicubic's, for one, counts RGBA).
    """
    scale = max(model_info.scales) if scale is None else model_info.check_scale(scale)
    budget = default_budget_bytes(device) if budget_bytes is None else int(budget_bytes)

    def fits(tile: int) -> bool:
        cost = tile_memory_bytes(
            model_info, tile, scale=scale, model_kwargs=model_kwargs, bytes_per_value=bytes_per_value
        )
        return cost <= budget

    low, high = MIN_AUTO_TILE, MAX_AUTO_TILE
    if fits(high):
        return high
    # Binary search for the largest tile that fits; the floor keeps tiny budgets usable.
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    logger.debug("auto tile: %d LR pixels for a %d-byte budget", low, budget)
    return low
