"""GAN training (`superres.training.gan`): discriminators, losses, steps and exact resume. CPU only."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from image_helpers import smooth_image
from superres.errors import CheckpointError, ConfigError
from superres.images import write_image
from superres.models import create_model
from superres.training.config import TrainConfig, config_from_dict, load_run_config, resolve_config
from superres.training.gan.discriminators import (
    UNetDiscriminator,
    VGGStyleDiscriminator,
    create_discriminator,
)
from superres.training.gan.losses import (
    RandomFeatures,
    VGGFeatures,
    create_perceptual_loss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    phase_lattice_loss,
)
from superres.training.loop import train
from superres.training.runlog import GAN_HISTORY_COLUMNS, HISTORY_COLUMNS
from superres.zoo.checkpoint import load_checkpoint
from test_train import act_as_rank, spawn_two_ranks, tiny_config

LAST = "last.safetensors"
TINY_SRRESNET = {"num_blocks": 1, "num_features": 8, "batch_norm": True, "channels": "RGB"}


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("gan_data")
    (root / "hr").mkdir()
    (root / "val").mkdir()
    for index in range(2):
        write_image(root / "hr" / f"train{index}.png", smooth_image(36, 40, 3))
    write_image(root / "val" / "val0.png", smooth_image(24, 28, 3))
    return root / "hr", root / "val"


def gan_config(data_dirs: tuple[Path, Path], **changes: object) -> TrainConfig:
    """test_train's tiny run with a tiny SRResNet as the generator of a GAN."""
    values: dict[str, object] = {
        "model": "srresnet", "model_kwargs": TINY_SRRESNET, "batch_size": 2, "iterations": 3,
        "learning_rate": 1e-3, "val_every": 3, "checkpoint_every": 3, "log_every": 1, "seed": 5,
        "gan": True, "discriminator_features": 4, "adversarial_weight": 0.1,
    }
    return tiny_config(data_dirs, **{**values, **changes})


# --- discriminators ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(16, 16), (20, 28)])
def test_discriminator_shapes(channels: int, size: tuple[int, int]) -> None:
    images = torch.rand(2, channels, *size)
    vgg = VGGStyleDiscriminator(channels, num_features=4)
    logits, features = vgg.forward_with_features(images)
    assert logits.shape == (2, 1) and len(features) == 8 and features[-1].shape[1] == 32
    unet = UNetDiscriminator(channels, num_features=4)
    logits, features = unet.forward_with_features(images)
    assert logits.shape == (2, 1, *size) and [f.shape[1] for f in features] == [16, 8, 4]
    unet.eval()  # in training mode each call takes a power-iteration step of the spectral norm
    assert torch.equal(unet(images), unet.forward_with_features(images)[0])
    # Real-ESRGAN's choice: spectral norm on the inner convolutions, so it has power-iteration state.
    assert any("parametrizations.weight" in name for name in unet.state_dict())
    with pytest.raises(ConfigError, match="discriminator must be one of vgg, unet"):
        create_discriminator("patchgan", 3, 4)


# --- losses --------------------------------------------------------------------------------------


def test_adversarial_losses() -> None:
    real, fake = torch.tensor([[3.0], [2.0]]), torch.tensor([[-2.0], [-3.0]])
    zero = torch.zeros(2, 1)
    log2 = torch.log(torch.tensor(2.0))
    for kind in ("vanilla", "relativistic"):
        assert torch.allclose(discriminator_loss(zero, zero, kind), log2)
        # A discriminator that tells them apart has a low loss, and its generator a high one.
        assert discriminator_loss(real, fake, kind) < 0.1 < generator_adversarial_loss(real, fake, kind)
    # ESRGAN's relativistic generator loss is the discriminator's with real and fake swapped.
    assert torch.equal(generator_adversarial_loss(real, fake, "relativistic"),
                       discriminator_loss(fake, real, "relativistic"))
    assert torch.allclose(generator_adversarial_loss(real, fake, "vanilla"), F.softplus(-fake).mean())


def test_random_feature_loss_is_deterministic_for_a_seed() -> None:
    rng_before = torch.get_rng_state()
    first, again, other = RandomFeatures(3, seed=7), RandomFeatures(3, seed=7), RandomFeatures(3, seed=8)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the run's random stream is untouched
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])
    assert not torch.equal(first.state_dict()["stages.0.0.weight"], other.state_dict()["stages.0.0.weight"])
    assert [f.shape[1:] for f in first(torch.rand(1, 3, 16, 16))] == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]
    assert not any(p.requires_grad for p in first.parameters())
    loss = create_perceptual_loss("random", 3, F.l1_loss, layer="relu5_4", weights_path=None, seed=7)
    hr = torch.rand(2, 3, 16, 16)
    sr = (hr + 0.1 * torch.randn_like(hr)).requires_grad_(True)
    assert float(loss(hr, hr)) == 0.0
    value = loss(sr, hr)
    assert value > 0 and torch.equal(value, loss(sr, hr))
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert create_perceptual_loss("none", 3, F.l1_loss, layer="relu5_4", weights_path=None) is None


def _vgg16_head(channels_first_conv: int = 3) -> dict[str, torch.Tensor]:
    """torchvision vgg16 `features.0`..`features.7` (up to relu2_2), random values."""
    shapes = {0: (64, channels_first_conv), 2: (64, 64), 5: (128, 64), 7: (128, 128)}
    tensors = {}
    for index, (out_channels, in_channels) in shapes.items():
        tensors[f"features.{index}.weight"] = 0.05 * torch.randn(out_channels, in_channels, 3, 3)
        tensors[f"features.{index}.bias"] = torch.zeros(out_channels)
    tensors["classifier.0.weight"] = torch.zeros(4, 4)  # other tensors of the file are ignored
    return tensors


def test_vgg_loss_reads_a_local_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "vgg16.safetensors"
    tensors = _vgg16_head()
    save_file(tensors, str(path))
    features = VGGFeatures("vgg16", "relu1_2", path, channels=3)
    image = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (image - mean) / std
    for index in (0, 2):
        weight, bias = tensors[f"features.{index}.weight"], tensors[f"features.{index}.bias"]
        x = F.relu(F.conv2d(x, weight, bias, padding=1))
    assert torch.allclose(features(image)[0], x, atol=1e-6)
    deeper = VGGFeatures("vgg16", "conv2_2", path, channels=1)  # Y: repeated to gray RGB
    assert deeper(torch.rand(1, 1, 8, 8))[0].shape == (1, 128, 4, 4)
    both = VGGFeatures("vgg16", "relu1_2, conv2_2", path, channels=3)  # one map per listed layer
    assert [tuple(m.shape) for m in both(image)] == [(1, 64, 8, 8), (1, 128, 4, 4)]
    assert torch.allclose(both(image)[0], x, atol=1e-6)
    with pytest.raises(ConfigError, match="'relu5_9' is not a layer of vgg16"):
        VGGFeatures("vgg16", "relu5_9", path, channels=3)


def test_a_vgg_file_of_the_wrong_layout_is_one_clear_error(tmp_path: Path) -> None:
    wrong = tmp_path / "gray.safetensors"
    save_file(_vgg16_head(channels_first_conv=1), str(wrong))
    with pytest.raises(ConfigError) as caught:
        VGGFeatures("vgg16", "relu2_2", wrong, channels=3)
    message = str(caught.value)
    assert "\n" not in message and "is not a torchvision vgg16 state dict" in message
    assert "'features.0.weight' has shape (64, 1, 3, 3), expected (64, 3, 3, 3)" in message
    short = tmp_path / "short.safetensors"
    save_file({k: v for k, v in _vgg16_head().items() if not k.startswith("features.5")}, str(short))
    with pytest.raises(ConfigError, match="'features.5.weight' missing"):
        VGGFeatures("vgg16", "relu2_2", short, channels=3)
    pickled = tmp_path / "vgg16.pth"
    pickled.write_bytes(pickle.dumps({"features.0.weight": [0.0]}))
    with pytest.raises(ConfigError, match="not a safetensors file"):
        VGGFeatures("vgg16", "relu1_1", pickled, channels=3)
    with pytest.raises(ConfigError, match="VGG weights file not found"):
        VGGFeatures("vgg19", "relu5_4", tmp_path / "absent.safetensors", channels=3)
    with pytest.raises(ConfigError, match="needs vgg_weights"):
        create_perceptual_loss("vgg19", 3, F.mse_loss, layer="relu5_4", weights_path=None)


def test_the_phase_term_measures_a_planted_lattice_and_ignores_content() -> None:
    hr = torch.rand(3, 2, 16, 16)
    offsets = torch.tensor([[1.0, -1.0], [2.0, 0.0]]) / 255
    lattice = hr + offsets.repeat(8, 8)
    expected = float(offsets.std(unbiased=False))
    assert float(phase_lattice_loss(lattice, hr, 2)) == pytest.approx(expected)
    assert float(phase_lattice_loss(hr + 0.1, hr, 2)) < 1e-5  # a uniform error has no lattice
    sr = lattice.clone().requires_grad_(True)
    phase_lattice_loss(sr, hr, 2).backward()
    assert sr.grad.abs().sum() > 0  # trainable


def test_feature_matching_is_zero_for_the_same_maps() -> None:
    maps = [torch.rand(2, 4, 8, 8), torch.rand(2, 8, 4, 4)]
    assert float(feature_matching_loss(maps, maps)) == 0.0
    assert float(feature_matching_loss(maps, [m + 1 for m in maps])) == pytest.approx(1.0)


# --- configuration -------------------------------------------------------------------------------


def test_gan_settings_leave_a_non_gan_config_unchanged(data_dirs: tuple[Path, Path]) -> None:
    plain = gan_config(data_dirs, gan=False, discriminator_features=64, adversarial_weight=1e-3)
    assert "gan" not in plain.to_dict() and "adversarial_weight" not in plain.to_dict()
    assert config_from_dict(plain.to_dict()) == plain
    with pytest.raises(ConfigError, match="'perceptual_weight' is a GAN setting: it needs gan: true"):
        resolve_config(plain.replace(perceptual_weight=0.5))
    with pytest.raises(ConfigError, match="adversarial_loss must be one of vanilla, relativistic"):
        resolve_config(gan_config(data_dirs, adversarial_loss="hinge"))
    with pytest.raises(ConfigError, match="pixel_weight must be a number >= 0"):
        resolve_config(gan_config(data_dirs, pixel_weight=-1.0))


# --- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"discriminator": "unet", "adversarial_loss": "relativistic", "perceptual": "none",
         "feature_matching_weight": 0.1, "loss": "l1", "ema_decay": 0.9, "phase_weight": 1.0},
    ],
    ids=["vgg-vanilla-random", "unet-relativistic-matching-phase"],
)
def test_a_few_gan_steps_change_both_networks(
    data_dirs: tuple[Path, Path], tmp_path: Path, changes: dict[str, object]
) -> None:
    config = gan_config(data_dirs, **changes)
    summary = train(config, tmp_path / "run")
    assert summary.steps == 3 and summary.best_psnr is not None
    # The initial networks, drawn the way the trainer draws them: seed, generator, discriminator.
    torch.manual_seed(config.seed)
    generator = create_model("srresnet", 2, **TINY_SRRESNET)
    discriminator = create_discriminator(config.discriminator, 3, 4)
    weights, metadata, extra = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert metadata["config"]["gan"] is True and metadata["training"]["discriminator_optimizer"]
    initial = generator.state_dict()
    assert any(not torch.equal(tensor, initial[name]) for name, tensor in weights.items())
    disc_initial = discriminator.state_dict()
    saved_disc = {name[len("disc."):]: t for name, t in extra.items() if name.startswith("disc.")}
    assert saved_disc.keys() == disc_initial.keys()
    assert any(not torch.equal(t, disc_initial[n]) for n, t in saved_disc.items() if t.is_floating_point())
    assert {name.split(".")[0] for name in extra} >= {"disc", "disc_optim", "optim"}
    with open(tmp_path / "run" / "history.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == list(HISTORY_COLUMNS + GAN_HISTORY_COLUMNS) and len(rows) == 3
    assert all(float(row["loss_discriminator"]) > 0 for row in rows)
    assert (tmp_path / "run" / "gan_loss.png").is_file() and (tmp_path / "run" / "psnr.png").is_file()
    # best.safetensors holds the generator alone: an ordinary model checkpoint.
    _, _, best_extra = load_checkpoint(tmp_path / "run" / "best.safetensors")
    assert best_extra == {}


def test_a_killed_gan_run_resumed_is_bit_identical(data_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    config = gan_config(data_dirs, iterations=6, schedule="cosine", ema_decay=0.9, grad_clip=1.0,
                        feature_matching_weight=0.1, discriminator_learning_rate=2e-3, val_every=6)
    train(config, tmp_path / "whole")
    # Killed after step 4: the checkpoint of step 3 survives, step 4 is lost.
    assert train(config, tmp_path / "resumed", stop_after=4).stop_reason == "stop_after"
    resumed = train(load_run_config(tmp_path / "resumed"), tmp_path / "resumed", resume=True)
    assert resumed.steps == 6
    expected_weights, expected_metadata, expected_extra = load_checkpoint(tmp_path / "whole" / LAST)
    weights, metadata, extra = load_checkpoint(tmp_path / "resumed" / LAST)
    assert weights.keys() == expected_weights.keys() and extra.keys() == expected_extra.keys()
    # Generator, discriminator (disc.), both optimizers (optim., disc_optim.), the EMA (ema.).
    for prefix in ("disc.", "disc_optim.", "optim.", "ema."):
        assert any(name.startswith(prefix) for name in extra), prefix
    for name, tensor in {**weights, **extra}.items():
        if name.startswith("rng."):
            continue
        assert torch.equal(tensor, {**expected_weights, **expected_extra}[name]), name
    key = "discriminator_optimizer"
    assert metadata["training"][key] == expected_metadata["training"][key]


def test_resuming_a_psnr_run_as_a_gan_is_one_clear_error(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    plain = gan_config(data_dirs, gan=False, discriminator_features=64, adversarial_weight=1e-3,
                       iterations=2, checkpoint_every=1, val_data=None)
    train(plain, tmp_path / "run")
    assert "gan" not in load_checkpoint(tmp_path / "run" / "last.safetensors")[1]["config"]
    with pytest.raises(CheckpointError, match="holds no discriminator: it is not a GAN run"):
        train(plain.replace(gan=True, iterations=4), tmp_path / "run", resume=True)


def _gan_ddp_worker(rank: int, world_size: int, port: int, config_values: dict, root: str) -> None:
    """Train as one of two ranks; save this rank's generator and discriminator parameters."""
    import importlib

    act_as_rank(rank, world_size, port)
    gan_trainer = importlib.import_module("superres.training.gan.trainer")
    trainer = importlib.import_module("superres.training.loop")
    held: dict[str, torch.nn.Module] = {}
    create_generator, create_critic = trainer.create_model, gan_trainer.create_discriminator
    trainer.create_model = lambda *a, **k: held.setdefault("generator", create_generator(*a, **k))
    gan_trainer.create_discriminator = lambda *a, **k: held.setdefault("disc", create_critic(*a, **k))
    train(config_from_dict(config_values), Path(root) / "run")
    # Parameters: batch-norm statistics are each rank's own (DDP broadcasts rank 0's at forward).
    state = {
        f"{part}.{name}": p.detach().contiguous().clone()
        for part in held for name, p in held[part].named_parameters()
    }
    save_file(state, str(Path(root) / f"rank{rank}.safetensors"))


@pytest.mark.slow  # seconds: left out by `make test-fast`
def test_two_processes_with_ddp_train_both_networks_alike(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    config = gan_config(data_dirs, iterations=2, val_data=None, checkpoint_every=2, discriminator="unet")
    spawn_two_ranks(_gan_ddp_worker, config, tmp_path)
    rank0, rank1 = (load_file(str(tmp_path / f"rank{rank}.safetensors")) for rank in (0, 1))
    assert {name.split(".")[0] for name in rank0} == {"generator", "disc"}
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    _, _, extra = load_checkpoint(tmp_path / "run" / LAST)
    discriminator = {name: tensor for name, tensor in rank0.items() if name.startswith("disc.")}
    assert discriminator and all(torch.equal(extra[name], tensor) for name, tensor in discriminator.items())
