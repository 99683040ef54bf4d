"""`superres evaluate`: the paper protocol reproduces the published bicubic figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from superres.cli import main
from superres.evaluation.protocol import Protocol, evaluate_model, evaluation_plane, model_channels
from superres.models import create_model
from superres.models.reparam import has_branches

# ../shared/data/README.md: published bicubic PSNR / SSIM (Y channel, border of `scale` shaved).
PUBLISHED_BICUBIC = {
    ("Set5", 2): (33.66, 0.9299),
    ("Set5", 3): (30.39, 0.8682),
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688),
    ("Set14", 3): (27.55, 0.7742),
    ("Set14", 4): (26.00, 0.7027),
}


def _evaluate_json(capsys, argv):
    assert main(["evaluate", *argv, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow  # seconds: left out by `make test-fast`
def test_bicubic_reproduces_the_published_figures(shared_data, capsys):
    folders = [str(shared_data / "benchmark" / name / "HR") for name in ("Set5", "Set14")]
    report = _evaluate_json(capsys, [*folders, "--model", "bicubic", "--scale", "2", "3", "4"])
    assert "Y channel" in report["protocol"]
    means = {(row["dataset"], row["scale"]): (row["psnr"], row["ssim"]) for row in report["results"]}
    for key, (published_psnr, published_ssim) in PUBLISHED_BICUBIC.items():
        measured_psnr, measured_ssim = means[key]
        assert abs(measured_psnr - published_psnr) <= 0.01, (key, measured_psnr)
        assert abs(measured_ssim - published_ssim) <= 0.001, (key, measured_ssim)


def test_gray_image_is_scored_as_its_own_y(shared_data, capsys):
    folder = shared_data / "benchmark" / "Set14" / "HR"
    report = _evaluate_json(capsys, [str(folder), "--scale", "2", "--per-image"])
    bridge = next(row for row in report["results"] if row["image"] == "bridge")
    through_rgb = _evaluate_json(capsys, [str(folder), "--scale", "2", "--per-image", "--gray-through-rgb"])
    bridge_rgb = next(row for row in through_rgb["results"] if row["image"] == "bridge")
    # Mapping gray as R=G=B through BT.601 compresses its range and inflates PSNR by ~1.3 dB.
    assert bridge_rgb["psnr"] - bridge["psnr"] > 1.0


def test_lr_files_can_replace_synthetic_lr(shared_data, capsys):
    hr = shared_data / "benchmark" / "Set5" / "HR"
    lr = shared_data / "benchmark" / "Set5" / "LR_bicubic"
    report = _evaluate_json(capsys, [str(hr), "--scale", "2", "--lr-dir", str(lr)])
    # MATLAB's LR files are quantised to uint8, so the score moves by a few hundredths only.
    assert abs(report["results"][0]["psnr"] - 33.66) < 0.05


@pytest.fixture
def tiny_set(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "Tiny" / "HR"
    folder.mkdir(parents=True)
    for index in range(2):
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = np.kron(base, np.ones((6, 6, 1), dtype=np.uint8))  # smooth enough to be scored
        Image.fromarray(image).save(folder / f"img{index}.png")
    Image.fromarray(image[..., 0]).save(folder / "gray.png")
    return folder


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv", "json"])
def test_formats_and_per_image(tiny_set, capsys, fmt):
    assert main(["evaluate", str(tiny_set), "--scale", "2", "--format", fmt, "--per-image"]) == 0
    out = capsys.readouterr().out
    assert "Tiny" in out and "img1" in out and "gray" in out
    if fmt != "csv":
        assert "Y channel" in out


def test_save_dir_writes_sr_images(tiny_set, tmp_path, capsys):
    save = tmp_path / "sr"
    assert main(["evaluate", str(tiny_set), "--scale", "3", "--save-dir", str(save)]) == 0
    written = sorted(p.name for p in (save / "Tiny").iterdir())
    assert written == ["gray_x3_bicubic.png", "img0_x3_bicubic.png", "img1_x3_bicubic.png"]


def test_missing_folder_is_one_line_error(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nope")]) != 0
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err



def test_lr_of_the_wrong_size_is_one_line_error(tiny_set, tmp_path, capsys):
    # An LR folder made for x3 (16x16 from 48x48) scored at x2, which needs 24x24.
    lr = tmp_path / "lr"
    assert main(["degrade", str(tiny_set), "-o", str(lr), "--scale", "3", "--preset", "jpeg"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tiny_set), "--scale", "2", "--lr-dir", str(lr)]) != 0
    err = capsys.readouterr().err
    assert "the LR is 16x16" in err and "needs 24x24" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["evaluate", "degrade"])
def test_a_negative_seed_is_refused_by_the_parser(tiny_set, tmp_path, capsys, command):
    argv = {
        "evaluate": ["evaluate", str(tiny_set), "--lr-preset", "jpeg", "--lr-seed", "-1"],
        "degrade": ["degrade", str(tiny_set), "-o", str(tmp_path / "lr"), "--seed", "-1"],
    }[command]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    assert "expected an integer >= 0, got '-1'" in capsys.readouterr().err


def test_evaluation_plane_options():
    rgb = np.full((4, 4, 3), 255, dtype=np.uint8)
    assert np.all(evaluation_plane(rgb, Protocol()) == 235)
    assert evaluation_plane(rgb, Protocol(y_only=False)).shape == (4, 4, 3)
    gray = np.full((4, 4), 255, dtype=np.uint8)
    assert np.all(evaluation_plane(gray, Protocol()) == 255)
    assert np.all(evaluation_plane(gray, Protocol(gray_as_y=False)) == 235)


@pytest.mark.parametrize("channels", ["Y", "RGB"])
def test_channels_come_from_the_card_for_the_models_own_kwargs(channels):
    # SPAN's card defaults to Y and EDSR's to RGB; the colour space is a constructor choice.
    for name in ("span", "edsr"):
        model = create_model(name, 2, num_blocks=1, num_features=4, channels=channels)
        assert model_channels(model) == channels
    assert model_channels(create_model("bicubic", 2)) == "Y"  # parameter-free: the papers' Y row


def test_a_model_mid_training_is_scored_folded_and_left_as_it_was(tiny_set):
    torch.manual_seed(0)
    model = create_model("span", 2, num_blocks=1, num_features=4).train()
    result = evaluate_model(model, tiny_set, 2)
    assert model.training and has_branches(model)  # scored through a folded eval-mode copy
    assert [score.name for score in result.per_image] == ["gray", "img0", "img1"]
    assert result.model == "span" and np.isfinite(result.psnr)
