"""NIQE, the "completely blind" image quality score (Mittal, Soundararajan and Bovik, IEEE SPL 2013).

A no-reference measure: lower is more natural. It is the second half of the PIRM 2018
perceptual index and the usual companion of LPIPS when SR papers report perceptual quality; it
needs no reference image and no neural network, so it judges a perceptual model independently of
any VGG trunk the model was trained against.

The computation follows the MATLAB release (`computequality.m`) step by step:
1. the gray plane in [0, 255] is cropped to a multiple of 96 px (top-left kept);
2. at two scales (the plane, then MATLAB's bicubic `imresize(., 0.5)` of it), the MSCN
   coefficients `(I - mu) / (sigma + 1)`, with mu and sigma from a 7x7 Gaussian window
   (sigma 7/6, replicated borders);
3. in each 96x96 block (48x48 at the second scale), 18 features: the generalised Gaussian fit
   (shape, variance) of the coefficients, and for the products with their 4 neighbours (right,
   down, and the two diagonals, wrapped around the block) the asymmetric generalised Gaussian
   fit (shape, mean, left and right scale), all by MATLAB's moment matching over shape in
   0.2:0.001:10;
4. the 36-feature block vectors give a mean and a covariance (blocks with an undefined feature
   left out), compared with the pristine model's by
   `sqrt((mu_p - mu) pinv((cov_p + cov) / 2) (mu_p - mu)')`.

The pristine model (`mu_prisparam`, `cov_prisparam` of the release's `modelparameters.mat`) is read
from the `mmagic` wheel, which ships it as `evaluation/metrics/niqe_pris_params.npz` (the same
arrays as BasicSR's copy), with `numpy.load(allow_pickle=False)`: nothing is downloaded or
unpickled, and the wheel's code never runs (`superres.zoo.packaged`). The half-size image is MATLAB's
`imresize` with mirrored borders (`superres.ops.resize`, `border="symmetric"`): with it, the
MATLAB R2021a value that BasicSR publishes for its test image (5.72957338, the top-left
480x480 of Set14's baboon, which is all NIQE reads of it) comes out to 1e-6 (a test); with
clamped borders, 5.7191.
`superres evaluate --niqe` scores the same Y plane as PSNR, border shaved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from superres.errors import ConfigError
from superres.ops.resize import imresize
from superres.zoo.packaged import packaged_file

BLOCK = 96
#: MATLAB's search grid of the generalised Gaussian shape parameter.
SHAPES = 0.2 + 0.001 * np.arange(9801)
#: circshift offsets (rows, columns) of the four neighbour products.
NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36)) of NIQE's pristine images, from the installed mmagic wheel."""
    path = packaged_file("niqe")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            mu, cov = arrays["mu_pris_param"].reshape(-1), arrays["cov_pris_param"]
    except (OSError, ValueError, KeyError) as error:
        raise ConfigError(f"{path} is not NIQE's model parameters ({error})") from None
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ConfigError(f"{path}: NIQE's model is 36 features, found {mu.shape} and {cov.shape}")
    return mu.astype(np.float64), cov.astype(np.float64)


def loaded_niqe() -> Callable[[np.ndarray], float]:
    """`niqe`, its pristine model read now: a missing wheel fails before any model runs."""
    pristine_model()
    return niqe


def niqe(plane: np.ndarray, model: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """NIQE of a gray (H, W) plane with values in [0, 255]; needs at least 192 x 96 pixels."""
    mu_pristine, cov_pristine = pristine_model() if model is None else model
    image = np.asarray(plane, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"NIQE scores one gray plane, got shape {image.shape}")
    rows, cols = (image.shape[0] // BLOCK) * BLOCK, (image.shape[1] // BLOCK) * BLOCK
    if rows * cols < 2 * BLOCK * BLOCK:
        raise ConfigError(
            f"NIQE needs two {BLOCK}x{BLOCK} blocks; a {image.shape[1]}x{image.shape[0]} image has fewer"
        )
    image = image[:rows, :cols]
    per_scale = []
    for block in (BLOCK, BLOCK // 2):
        per_scale.append(_block_features(_mscn(image), block))
        image = imresize(image, 0.5, border="symmetric")
    features = np.concatenate(per_scale, axis=1)  # (blocks, 36)
    complete = features[~np.isnan(features).any(axis=1)]
    if len(complete) < 2:
        raise ConfigError("NIQE: too few blocks with texture to estimate a covariance (a flat image?)")
    mu = np.nanmean(features, axis=0)
    cov = np.cov(complete, rowvar=False)
    difference = mu_pristine - mu
    return float(math.sqrt(difference @ np.linalg.pinv((cov_pristine + cov) / 2) @ difference))


def _gaussian_window() -> np.ndarray:
    """fspecial('gaussian', 7, 7/6) as its separable 1-D factor (the 2-D window is its outer product)."""
    x = np.arange(-3, 4, dtype=np.float64)
    weights = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    return weights / weights.sum()


def _filter(image: np.ndarray) -> np.ndarray:
    """imfilter(image, window, 'replicate') with the Gaussian window, one axis at a time."""
    weights = _gaussian_window()
    padded = np.pad(image, 3, mode="edge")
    rows = sum(w * padded[i : i + image.shape[0], :] for i, w in enumerate(weights))
    return sum(w * rows[:, i : i + image.shape[1]] for i, w in enumerate(weights))


def _mscn(image: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients, as computequality.m makes them."""
    mu = _filter(image)
    sigma = np.sqrt(np.abs(_filter(image * image) - mu * mu))
    return (image - mu) / (sigma + 1)


def _block_features(mscn: np.ndarray, block: int) -> np.ndarray:
    """(blocks, 18): the features of each `block`-sized block, blocks in column-major order."""
    rows, cols = mscn.shape[0] // block, mscn.shape[1] // block
    features = []
    for col in range(cols):  # blkproc's order; the order does not change mean or covariance
        for row in range(rows):
            patch = mscn[row * block : (row + 1) * block, col * block : (col + 1) * block]
            features.append(_patch_features(patch))
    return np.array(features)


def _patch_features(patch: np.ndarray) -> list[float]:
    shape, left, right = _fit_aggd(patch.reshape(-1))
    features = [shape, (left + right) / 2]
    for shift in NEIGHBOUR_SHIFTS:
        products = (patch * np.roll(patch, shift, axis=(0, 1))).reshape(-1)
        shape, left, right = _fit_aggd(products)
        mean = (right - left) * math.gamma(2 / shape) / math.gamma(1 / shape)
        features += [shape, mean, left, right]
    return features


def _shape_ratios() -> np.ndarray:
    gamma = np.vectorize(math.gamma)
    return gamma(2 / SHAPES) ** 2 / (gamma(1 / SHAPES) * gamma(3 / SHAPES))


SHAPE_RATIOS = _shape_ratios()


def _fit_aggd(values: np.ndarray) -> tuple[float, float, float]:
    """(shape, left scale, right scale) of an asymmetric generalised Gaussian, by moment matching.

    A side with no values makes its scale NaN, as in MATLAB; such blocks are left out later.
    """
    negative, positive = values[values < 0], values[values > 0]
    left_std = math.sqrt(np.mean(negative**2)) if negative.size else math.nan
    right_std = math.sqrt(np.mean(positive**2)) if positive.size else math.nan
    gamma_hat = left_std / right_std
    mean_square = np.mean(values**2)
    r_hat = np.mean(np.abs(values)) ** 2 / mean_square if mean_square > 0 else math.nan
    r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    if math.isnan(r_hat_norm):
        return math.nan, math.nan, math.nan
    shape = float(SHAPES[np.argmin((SHAPE_RATIOS - r_hat_norm) ** 2)])
    scale = math.sqrt(math.gamma(1 / shape) / math.gamma(3 / shape))
    return shape, left_std * scale, right_std * scale
