"""The recipe of docs/architecture.md, done for real: a new network is one new file plus one registry line.

The network below is written to a fresh module file (as a contributor would add
`src/superres/models/tiny.py`), registered with one entry, and then runs through the paths that
read only its `ModelInfo` card: the model contract, the receptive field that tiling trusts, the
tiled upscaler, a checkpoint round trip and the name grammar.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from superres import models
from superres.errors import ModelError
from superres.inference.pipeline import upscale_image
from superres.models import create_model, get_model_info, list_models
from superres.zoo.checkpoint import load_model, save_checkpoint
from superres.zoo.names import parse_model

NETWORK_FILE = '''
"""TinyNet: two 3x3 convolutions and a pixel shuffle, the smallest LR-space network."""

from torch import nn

from superres.models.blocks import ModelInfo, post_upsampled_receptive_field


class TinyNet(nn.Module):
    def __init__(self, scale: int, num_features: int = 8) -> None:
        super().__init__()
        self.scale = scale
        self.info = TINY_INFO
        self.model_kwargs = {"num_features": num_features}
        self.body = nn.Sequential(
            nn.Conv2d(1, num_features, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(num_features, scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, lr):
        return self.body(lr)


TINY_INFO = ModelInfo(
    name="tiny",
    channels="Y",
    scales=(2, 3, 4),
    pre_upsample=False,
    degradation="bicubic",
    paper="none: the example of docs/architecture.md",
    deviations="none",
    default_kwargs={"num_features": 8},
    receptive_field_function=lambda scale, kwargs: post_upsampled_receptive_field(2, False),
    activation_function=lambda scale, kwargs: 2.0 * kwargs["num_features"],
    test_kwargs={"num_features": 4},
)
'''


@pytest.fixture
def tiny_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "tiny.py"
    path.write_text(textwrap.dedent(NETWORK_FILE), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("superres_example_tiny", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "superres_example_tiny", module)
    spec.loader.exec_module(module)
    # The one registry line.
    monkeypatch.setitem(models._REGISTRY, "tiny", (module.TINY_INFO, module.TinyNet))
    return module


def test_a_registered_network_runs_every_card_driven_path(tiny_registered, tmp_path: Path) -> None:
    assert "tiny" in list_models() and get_model_info("tiny").receptive_field == 2
    torch.manual_seed(0)
    model = create_model("tiny", 3).eval()
    assert model(torch.rand(1, 1, 7, 9)).shape == (1, 1, 21, 27)
    # Tiling trusts the card's receptive field: tiled output equals one pass.
    pixels = np.random.default_rng(0).integers(0, 256, (23, 31, 3), dtype=np.uint8)
    np.testing.assert_array_equal(upscale_image(pixels, model, tile=8), upscale_image(pixels, model))
    # A checkpoint of it rebuilds the same network, and the grammar takes the file as a model.
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, model, {"model": "tiny", "scale": 3, "model_kwargs": model.model_kwargs,
                                        "channels": "Y"})
    loaded, _ = load_model(checkpoint)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert parse_model(str(checkpoint)).kind == "checkpoint"
    with pytest.raises(ModelError, match="'tiny' needs trained weights"):  # the grammar knows it too
        parse_model("tiny", 3)
