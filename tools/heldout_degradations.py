"""Write LR test sets by degradations that no shipped model was trained, selected or tuned on, to
check that the real-world models generalise past the `superres degrade` presets they were chosen by.

    python tools/heldout_degradations.py ../shared/data/benchmark/Set5/HR -o /tmp/heldout/Set5
    superres evaluate ../shared/data/benchmark/Set5/HR --lr-dir /tmp/heldout/Set5/jpeg50 --scale 4 \
        --model real

writes OUT/DEGRADATION/X{scale}/NAME.png for every HR image, degradation and scale (2 and 4 unless
--scale), each from the MATLAB-bicubic LR that the paper protocol uses (HR cropped to a multiple of
the scale):

- jpeg50, jpeg90: JPEG quality 50 / 90 (the `jpeg` preset is 75);
- noise15-jpeg70: colour Gaussian noise of sigma 15 (of 255), then JPEG 70 (the preset: 8, then 85);
- graynoise10: luminance-only Gaussian noise of sigma 10, saved losslessly (a camera's PNG);
- blur-jpeg80: the HR blurred by a Gaussian of sigma scale/2 px before the downscale (a soft lens),
  then JPEG 80.

The parameters were fixed before any model was scored on them. Each image's noise comes from a fixed
seed and its file name, so the files are the same on every run.
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from superres.ops.degradations import add_gaussian_noise, apply_preset, jpeg_roundtrip

SEED = 12345


def _tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).float().div(255.0)[None]


def _pixels(image: torch.Tensor) -> np.ndarray:
    return (image[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _blurred(hr: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(hr).filter(ImageFilter.GaussianBlur(sigma)))


def degrade(hr: np.ndarray, scale: int, degradation: str, rng: np.random.Generator) -> np.ndarray:
    """LR uint8 HWC of `hr` (uint8 HWC RGB) by one of DEGRADATIONS."""
    if degradation == "blur-jpeg80":
        hr = _blurred(hr, 0.5 * scale)
    lr = _tensor(apply_preset(hr, scale, "bicubic", name=""))
    if degradation == "jpeg50":
        return _pixels(jpeg_roundtrip(lr, 50))
    if degradation == "jpeg90":
        return _pixels(jpeg_roundtrip(lr, 90))
    if degradation == "noise15-jpeg70":
        return _pixels(jpeg_roundtrip(add_gaussian_noise(lr, rng, 15.0, gray=False), 70))
    if degradation == "graynoise10":
        return _pixels(add_gaussian_noise(lr, rng, 10.0, gray=True))
    if degradation == "blur-jpeg80":
        return _pixels(jpeg_roundtrip(lr, 80))
    raise ValueError(f"unknown degradation {degradation!r}")


DEGRADATIONS = ("jpeg50", "jpeg90", "noise15-jpeg70", "graynoise10", "blur-jpeg80")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hr_dir", type=Path, help="a folder of HR images (PNG/BMP)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--scale", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args()
    files = sorted(p for p in args.hr_dir.iterdir() if p.suffix.lower() in (".png", ".bmp"))
    for degradation in DEGRADATIONS:
        for path in files:
            hr = np.asarray(Image.open(path).convert("RGB"))
            for scale in args.scale:
                rng = np.random.default_rng([SEED, zlib.crc32((degradation + path.stem).encode())])
                out = args.output / degradation / f"X{scale}" / f"{path.stem}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(degrade(hr, scale, degradation, rng)).save(out)
    print(f"wrote {len(DEGRADATIONS)} x {len(files)} x {len(args.scale)} LR images under {args.output}")


if __name__ == "__main__":
    main()
