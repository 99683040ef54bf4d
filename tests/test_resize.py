"""MATLAB-compatible resize: exactness against the MATLAB-made LR files, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from superres.ops.resize import imresize, imresize_tensor, modcrop, upscale_integer_tensor


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_matlab_lr_files(shared_data, scale):
    """resize(modcrop(HR, s), 1/s) equals MATLAB's LR_bicubic images (at most rare off-by-ones)."""
    for set_name in ("Set5", "Set14"):
        hr_dir = shared_data / "benchmark" / set_name / "HR"
        for path in sorted(hr_dir.glob("*.png")):
            hr = np.array(Image.open(path))
            reference = np.array(
                Image.open(shared_data / "benchmark" / set_name / "LR_bicubic" / f"X{scale}" / path.name)
            )
            lr = imresize(modcrop(hr, scale), 1 / scale)
            assert lr.dtype == np.uint8 and lr.shape == reference.shape, path.name
            difference = np.abs(lr.astype(int) - reference.astype(int))
            assert difference.max() <= 1, f"{set_name}/{path.name} x{scale}"
            assert (difference > 0).mean() < 0.001, f"{set_name}/{path.name} x{scale}"


def test_output_sizes_follow_matlab():
    image = np.zeros((10, 7), dtype=np.uint8)
    assert imresize(image, 0.5).shape == (5, 4)  # ceil(7 * 0.5)
    assert imresize(image, 3).shape == (30, 21)
    assert imresize(image, size=(4, 9)).shape == (4, 9)
    with pytest.raises(ValueError, match="exactly one"):
        imresize(image)


def test_constant_image_stays_constant():
    image = np.full((9, 11, 3), 77, dtype=np.uint8)
    for scale in (0.25, 1 / 3, 0.5, 2, 3):
        assert np.all(imresize(image, scale) == 77)


def test_cubic_reproduces_a_linear_ramp_away_from_the_edges():
    ramp = np.tile(np.arange(40, dtype=np.float64), (8, 1))
    up = imresize(ramp, 2)
    # Output column j sits at input coordinate (j + 0.5) / 2 - 0.5 (0-based).
    expected = (np.arange(80) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(up[4, 6:-6], expected[6:-6], atol=1e-12)


def test_known_values():
    # Hand-computed: upscaling [0, 255] by 2 samples at input coordinates -0.25, 0.25, 0.75, 1.25
    # with clamped edges; Keys' cubic gives weights -0.0703125, 0.203125, 0.796875, 1.0703125 on 255
    # (the overshoot past the edges is what makes bicubic ring).
    row = np.array([[0.0, 255.0]])
    up = imresize(row, size=(1, 4))
    np.testing.assert_allclose(up[0], np.array([-0.0703125, 0.203125, 0.796875, 1.0703125]) * 255, atol=1e-9)


def test_uint8_rounds_between_passes_and_float_does_not():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(13, 17), dtype=np.uint8)
    as_uint8 = imresize(image, 0.5)
    as_float = imresize(image.astype(np.float64), 0.5)
    assert as_uint8.dtype == np.uint8 and as_float.dtype == np.float64
    assert np.abs(as_uint8 - as_float).max() <= 1.0


@pytest.mark.parametrize("scale", [2, 3, 4, 0.5, 1 / 3, 0.25])
@pytest.mark.parametrize("kernel", ["bicubic", "bilinear"])
def test_tensor_matches_numpy(scale, kernel):
    rng = np.random.default_rng(1)
    image = rng.random((2, 3, 15, 22))
    tensor = imresize_tensor(torch.from_numpy(image), scale, kernel=kernel).numpy()
    for n in range(2):
        for c in range(3):
            np.testing.assert_allclose(tensor[n, c], imresize(image[n, c], scale, kernel=kernel), atol=1e-12)


def test_polyphase_upscale_handles_tiny_inputs_and_gradients():
    x = torch.rand(1, 2, 2, 5, dtype=torch.float64, requires_grad=True)
    out = upscale_integer_tensor(x, 3)
    assert out.shape == (1, 2, 6, 15)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_modcrop():
    assert modcrop(np.zeros((11, 14, 3)), 4).shape == (8, 12, 3)
