"""The named pixel losses (`superres.training.losses`): the table every part of training reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from superres.cli import build_parser
from superres.errors import ConfigError
from superres.training.config import TrainConfig, resolve_config
from superres.training.loop import train
from superres.training.losses import CHARBONNIER_EPS, PIXEL_LOSSES, pixel_loss
from superres.training.runlog import read_history
from test_train import data_dirs, tiny_config  # noqa: F401 (data_dirs: the fixture)


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 9, 7, generator=generator), torch.rand(2, 3, 9, 7, generator=generator)


def test_mse_and_l1_are_torchs_own_functions_bit_for_bit() -> None:
    sr, hr = _pair()
    for name, reference in (("mse", F.mse_loss), ("l1", F.l1_loss)):
        ours_sr, theirs_sr = sr.clone().requires_grad_(), sr.clone().requires_grad_()
        ours, theirs = pixel_loss(name)(ours_sr, hr), reference(theirs_sr, hr)
        assert ours.shape == () and torch.equal(ours, theirs), name
        ours.backward()
        theirs.backward()
        assert torch.equal(ours_sr.grad, theirs_sr.grad), name


def test_charbonnier_is_the_mean_of_sqrt_of_squared_error_plus_eps_squared() -> None:
    sr, hr = _pair(1)
    expected = np.mean(np.sqrt((sr.double().numpy() - hr.double().numpy()) ** 2 + 1e-3**2))
    value = pixel_loss("charbonnier")(sr, hr)
    assert CHARBONNIER_EPS == 1e-3 and value.shape == ()
    assert float(value) == pytest.approx(expected, rel=1e-6)
    # A smooth L1: eps where the images agree, above L1 by at most eps elsewhere.
    assert float(pixel_loss("charbonnier")(hr, hr)) == pytest.approx(CHARBONNIER_EPS, rel=1e-6)
    assert float(F.l1_loss(sr, hr)) < float(value) <= float(F.l1_loss(sr, hr)) + CHARBONNIER_EPS
    leaf = sr.clone().requires_grad_()
    pixel_loss("charbonnier")(leaf, hr).backward()
    assert torch.isfinite(leaf.grad).all()
    same = hr.clone().requires_grad_()
    pixel_loss("charbonnier")(same, hr).backward()  # sqrt at eps, not at 0: no NaN gradient
    assert torch.equal(same.grad, torch.zeros_like(same.grad))


def test_an_unknown_loss_is_one_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="loss must be one of mse, l1, charbonnier, got 'ssim'"):
        pixel_loss("ssim")
    with pytest.raises(ConfigError, match="loss must be one of mse, l1, charbonnier, got 'ssim'"):
        resolve_config(TrainConfig(model="srcnn", scale=2, train_data=("x",), iterations=1, loss="ssim"))
    with pytest.raises(ConfigError, match="loss must be one of"):
        pixel_loss(["mse"])  # type: ignore[arg-type]  # a JSON list, not a crash


def test_the_train_flags_loss_choices_are_the_tables_keys() -> None:
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    train_parser = subparsers.choices["train"]
    loss_flag = next(a for a in train_parser._actions if a.dest == "loss")
    assert loss_flag.option_strings == ["--loss"]
    assert list(loss_flag.choices) == list(PIXEL_LOSSES)


def test_every_named_loss_is_accepted_and_trains_plain_distilled_and_as_a_gan(
    data_dirs: tuple[Path, Path], tmp_path: Path  # noqa: F811 (the fixture)
) -> None:
    first_losses = {}
    for name in PIXEL_LOSSES:
        one_step = {"iterations": 1, "log_every": 1, "val_data": None, "loss": name}
        assert resolve_config(tiny_config(data_dirs, **one_step)).loss == name
        runs = {
            "plain": tiny_config(data_dirs, **one_step),
            "distilled": tiny_config(data_dirs, **one_step, teacher="bicubic"),
            "gan": tiny_config(
                data_dirs, **one_step, model="srresnet", model_kwargs={"num_blocks": 1, "num_features": 8},
                batch_size=2, gan=True, discriminator_features=4,
            ),
        }
        for kind, config in runs.items():
            summary = train(config, tmp_path / f"{name}-{kind}")
            assert summary.stop_reason == "completed" and summary.steps == 1, (name, kind)
            (row,) = read_history(tmp_path / f"{name}-{kind}")
            assert np.isfinite(row["loss"]) and row["loss"] > 0, (name, kind)
            if kind == "plain":
                first_losses[name] = row["loss"]
    # The same first batch through the same initial weights: the loss is the one the config names.
    assert first_losses["mse"] < first_losses["l1"] < first_losses["charbonnier"]
    assert first_losses["charbonnier"] <= first_losses["l1"] + CHARBONNIER_EPS
