"""The real-world degradation chain (`superres.ops.degradations`), its training sampler, `superres
degrade` and the Y-to-RGB start of the real-world models. CPU only, small images."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from superres.cli import main
from superres.cli.degrade import PRESET_HELP
from superres.errors import ConfigError
from superres.evaluation.protocol import Protocol, evaluate_model
from superres.images import read_image, write_image
from superres.models import create_model
from superres.models.colour import span_y_to_rgb
from superres.ops import degradations
from superres.ops.color import rgb_to_y_tensor
from superres.ops.degradations import (
    PRESETS,
    RealDegradation,
    anisotropic_kernel,
    apply_preset,
    degrade_batch,
    jpeg_roundtrip,
    random_blur_kernel,
    sinc_kernel,
)
from superres.ops.resize import imresize
from superres.training.config import config_from_dict, load_run_config, resolve_config
from superres.training.data import DeviceBatches, PairedPatchSampler
from superres.training.loop import train
from superres.training.runlog import DEGRADE_HISTORY_COLUMNS
from superres.zoo.checkpoint import load_model
from test_train import read_history, synthetic_image, weights_of


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colour image with fine noise on top (so that blur and JPEG change it visibly)."""
    rng = np.random.default_rng(seed)
    base = synthetic_image(height, width, seed).astype(np.int16)
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


# --- kernels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_random_kernels_are_normalised_and_of_a_configured_size(seed: int) -> None:
    options = RealDegradation(kernel_sizes=(7, 11, 21), sinc_prob=0.5)
    rng = np.random.default_rng(seed)
    kernel = random_blur_kernel(
        rng, options, options.blur_sigma, options.betag_range, options.betap_range, 0.5
    )
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] in (7, 11, 21)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-9)
    # Symmetric under a half turn: filtering does not shift the image.
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-12)


def test_kernel_shapes_match_their_formulas() -> None:
    gaussian = anisotropic_kernel(9, 1.5, 1.5, 0.0)
    axis = np.arange(-4, 5)
    expected = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(gaussian, expected / expected.sum(), atol=1e-12)
    # A plateau kernel is flatter at the top than the Gaussian of the same sigma.
    plateau = anisotropic_kernel(9, 1.5, 1.5, 0.0, "plateau", 2.0)
    assert plateau[4, 3] / plateau[4, 4] > gaussian[4, 3] / gaussian[4, 4]
    # An anisotropic kernel turned by 90 degrees is the transposed one.
    np.testing.assert_allclose(
        anisotropic_kernel(9, 2.0, 0.7, np.pi / 2), anisotropic_kernel(9, 2.0, 0.7, 0).T, atol=1e-12
    )
    sinc = sinc_kernel(21, np.pi / 4)
    assert sinc.sum() == pytest.approx(1.0) and sinc.min() < 0  # negative lobes: ringing


# --- the chain -------------------------------------------------------------------------------


def test_the_chain_is_deterministic_per_seed_and_differs_between_seeds() -> None:
    hr = np.stack([textured_image(64, 64, seed) for seed in range(4)])
    first = degrade_batch(hr, 4, np.random.default_rng(7))
    again = degrade_batch(hr, 4, np.random.default_rng(7))
    other = degrade_batch(hr, 4, np.random.default_rng(8))
    assert first.shape == (4, 16, 16, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, other)


STAGES = {
    "blur": "filter2d",
    "noise": "_random_noise",
    "jpeg": "jpeg_roundtrip",
    "resize": "_random_resize",
}


@pytest.mark.parametrize("stage", [*STAGES, "second_order", "final_sinc"])
def test_each_stage_switches_off(stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, list] = {name: [] for name in STAGES.values()}
    for function_name in STAGES.values():
        original = getattr(degradations, function_name)

        def spy(*args: object, _original=original, _name=function_name, **kwargs: object):  # noqa: ANN202
            calls[_name].append(args)
            return _original(*args, **kwargs)

        monkeypatch.setattr(degradations, function_name, spy)
    hr = textured_image(48, 48, 1)
    # Every random stage made certain, so that "not called" can only mean "switched off".
    certain = {"second_blur_prob": 1.0, "final_sinc_prob": 1.0}
    degradations.degrade_image(hr, 2, np.random.default_rng(0), RealDegradation(**certain))
    assert all(calls.values())
    with_two_orders = {name: len(found) for name, found in calls.items()}
    for found in calls.values():
        found.clear()
    switched_off = {stage: False}
    if stage == "blur":  # the final sinc filters too: off as well, so that no filtering is left
        switched_off["final_sinc"] = False
    degradations.degrade_image(hr, 2, np.random.default_rng(0), RealDegradation(**certain, **switched_off))
    if stage in STAGES:
        assert calls[STAGES[stage]] == []
    elif stage == "second_order":  # one blur, one resize, one noise fewer
        for name in ("_random_noise", "_random_resize"):
            assert len(calls[name]) == with_two_orders[name] - 1
    else:  # no sinc after the final resize: one filtering fewer
        assert len(calls["filter2d"]) == with_two_orders["filter2d"] - 1


def test_all_stages_off_leaves_only_the_final_resize() -> None:
    off = RealDegradation(
        blur=False, resize=False, noise=False, jpeg=False, second_order=False, final_sinc=False
    )
    hr = textured_image(32, 32, 2)
    lr = degradations.degrade_image(hr, 2, np.random.default_rng(3), off)
    tensor = torch.from_numpy(hr.transpose(2, 0, 1)).float()[None] / 255
    candidates = [degradations.resize(tensor, 16, 16, mode) for mode in degradations.RESIZE_MODES]
    as_uint8 = [
        np.round(c[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8) for c in candidates
    ]
    assert any(np.array_equal(lr, candidate) for candidate in as_uint8)


def test_the_light_share_is_a_matlab_bicubic_downscale_then_noise_and_jpeg() -> None:
    hr = textured_image(32, 36, 4)
    clean_only = RealDegradation(light_prob=1.0, noise=False, jpeg=False)
    lr = degradations.degrade_image(hr, 2, np.random.default_rng(0), clean_only)
    expected = np.clip(np.floor(imresize(hr.astype(np.float64) / 255, 0.5) * 255 + 0.5), 0, 255)
    assert np.abs(lr.astype(int) - expected.astype(int)).max() <= 1  # float32 against float64
    light = RealDegradation(light_prob=1.0)
    first = degradations.degrade_image(hr, 2, np.random.default_rng(1), light)
    assert np.array_equal(first, degradations.degrade_image(hr, 2, np.random.default_rng(1), light))
    assert not np.array_equal(first, lr)


def test_light_jpeg_prob_leaves_that_share_of_light_pairs_uncompressed() -> None:
    hr = textured_image(32, 36, 4)
    clean = degradations.degrade_image(
        hr, 2, np.random.default_rng(0), RealDegradation(light_prob=1.0, noise=False, jpeg=False)
    )
    never = RealDegradation(light_prob=1.0, noise=False, light_jpeg_prob=0.0)
    assert np.array_equal(degradations.degrade_image(hr, 2, np.random.default_rng(5), never), clean)
    half = RealDegradation(light_prob=1.0, noise=False, light_jpeg_prob=0.5)
    uncompressed = [
        np.array_equal(degradations.degrade_image(hr, 2, np.random.default_rng(seed), half), clean)
        for seed in range(40)
    ]
    assert 8 <= sum(uncompressed) <= 32


def test_the_jpeg_stage_goes_through_a_real_codec(monkeypatch: pytest.MonkeyPatch) -> None:
    image = torch.from_numpy(textured_image(24, 32, 3).transpose(2, 0, 1)).float()[None] / 255
    saved: list[tuple[str, int]] = []
    original_save = Image.Image.save

    def spy_save(self: Image.Image, fp: object, format: str | None = None, **params: object) -> None:
        saved.append((format, params.get("quality")))
        original_save(self, fp, format, **params)

    monkeypatch.setattr(Image.Image, "save", spy_save)
    out = jpeg_roundtrip(image, 40)
    assert saved == [("JPEG", 40)]
    # The same bytes Pillow's libjpeg makes and decodes.
    buffer = io.BytesIO()
    original_save(Image.fromarray(textured_image(24, 32, 3)), buffer, "JPEG", quality=40)
    expected = np.asarray(Image.open(buffer).convert("RGB"))
    assert np.array_equal(np.round(out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), expected)


def test_options_are_validated_with_the_field_named() -> None:
    assert RealDegradation.from_options({"noise_range": [2, 10], "jpeg": False}).noise_range == (2.0, 10.0)
    with pytest.raises(ConfigError, match="unknown field.*nosie_range"):
        RealDegradation.from_options({"nosie_range": [1, 2]})
    with pytest.raises(ConfigError, match="gray_noise_prob"):
        RealDegradation.from_options({"gray_noise_prob": 1.5})
    with pytest.raises(ConfigError, match="jpeg_range"):
        RealDegradation.from_options({"jpeg_range": [0, 200]})
    with pytest.raises(ConfigError, match="kernel_sizes"):
        RealDegradation.from_options({"kernel_sizes": [8]})
    with pytest.raises(ConfigError, match="expected true or false"):
        RealDegradation.from_options({"blur": "no"})


# --- presets and `superres degrade` --------------------------------------------------------------


#: sha256 of the LR of `textured_image(40, 36, 5)` at x2, seed 0, name "probe.png", per preset. A change
#: here changes every published number measured on a `superres degrade` set: bump it on purpose only.
PRESET_HASHES = {
    "bicubic": "98551653fff6bc4d71417d7e0e5dc3ffe879878df841df68bf352267d48cd812",
    "jpeg": "5297802fa788d9e1981984fd47909eaeffd87bc64853564ba08387e39c83d2d7",
    "noise-jpeg": "037e7ad49cccb27da6a51fda8393ebdac6083992d3d532a1b9a032a23429d00b",
    "real": "8aa176b01b735c99971422081101a19a7fefb2f08dbd27c70458f6f147f50288",
}


@pytest.mark.parametrize("preset", PRESETS)
def test_degrade_presets_are_stable(preset: str) -> None:
    lr = apply_preset(textured_image(40, 36, 5), 2, preset, name="probe.png", seed=0)
    assert lr.shape == (20, 18, 3)
    assert hashlib.sha256(lr.tobytes()).hexdigest() == PRESET_HASHES[preset]


def test_presets_are_seeded_by_name_not_order() -> None:
    image = textured_image(40, 40, 6)
    first = apply_preset(image, 2, "real", name="a.png", seed=1)
    assert np.array_equal(first, apply_preset(image, 2, "real", name="a.png", seed=1))
    assert not np.array_equal(first, apply_preset(image, 2, "real", name="b.png", seed=1))
    assert not np.array_equal(first, apply_preset(image, 2, "real", name="a.png", seed=2))


def test_the_help_lists_the_presets_the_module_has() -> None:
    assert PRESET_HELP == {name: text for name, (text, _) in PRESETS.items()}


def test_degrade_command_writes_what_evaluate_reads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    hr_dir = tmp_path / "hr"
    for index in range(2):
        write_image(hr_dir / f"img{index}.png", textured_image(42, 38, index))
    write_image(hr_dir / "gray.png", textured_image(40, 40, 9)[..., 0])
    assert (
        main(["degrade", str(hr_dir), "-o", str(tmp_path / "lr"), "--scale", "2", "--preset", "noise-jpeg"])
        == 0
    )
    lr = read_image(tmp_path / "lr" / "img0.png").pixels
    assert lr.shape == (21, 19, 3)
    assert read_image(tmp_path / "lr" / "gray.png").pixels.squeeze().ndim == 2  # gray stays gray

    # The files are exactly the in-memory preset: evaluate from the folder == evaluate by preset.
    def last_csv_line(*lr_source: str) -> str:
        capsys.readouterr()
        main(["evaluate", str(hr_dir), "--model", "bicubic", "--scale", "2", *lr_source, "--format", "csv"])
        return capsys.readouterr().out.strip().splitlines()[-1]

    assert last_csv_line("--lr-dir", str(tmp_path / "lr")) == last_csv_line("--lr-preset", "noise-jpeg")
    # Several scales: one folder each, as `evaluate --lr-dir` looks for them.
    assert (
        main(
            [
                "degrade",
                str(hr_dir / "img1.png"),
                "-o",
                str(tmp_path / "multi"),
                "--scale",
                "2",
                "3",
                "--preset",
                "jpeg",
            ]
        )
        == 0
    )
    assert (tmp_path / "multi" / "X2" / "img1.png").is_file() and (
        tmp_path / "multi" / "X3" / "img1.png"
    ).is_file()


def test_degrade_refuses_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["degrade", str(tmp_path / "missing.png"), "-o", str(tmp_path / "lr")]) != 0
    assert "no such file" in capsys.readouterr().err
    write_image(tmp_path / "tiny.png", textured_image(3, 3, 0))
    assert main(["degrade", str(tmp_path / "tiny.png"), "-o", str(tmp_path / "lr"), "--scale", "4"]) != 0
    assert "too small" in capsys.readouterr().err
    assert not (tmp_path / "lr").exists() or not any((tmp_path / "lr").iterdir())


# --- training on the chain ---------------------------------------------------------------------


def test_the_sampler_degrades_hr_crops_and_keeps_the_bicubic_positions() -> None:
    images = [textured_image(48, 52, seed) for seed in range(3)]
    real = PairedPatchSampler(images, 2, 8, degradation="real")
    clean = PairedPatchSampler(images, 2, 8)
    lr, hr = real.sample(5, np.random.default_rng(4))
    clean_lr, clean_hr = clean.sample(5, np.random.default_rng(4))
    assert lr.shape == (5, 8, 8, 3) and np.array_equal(hr, clean_hr) and not np.array_equal(lr, clean_lr)
    again, _ = real.sample(5, np.random.default_rng(4))
    assert np.array_equal(lr, again)
    # The trainer's batches: made on the host, the same pixels as the sampler's.
    batches = DeviceBatches(real, "cpu")
    assert batches.on_host
    lr_tensor, hr_tensor = batches.sample(5, np.random.default_rng(4))
    assert torch.equal(lr_tensor, torch.from_numpy(lr).permute(0, 3, 1, 2).float() / 255)
    assert batches.take_host_seconds() > 0 and batches.take_host_seconds() == 0


@pytest.fixture(scope="module")
def colour_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("colour")
    for index in range(3):
        write_image(root / "hr" / f"train{index}.png", textured_image(40, 44, index))
    for index in range(2):
        write_image(root / "val" / f"val{index}.png", textured_image(24, 28, 10 + index))
    return root / "hr", root / "val"


def real_config(dirs: tuple[Path, Path], **changes: object):  # noqa: ANN201
    values = {
        "model": "span",
        "scale": 2,
        "train_data": [str(dirs[0])],
        "val_data": str(dirs[1]),
        "model_kwargs": {
            "num_features": 8,
            "num_blocks": 1,
            "reparam_gain": 0,
            "bicubic_skip": True,
            "channels": "RGB",
        },
        "channels": "RGB",
        "degradation": "real",
        "patch_size": 8,
        "batch_size": 3,
        "iterations": 6,
        "learning_rate": 1e-3,
        "loss": "l1",
        "val_every": 3,
        "checkpoint_every": 2,
        "log_every": 2,
        "num_threads": 1,
        "seed": 5,
        "device": "cpu",
    }
    values.update(changes)
    return config_from_dict(values)


def test_a_killed_real_world_run_resumes_identically(colour_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    config = real_config(colour_dirs)
    train(config, tmp_path / "whole")
    train(config, tmp_path / "resumed", stop_after=3)
    train(load_run_config(tmp_path / "resumed"), tmp_path / "resumed", resume=True)
    for name, tensor in weights_of(tmp_path / "whole" / "last.safetensors").items():
        assert torch.equal(tensor, weights_of(tmp_path / "resumed" / "last.safetensors")[name]), name
    rows = read_history(tmp_path / "whole")
    assert set(DEGRADE_HISTORY_COLUMNS) <= set(rows[0]) and float(rows[0]["degrade_s_per_step"]) > 0
    # Validation scored the `real` preset's LR, not the clean bicubic one.
    assert load_run_config(tmp_path / "whole").degradation == "real"


def test_real_world_settings_are_checked_before_training(colour_dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="needs degradation"):
        resolve_config(real_config(colour_dirs, degradation="bicubic", degradation_options={"jpeg": False}))
    with pytest.raises(ConfigError, match="unknown field"):
        resolve_config(real_config(colour_dirs, degradation_options={"sharpness": 1}))


def test_validation_scores_the_chosen_preset(colour_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="val_preset: unknown preset"):
        resolve_config(real_config(colour_dirs, val_preset="blurry"))
    train(real_config(colour_dirs, val_preset="jpeg"), tmp_path / "run")
    logged = float(read_history(tmp_path / "run")[-1]["val_psnr"])
    model, _ = load_model(tmp_path / "run" / "last.safetensors")  # no EMA: the weights validated last
    result = evaluate_model(model, colour_dirs[1], 2, channels="RGB", protocol=Protocol(lr_preset="jpeg"))
    assert logged == pytest.approx(result.psnr, abs=1e-4)
    assert load_run_config(tmp_path / "run").val_preset == "jpeg"


def test_a_y_span_becomes_an_rgb_span_with_the_same_y_output() -> None:
    torch.manual_seed(0)
    y_model = create_model("span", 2, num_features=8, num_blocks=2, reparam_gain=2, channels="Y").eval()
    rgb_model = span_y_to_rgb(y_model)
    assert rgb_model.model_kwargs["channels"] == "RGB"
    image = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        expected = y_model(rgb_to_y_tensor(image))
        got = rgb_to_y_tensor(rgb_model(image))
    # Exact inside; the zero padding of centred RGB differs from that of centred Y at the border.
    border = 2 * 8
    torch.testing.assert_close(
        got[..., border:-border, border:-border],
        expected[..., border:-border, border:-border],
        atol=1e-4,
        rtol=0,
    )
