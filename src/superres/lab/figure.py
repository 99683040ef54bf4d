"""The comparison figure of the RED-Net article: LR, bicubic, SR (and HR) with zoomed crops.

`compare_images` upscales an LR image with bicubic interpolation and with one or more models
(e.g. a PSNR model and a perceptual one), scores each against the HR image when there is one
(paper protocol, `superres.ops.metrics.score_pair`, and optionally LPIPS-approx), and picks
the crop to zoom into: the window of the reference image with the most gradient energy, where
the methods differ most visibly. `save_comparison_figure` draws the panels side by side, each
with its zoomed crop and its PSNR/SSIM underneath, into one image file (matplotlib's Agg
renderer, no window, no pyplot global state).

Everything here works on uint8: 16-bit inputs are reduced to 8 bits and alpha is dropped, since
the figure is for eyes and the paper protocol scores 8-bit images.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from superres.errors import ConfigError
from superres.evaluation.protocol import PlaneDistance, PlaneScore
from superres.images import write_image
from superres.inference.backends import Backend
from superres.inference.pipeline import upscale_image
from superres.ops.metrics import score_pair, shave_border, y_channel
from superres.ops.resize import imresize, modcrop

logger = logging.getLogger(__name__)

#: How the scores under the panels are computed (printed with them).
PROTOCOL_NOTE = (
    "PSNR (dB) / SSIM on the BT.601 Y channel (gray images as their own Y), "
    "a border of `scale` pixels shaved"
)
#: The zoomed crop's side as a share of the image's shorter side, and its smallest size.
CROP_SHARE = 0.25
MIN_CROP = 16
#: Width of one panel in the figure, in inches.
PANEL_INCHES = 3.2

#: (x, y, width, height) in SR/HR pixels.
Crop = tuple[int, int, int, int]


@dataclass(frozen=True)
class Panel:
    """One column of the figure: a title, an RGB uint8 image at the SR size, a caption."""

    title: str
    pixels: np.ndarray
    caption: str = ""


@dataclass
class Comparison:
    """The panels of a figure, its crop, and the (PSNR, SSIM) of each scored method."""

    panels: list[Panel]
    crop: Crop
    scale: int
    scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    sr: np.ndarray | None = None  # the first model's output, uint8 HWC as upscaled (gray stays gray)
    distances: dict[str, float] = field(default_factory=dict)  # LPIPS-approx to HR, when asked
    naturalness: dict[str, float] = field(default_factory=dict)  # NIQE of each output, when asked


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """HWC uint8/uint16 -> HWC uint8 without alpha (gray stays one channel)."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] in (2, 4):
        pixels = pixels[:, :, :-1]
    if pixels.dtype == np.uint16:
        # 257 maps 65535 to 255 exactly; round half up like every other conversion here.
        pixels = np.floor(pixels.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise TypeError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    return pixels


def to_display_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 HWC with 1 or 3 channels -> uint8 RGB for drawing."""
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def degrade(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped to a multiple of `scale`, its LR by MATLAB bicubic `imresize(hr, 1/scale)`)."""
    hr = modcrop(hr, scale)
    if hr.shape[0] < scale or hr.shape[1] < scale:
        raise ConfigError(f"image of {hr.shape[1]}x{hr.shape[0]} pixels is too small for x{scale}")
    return hr, imresize(hr, 1.0 / scale)


def choose_crop(reference: np.ndarray, size: int | None = None) -> Crop:
    """The `size` x `size` window of `reference` (HWC uint8) with the highest gradient energy."""
    height, width = reference.shape[:2]
    if size is None:
        size = max(MIN_CROP, int(min(height, width) * CROP_SHARE))
    size = min(size, height, width)
    luma = reference.astype(np.float64).mean(axis=2)
    energy = np.zeros_like(luma)
    energy[:, :-1] += np.diff(luma, axis=1) ** 2
    energy[:-1, :] += np.diff(luma, axis=0) ** 2
    # Summed-area table: every window's energy in O(1), all windows in one array operation.
    table = np.pad(energy.cumsum(axis=0).cumsum(axis=1), ((1, 0), (1, 0)))
    window = (
        table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]
    )
    top, left = np.unravel_index(int(np.argmax(window)), window.shape)
    return int(left), int(top), size, size


def parse_crop(text: str) -> Crop:
    """`"x,y,w,h"` -> (x, y, w, h), or ConfigError naming the text."""
    parts = text.split(",")
    try:
        values = tuple(int(part) for part in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or values[2] < 1 or values[3] < 1 or values[0] < 0 or values[1] < 0:
        raise ConfigError(f"--crop must be x,y,w,h with w, h >= 1 and x, y >= 0, got '{text}'")
    return values  # type: ignore[return-value]


def _check_crop(crop: Crop, height: int, width: int) -> Crop:
    x, y, crop_width, crop_height = crop
    if x + crop_width > width or y + crop_height > height:
        raise ConfigError(
            f"crop {x},{y},{crop_width},{crop_height} leaves the {width}x{height} SR image"
        )
    return crop


def _caption(
    scores: tuple[float, float] | None, distance: float | None = None, natural: float | None = None
) -> str:
    lines = [] if scores is None else [f"PSNR {scores[0]:.2f} dB / SSIM {scores[1]:.4f}"]
    lines += [] if distance is None else [f"LPIPS-approx {distance:.3f}"]
    lines += [] if natural is None else [f"NIQE {natural:.2f}"]
    return "\n".join(lines)


def compare_images(
    lr: np.ndarray,
    model: nn.Module,
    *,
    hr: np.ndarray | None = None,
    crop: Crop | None = None,
    tile: str | int | None = "auto",
    device: str | torch.device = "cpu",
    backend: str | Backend = "torch",
    model_label: str | None = None,
    more_models: Sequence[tuple[str, nn.Module, str | Backend]] = (),
    perceptual: PlaneDistance | None = None,
    no_reference: PlaneScore | None = None,
) -> Comparison:
    """Bicubic and `model` upscales of `lr` (and those of `more_models`: (label, model, backend),
    same scale), scored against `hr` when given, ready to draw.

    `backend`: a runtime name (run on `device`) or a ready `superres.inference.backends.Backend`.
    `perceptual`: also a distance to HR on the same Y planes as PSNR (e.g. `LpipsApprox.planes`);
    `no_reference`: a score of each output's Y plane alone (e.g. `superres.evaluation.niqe.niqe`), with or
    without HR.
    Scores are keyed "bicubic" and by each model's label.
    """
    scale = int(model.scale)
    lr = to_uint8(lr)
    if hr is not None:
        hr = to_uint8(hr)
        expected = (lr.shape[0] * scale, lr.shape[1] * scale)
        if hr.shape[:2] != expected or hr.shape[2] != lr.shape[2]:
            raise ConfigError(
                f"HR image is {hr.shape[1]}x{hr.shape[0]}x{hr.shape[2]}, "
                f"but the LR image at x{scale} "
                f"needs {expected[1]}x{expected[0]}x{lr.shape[2]}"
            )
    models = [(model_label or model.info.name, model, backend), *more_models]
    for label, other, _ in models:
        if int(other.scale) != scale:
            raise ConfigError(f"{label} upscales x{int(other.scale)}, the figure is x{scale}")
    nearest = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
    outputs = {"bicubic": imresize(lr, scale)}
    first = ""
    for index, (label, other, runner) in enumerate(models, start=1):
        label = label if label not in outputs else f"{label} ({index})"  # e.g. --model bicubic
        outputs[label] = upscale_image(lr, other, tile=tile, device=device, backend=runner)
        first = first or label

    scores: dict[str, tuple[float, float]] = {}
    distances: dict[str, float] = {}
    naturalness: dict[str, float] = {}
    hr_plane = None if hr is None else shave_border(y_channel(hr), scale)
    for label, image in outputs.items():
        plane = shave_border(y_channel(image), scale)  # the PSNR plane, scored by the extras
        if no_reference is not None:
            naturalness[label] = no_reference(plane)
        if hr is None:
            continue
        scores[label] = score_pair(image, hr, scale=scale)
        if perceptual is not None:
            distances[label] = perceptual(plane, hr_plane)
    panels = [Panel(f"LR (nearest, x{scale})", to_display_rgb(nearest))]
    for label, image in outputs.items():
        title = "Bicubic" if label == "bicubic" else f"SR: {label}"
        caption = _caption(scores.get(label), distances.get(label), naturalness.get(label))
        panels.append(Panel(title, to_display_rgb(image), caption))
    if hr is not None:
        panels.append(Panel("HR (reference)", to_display_rgb(hr), "ground truth"))
    sr = outputs[first]
    reference = hr if hr is not None else sr
    if crop is not None:
        chosen = _check_crop(crop, *sr.shape[:2])
    else:
        chosen = choose_crop(to_display_rgb(reference))
    return Comparison(
        panels=panels, crop=chosen, scale=scale, scores=scores, sr=sr, distances=distances,
        naturalness=naturalness,
    )


def render_comparison(comparison: Comparison) -> np.ndarray:
    """The figure as an RGB uint8 array: full images on top (crop outlined), zooms below."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    panels = comparison.panels
    height, width = panels[0].pixels.shape[:2]
    x, y, crop_width, crop_height = comparison.crop
    image_inches = PANEL_INCHES * height / width
    zoom_inches = PANEL_INCHES * crop_height / crop_width
    figure = Figure(figsize=(PANEL_INCHES * len(panels), image_inches + zoom_inches + 1.1), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.subplots(
        2, len(panels), squeeze=False, gridspec_kw={"height_ratios": [image_inches, zoom_inches]}
    )
    for column, panel in enumerate(panels):
        top, bottom = axes[0][column], axes[1][column]
        top.imshow(panel.pixels, interpolation="nearest")
        outline = Rectangle(
            (x - 0.5, y - 0.5), crop_width, crop_height, fill=False, edgecolor="red", linewidth=1.2
        )
        top.add_patch(outline)
        top.set_title(panel.title, fontsize=10)
        # Nearest-neighbour zoom: the reader should see the pixels each method produced.
        zoom = panel.pixels[y : y + crop_height, x : x + crop_width]
        bottom.imshow(zoom, interpolation="nearest")
        bottom.set_xlabel(panel.caption, fontsize=9)
        for axis in (top, bottom):
            axis.set_xticks([])
            axis.set_yticks([])
    notes = [PROTOCOL_NOTE.replace("`scale`", str(comparison.scale))] if comparison.scores else []
    if comparison.distances:
        notes.append("LPIPS-approx (lower is closer) on the same Y planes")
    if comparison.naturalness:
        notes.append("NIQE (no reference, lower is more natural) of each output's Y plane")
    if notes:
        figure.text(0.5, 0.005, "; ".join(notes), ha="center", va="bottom", fontsize=7)
    figure.tight_layout(rect=(0, 0.03 if notes else 0, 1, 1))
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def save_comparison_figure(comparison: Comparison, path: str | Path) -> Path:
    """Draw `comparison` and write it (atomically) to `path`; returns the path."""
    path = Path(path)
    write_image(path, render_comparison(comparison))
    logger.debug("wrote comparison figure %s", path)
    return path
