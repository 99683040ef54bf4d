"""tools/heldout_degradations.py: the held-out LR sets are exact-size, reproducible, and each
degradation does what its name says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "heldout_degradations", Path(__file__).parents[1] / "tools" / "heldout_degradations.py"
)
heldout = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(heldout)


def _hr() -> np.ndarray:
    y, x = np.mgrid[0:50, 0:66]
    return np.stack([(x * 3) % 256, (y * 5) % 256, ((x + y) * 2) % 256], axis=2).astype(np.uint8)


@pytest.mark.parametrize("degradation", heldout.DEGRADATIONS)
def test_each_degradation_is_reproducible_and_exact_size(degradation: str) -> None:
    first = heldout.degrade(_hr(), 4, degradation, np.random.default_rng(1))
    again = heldout.degrade(_hr(), 4, degradation, np.random.default_rng(1))
    assert first.shape == (12, 16, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)


def test_lower_jpeg_quality_and_noise_move_further_from_the_clean_lr() -> None:
    clean = heldout.apply_preset(_hr(), 2, "bicubic", name="").astype(float)
    error = {
        name: np.abs(heldout.degrade(_hr(), 2, name, np.random.default_rng(0)) - clean).mean()
        for name in ("jpeg90", "jpeg50", "graynoise10")
    }
    assert 0 < error["jpeg90"] < error["jpeg50"]
    assert error["graynoise10"] > 4  # sigma 10: mean |noise| is about 8 levels before clipping


def test_unknown_degradation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown degradation"):
        heldout.degrade(_hr(), 2, "jpeg-75", np.random.default_rng(0))
