"""PSNR and SSIM: golden values and protocol handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from superres.ops.metrics import phase_error_spread, psnr, score_pair, ssim, y_channel


def test_psnr_golden():
    hr = np.full((20, 20), 100.0)
    assert psnr(hr + 1, hr, shave=0) == pytest.approx(10 * math.log10(255**2), abs=1e-12)  # 48.1308
    assert psnr(hr + 5, hr, shave=0) == pytest.approx(34.1514, abs=1e-4)
    assert psnr(hr, hr, shave=0) == float("inf")


def test_psnr_shaves_the_border():
    hr = np.zeros((20, 20))
    sr = hr.copy()
    sr[:2, :] = 255  # only the border differs
    assert psnr(sr, hr, shave=2) == float("inf")
    assert psnr(sr, hr, shave=1) < 20


def test_ssim_of_constant_images_is_the_luminance_term():
    a, b = 100.0, 120.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(np.full((16, 16), a), np.full((16, 16), b), shave=0) == pytest.approx(expected, abs=1e-12)


def test_ssim_matches_a_direct_window_computation():
    rng = np.random.default_rng(0)
    hr = rng.random((14, 15)) * 255
    sr = np.clip(hr + rng.normal(0, 10, hr.shape), 0, 255)
    coords = np.arange(11) - 5
    g = np.exp(-(coords**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(hr.shape[0] - 10):
        for j in range(hr.shape[1] - 10):
            x, y = sr[i : i + 11, j : j + 11], hr[i : i + 11, j : j + 11]
            mx, my = (window * x).sum(), (window * y).sum()
            vx, vy = (window * x * x).sum() - mx**2, (window * y * y).sum() - my**2
            cxy = (window * x * y).sum() - mx * my
            values.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert ssim(sr, hr, shave=0) == pytest.approx(np.mean(values), abs=1e-12)
    assert ssim(hr, hr, shave=0) == pytest.approx(1.0)


def test_y_channel_treats_single_channel_gray_as_y():
    gray = np.full((4, 4, 1), 200, dtype=np.uint8)
    assert np.all(y_channel(gray) == 200)
    rgb = np.full((4, 4, 3), 255, dtype=np.uint8)
    np.testing.assert_allclose(y_channel(rgb), 235.0)


def test_score_pair_protocol():
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    value, structure = score_pair(hr, hr, scale=2)
    assert value == float("inf") and structure == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        score_pair(hr, hr[:-1], scale=2)
    with pytest.raises(ValueError, match="too small"):
        psnr(hr[:4, :4, 0], hr[:4, :4, 0], shave=2)


def test_phase_error_spread_measures_a_planted_lattice_and_ignores_a_uniform_error() -> None:
    rng = np.random.default_rng(0)
    hr = rng.uniform(0, 255, (48, 40))
    offsets = np.array([[1.0, -1.0], [2.0, 0.0]])  # one bias per 2x2 output phase
    lattice = hr + np.tile(offsets, (24, 20))
    assert phase_error_spread(lattice, hr, scale=2) == pytest.approx(offsets.std())
    assert phase_error_spread(hr + 3.0, hr, scale=2) == pytest.approx(0.0, abs=1e-12)
    # Noise without a period averages out: a small spread.
    assert phase_error_spread(hr + rng.normal(0, 5, hr.shape), hr, scale=2) < 0.5
