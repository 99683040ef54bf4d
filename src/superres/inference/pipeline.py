"""Upscaling one image: colour handling, alpha, 16-bit and tiling.

`upscale_image` takes HWC uint8/uint16 pixels (gray, gray+alpha, RGB, RGBA) and a model that
follows the `superres.models` contract, and returns the upscaled pixels in the same layout and
type. The whole per-pixel pipeline (colour conversion, the network, bicubic chroma and alpha,
clipping, quantisation) runs tile by tile, so only the input (as integers and as floats) and the
finished integer output exist at full size; with the tile overlap at the model's receptive field
the result equals an untiled run.

Colour: a Y model (`model.info.channels_for(model.model_kwargs) == "Y"`) sees the BT.601 Y of
RGB input while Cb and Cr are upscaled bicubically; gray input is its own Y. An RGB model sees
RGB; gray input is replicated to three channels and the result averaged back to one.

Alpha: colour and alpha are upscaled separately (colour by the model, alpha bicubically). The
colour of fully transparent pixels is meaningless (often black) and would bleed into the visible
edge as a dark fringe, so before upscaling it is replaced by a smooth extrapolation of the visible
colours (`fill_transparent`, a pull-push fill). Premultiplying instead would divide the network's
output by an interpolated alpha, which amplifies the network's errors where alpha is small.

The network is called through a `superres.inference.backends.Backend` (`(lr) -> sr` on one device): pass
a runtime name ("torch", "onnxruntime") and a `precision` (`superres.inference.precision`: fp32,
bf16, or auto, bf16 where the model's card says it costs nothing), or a ready `Backend`. Tile
overlap and colour handling come from the model's card alone (`receptive_field_for` with the
model's own kwargs, `channels_for`), so every registered network, pre- or post-upsampling, tiles
exactly.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from superres.errors import ConfigError
from superres.inference.backends import Backend, TensorFunction, make_backend
from superres.inference.tiling import auto_tile, tiled_forward

logger = logging.getLogger(__name__)

#: LR pixels each side that MATLAB's integer bicubic upscale (chroma, alpha) reads.
BICUBIC_CONTEXT = 2


# --------------------------------------------------------------------------- alpha


def _sum_2x2(values: np.ndarray) -> np.ndarray:
    """Sum 2x2 blocks of an (H, W, ...) array, zero-padding odd sizes."""
    height, width = values.shape[:2]
    pad = [(0, height % 2), (0, width % 2)] + [(0, 0)] * (values.ndim - 2)
    padded = np.pad(values, pad)
    blocks = padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2, *values.shape[2:])
    return blocks.sum(axis=(1, 3))


def fill_transparent(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`colour` (H, W, K) with every fully transparent pixel (alpha == 0) replaced by a smooth
    extrapolation of the visible pixels' colours; visible pixels are returned unchanged.

    Pull-push: build a pyramid of visibility-weighted colour sums by 2x2 summing, then walk back
    down, taking each pixel's own average where it saw visible pixels and its parent's otherwise.
    Linear in the pixel count; a transparent pixel takes the colour of the visible pixels
    nearest to it in the pyramid.
    """
    visible = alpha > 0
    if visible.all() or not visible.any():
        return colour
    weights = [visible.astype(np.float32)[..., None]]
    sums = [colour * weights[0]]
    while max(sums[-1].shape[:2]) > 1:
        sums.append(_sum_2x2(sums[-1]))
        weights.append(_sum_2x2(weights[-1]))

    filled = sums[-1] / weights[-1]  # the coarsest level sees every visible pixel, weight > 0
    for level_sums, level_weights in zip(reversed(sums[:-1]), reversed(weights[:-1])):
        height, width = level_sums.shape[:2]
        parent = np.repeat(np.repeat(filled, 2, axis=0), 2, axis=1)[:height, :width]
        own = level_sums / np.maximum(level_weights, 1e-12)
        filled = np.where(level_weights > 0, own, parent)
    return np.where(visible[..., None], colour, filled).astype(colour.dtype, copy=False)


# --------------------------------------------------------------------------- one image


def _max_value(dtype: np.dtype) -> int:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise TypeError(
        f"expected uint8 or uint16 pixels (HW or HWC, 1 to 4 channels), got {dtype}; "
        "convert floats in [0, 1] with superres.images.from_float"
    )


def _tile_overlap(model: nn.Module) -> int:
    """LR pixels of context each tile needs so that tiled output equals untiled output.

    The model's receptive field for its own scale and kwargs (a deeper network than the card's
    default needs more), and at least the bicubic taps that chroma and alpha are upscaled with.
    """
    receptive_field = model.info.receptive_field_for(model.scale, **model.model_kwargs)
    return max(int(receptive_field), BICUBIC_CONTEXT)


@dataclass(frozen=True)
class _TilePipeline:
    """LR tile in [0, 1] -> quantised SR tile on the CPU: colour, model, chroma, alpha.

    The work runs on the backend's device; only the finished integer tile comes back.
    """

    forward: TensorFunction
    device: torch.device
    model_channels: str  # "Y" or "RGB"
    scale: int
    colour_channels: int  # 1 (gray) or 3 (RGB)
    has_alpha: bool
    max_value: int

    def __call__(self, lr: torch.Tensor) -> torch.Tensor:
        lr = lr.to(self.device, non_blocking=True)
        colour = lr[:, : self.colour_channels]
        planes = [self._upscale_colour(colour)]
        if self.has_alpha:
            planes.append(self._bicubic(lr[:, self.colour_channels :]))
        sr = torch.cat(planes, dim=1) if len(planes) > 1 else planes[0]
        return self._quantise(sr).cpu()

    def _network(self, lr: torch.Tensor) -> torch.Tensor:
        # One image per call: a convolution's float rounding depends on the batch size it runs at
        # (oneDNN picks its kernels by shape), so a batch would not equal its images one by one,
        # and a resumed or Dask-run batch would depend on how the images happened to be grouped.
        if lr.shape[0] == 1:
            return self.forward(lr)
        return torch.cat([self.forward(lr[index : index + 1]) for index in range(lr.shape[0])])

    def _bicubic(self, planes: torch.Tensor) -> torch.Tensor:
        from superres.ops.resize import imresize_tensor

        height, width = planes.shape[-2:]
        return imresize_tensor(planes, size=(self.scale * height, self.scale * width))

    def _upscale_colour(self, colour: torch.Tensor) -> torch.Tensor:
        if self.model_channels == "Y":
            return self._upscale_with_y_model(colour)
        if self.colour_channels == 1:
            # An RGB model on gray: feed it a neutral RGB image, average its answer back to gray.
            return self._network(colour.expand(-1, 3, -1, -1)).mean(dim=1, keepdim=True)
        return self._network(colour)

    def _upscale_with_y_model(self, colour: torch.Tensor) -> torch.Tensor:
        # The one definition of a Y network on colour, which `superres export --rgb` also writes.
        from superres.models.colour import upscale_rgb_with_y

        if self.colour_channels == 1:
            return self._network(colour)  # gray is its own luma
        return upscale_rgb_with_y(self._network, colour, self.scale)

    def _quantise(self, sr: torch.Tensor) -> torch.Tensor:
        # Round half up after clipping; int32 holds uint16 values (torch's uint16 is partial).
        values = torch.floor(sr.clamp(0.0, 1.0) * self.max_value + 0.5)
        return values.to(torch.uint8 if self.max_value == 255 else torch.int32)


def _prepare_lr(pixels: np.ndarray, max_value: int, has_alpha: bool) -> torch.Tensor:
    """HWC integer pixels -> (1, C, H, W) float32 in [0, 1], transparent colours filled."""
    # Reorder while still integers (a quarter of the float size), then convert once.
    with warnings.catch_warnings():
        # A read-only array (a caller's, or np.broadcast_to) is only read: .float() below copies.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        planes = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()
    lr = planes.float().div_(max_value)
    del planes
    if has_alpha:
        colour = lr[:-1].permute(1, 2, 0).numpy()
        filled = fill_transparent(colour, lr[-1].numpy())
        lr[:-1] = torch.from_numpy(np.ascontiguousarray(filled)).permute(2, 0, 1)
    return lr.unsqueeze(0)


def resolve_tile(
    tile: str | int | None,
    model: nn.Module,
    channels: int,
    device: torch.device,
    half: bool,
    precision: str = "fp32",
) -> int | None:
    """`tile` as `tiled_forward` takes it: "auto" becomes the largest tile whose activations fit the
    memory budget at the precision the network computes in (2 bytes a value for fp16 or bf16)."""
    if tile is None or isinstance(tile, int):
        if isinstance(tile, int) and tile < 1:
            raise ConfigError(f"tile must be a positive number of pixels or 'auto', got {tile}")
        return tile
    if tile != "auto":
        raise ConfigError(f"tile must be a positive number of pixels or 'auto', got {tile!r}")
    return auto_tile(
        model.info,
        channels,
        device,
        scale=model.scale,
        model_kwargs=getattr(model, "model_kwargs", None),
        bytes_per_value=2 if half or precision in ("bf16", "fp16") else 4,
    )


def upscale_image(
    pixels: np.ndarray,
    model: nn.Module,
    *,
    tile: str | int | None = "auto",
    device: str | torch.device = "cpu",
    half: bool = False,
    backend: str | Backend = "torch",
    self_ensemble: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Upscale HWC (or HW) uint8/uint16 pixels by `model.scale`; same layout and type out.

    `tile`: "auto" (from a memory budget), a tile size in LR pixels, or None (whole image).
    `backend`: a runtime name for `superres.inference.backends.make_backend`, or a ready `Backend` (then
    `device` and `self_ensemble` are its own; `half` still sizes the auto tile).
    `self_ensemble`: 8 passes averaged (`superres.ops.ensemble`).
    `on_tile(done, total)` is called after each tile (progress reporting).
    `precision`: "fp32", "bf16", "auto" or "int8" (`superres.inference.precision`; with a runtime
    name only: a ready `Backend` computes in its own).
    """
    (result,) = upscale_images(
        [pixels], model, tile=tile, device=device, half=half, backend=backend,
        self_ensemble=self_ensemble, on_tile=on_tile, precision=precision,
    )
    return result


def upscale_images(
    images: Sequence[np.ndarray],
    model: nn.Module,
    *,
    tile: str | int | None = "auto",
    device: str | torch.device = "cpu",
    half: bool = False,
    backend: str | Backend = "torch",
    self_ensemble: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
    precision: str = "fp32",
) -> list[np.ndarray]:
    """`upscale_image` on several images of one shape and type, prepared, tiled and finished as one
    batch with the network called per image: the same results as one by one, bit for bit, however
    the images are grouped. `tile` applies to the batch as a whole."""
    arrays = [np.asarray(pixels) for pixels in images]
    first = arrays[0]
    if any(array.shape != first.shape or array.dtype != first.dtype for array in arrays):
        raise ValueError("a batch of images must share one shape and dtype")
    squeeze = first.ndim == 2
    if squeeze:
        arrays = [array[:, :, None] for array in arrays]
    shape = arrays[0].shape
    if len(shape) != 3 or shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected HWC pixels with 1 to 4 channels, got shape {first.shape}")
    max_value = _max_value(first.dtype)
    channels = shape[2]
    has_alpha = channels in (2, 4)
    if isinstance(backend, Backend):
        runner = backend
    else:
        runner = make_backend(
            model, backend, device, half=half, self_ensemble=self_ensemble, precision=precision
        )

    pipeline = _TilePipeline(
        forward=runner.forward,
        device=runner.device,
        model_channels=model.info.channels_for(model.model_kwargs),
        scale=int(model.scale),
        colour_channels=channels - 1 if has_alpha else channels,
        has_alpha=has_alpha,
        max_value=max_value,
    )
    tile_size = resolve_tile(tile, model, channels, runner.device, half, runner.precision)
    overlap = _tile_overlap(model)
    lr = torch.cat([_prepare_lr(array, max_value, has_alpha) for array in arrays])
    with torch.inference_mode():
        # Channels-last output: its HWC view below is the numpy result without another copy.
        sr = tiled_forward(
            pipeline,
            lr,
            pipeline.scale,
            tile=tile_size,
            overlap=overlap,
            memory_format=torch.channels_last,
            on_tile=on_tile,
            align=int(getattr(model.info, "tile_alignment", 1)),
        )
    del lr
    results = [np.ascontiguousarray(one.permute(1, 2, 0).numpy(), dtype=first.dtype) for one in sr]
    return [result[:, :, 0] for result in results] if squeeze else results


__all__ = [
    "Backend",  # re-exported: what `upscale_image(backend=...)` accepts ready-made
    "fill_transparent",
    "upscale_image",
    "upscale_images",
]
