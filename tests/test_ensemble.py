"""Geometric self-ensemble: the right inverse for each symmetry, tiling still exact, CLI labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from superres.cli import main
from superres.images import write_image
from superres.inference.pipeline import upscale_image
from superres.models import create_model
from superres.ops.ensemble import DIHEDRAL_TRANSFORMS, SelfEnsemble, self_ensemble


def lopsided_network(seed: int = 0) -> nn.Module:
    """A random RED-Net: its convolutions favour directions, so it is not flip/rotation symmetric."""
    torch.manual_seed(seed)
    model = create_model("rednet", 2, num_layers=2, num_features=8)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return model.eval()


def test_the_eight_transforms_are_the_symmetries_of_a_square() -> None:
    assert len(set(DIHEDRAL_TRANSFORMS)) == 8


@torch.no_grad()
def test_the_ensemble_of_any_network_is_symmetric() -> None:
    # Averaging over the group makes the result equivariant whatever the network does; a wrong
    # inverse for any transform breaks this.
    network = lopsided_network()
    images = torch.rand(1, 1, 9, 13)
    ensembled = self_ensemble(network)
    plain = ensembled(images)
    assert not torch.allclose(network(images), plain, atol=1e-3)  # the test network is lopsided
    torch.testing.assert_close(ensembled(images.flip(-1)), plain.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(ensembled(images.flip(-2)), plain.flip(-2), atol=1e-5, rtol=0)
    turned = ensembled(torch.rot90(images, 1, dims=(-2, -1)))
    torch.testing.assert_close(turned, torch.rot90(plain, 1, dims=(-2, -1)), atol=1e-5, rtol=0)


@torch.no_grad()
def test_a_symmetric_model_is_unchanged() -> None:
    bicubic = create_model("bicubic", 3)
    images = torch.rand(2, 3, 7, 10)
    torch.testing.assert_close(SelfEnsemble(bicubic)(images), bicubic(images), atol=1e-6, rtol=0)


@torch.no_grad()
def test_the_fast_cpu_copy_of_an_ensemble_ensembles_its_own_weights() -> None:
    from superres.inference.fast import optimize_for_inference

    network = lopsided_network(seed=2)
    ensemble = SelfEnsemble(network)
    images = torch.rand(1, 1, 11, 8)
    expected = ensemble(images)
    fast = optimize_for_inference(ensemble)
    for parameter in network.parameters():  # the copy must not reach back to the original
        parameter.zero_()
    torch.testing.assert_close(fast(images), expected, atol=1e-5, rtol=0)


def test_tiled_equals_untiled_with_the_ensemble() -> None:
    network = lopsided_network(seed=1)
    pixels = np.random.default_rng(0).integers(0, 255, (29, 23, 3), dtype=np.uint8, endpoint=True)
    whole = upscale_image(pixels, network, tile=None, self_ensemble=True)
    tiled = upscale_image(pixels, network, tile=9, self_ensemble=True)
    single = upscale_image(pixels, network, tile=None)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    assert np.abs(whole.astype(int) - single.astype(int)).max() > 1  # it did something


def test_command_line_labels_ensemble_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hr_dir = tmp_path / "Tiny" / "HR"
    hr_dir.mkdir(parents=True)
    write_image(hr_dir / "a.png", np.random.default_rng(1).integers(0, 255, (24, 24, 3), dtype=np.uint8))
    assert main(["evaluate", str(hr_dir), "--scale", "2", "--self-ensemble", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert rows[0]["model"] == "bicubic+x8" and rows[0]["dataset"] == "Tiny"
    image = tmp_path / "photo.png"
    write_image(image, np.random.default_rng(2).integers(0, 255, (12, 10, 3), dtype=np.uint8))
    assert main(["upscale", str(image), "--model", "bicubic", "--self-ensemble"]) == 0
    assert "bicubic (x8 self-ensemble)" in capsys.readouterr().out
    assert (tmp_path / "photo_x2.png").is_file()
