"""BT.601 colour conversion with MATLAB's constants."""

from __future__ import annotations

import numpy as np
import torch

from superres.ops.color import (
    rgb_to_y,
    rgb_to_y_tensor,
    rgb_to_ycbcr,
    rgb_to_ycbcr_tensor,
    ycbcr_to_rgb,
    ycbcr_to_rgb_tensor,
)


def test_known_values():
    # MATLAB: rgb2ycbcr([0 0 0]) = [16 128 128]/255, rgb2ycbcr([1 1 1]) = [235 128 128]/255,
    # rgb2ycbcr([1 0 0]) = [81.481 90.203 240]/255.
    np.testing.assert_allclose(rgb_to_ycbcr(np.array([0.0, 0.0, 0.0])) * 255, [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(rgb_to_ycbcr(np.array([1.0, 1.0, 1.0])) * 255, [235, 128, 128], atol=1e-9)
    np.testing.assert_allclose(
        rgb_to_ycbcr(np.array([1.0, 0.0, 0.0])) * 255, [81.481, 90.203, 240.0], atol=1e-9
    )


def test_round_trip_and_y():
    rgb = np.random.default_rng(0).random((5, 6, 3))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-12)
    np.testing.assert_allclose(rgb_to_y(rgb), rgb_to_ycbcr(rgb)[..., 0], atol=1e-12)


def test_tensor_versions_match_numpy():
    rgb = np.random.default_rng(1).random((2, 4, 5, 3))
    tensor = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    ycbcr = rgb_to_ycbcr_tensor(tensor)
    np.testing.assert_allclose(ycbcr.permute(0, 2, 3, 1).numpy(), rgb_to_ycbcr(rgb), atol=1e-12)
    np.testing.assert_allclose(ycbcr_to_rgb_tensor(ycbcr).numpy(), tensor.numpy(), atol=1e-12)
    np.testing.assert_allclose(rgb_to_y_tensor(tensor)[:, 0].numpy(), rgb_to_y(rgb), atol=1e-12)
