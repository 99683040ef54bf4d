"""The comparison figure, `superres compare`, the sample image and `superres demo`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import superres.images.sample_photo as samples
import superres.zoo.pretrained as pretrained
from superres.cli import main
from superres.errors import ConfigError
from superres.images import write_image
from superres.lab.figure import (
    choose_crop,
    compare_images,
    degrade,
    parse_crop,
    render_comparison,
    to_uint8,
)
from superres.models import create_model


@pytest.fixture(autouse=True)
def no_shipped_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep these tests independent of which weights ship (and fast): the default is bicubic.
    monkeypatch.setattr(pretrained, "weights_root", lambda: tmp_path / "no-weights")


def textured_image(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth gradient with a noisy bottom-right patch (from 5/8 of each side): the detail."""
    rows = np.linspace(0, 200, height)[:, None, None]
    image = np.broadcast_to(rows, (height, width, 3)).copy()
    top, left = height * 5 // 8, width * 5 // 8
    patch = (height - top, width - left, 3)
    image[top:, left:] = np.random.default_rng(seed).integers(0, 255, patch)
    return image.astype(np.uint8)


def assert_valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_choose_crop_finds_the_detail() -> None:
    x, y, width, height = choose_crop(textured_image(), size=12)
    assert (width, height) == (12, 12)
    assert x >= 40 - 2 and y >= 30 - 2


def test_parse_crop() -> None:
    assert parse_crop("1,2,30,40") == (1, 2, 30, 40)
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,5", "-1,0,4,4"):
        with pytest.raises(ConfigError, match="--crop"):
            parse_crop(bad)


def test_to_uint8_drops_alpha_and_reduces_sixteen_bits() -> None:
    deep = np.full((2, 2, 4), 65535, dtype=np.uint16)
    assert to_uint8(deep).shape == (2, 2, 3) and to_uint8(deep).max() == 255
    assert to_uint8(np.zeros((2, 2), dtype=np.uint8)).shape == (2, 2, 1)


def test_compare_images_with_and_without_hr() -> None:
    hr, lr = degrade(textured_image(49, 65), 2)
    assert hr.shape == (48, 64, 3) and lr.shape == (24, 32, 3)
    model = create_model("bicubic", 2)
    with_hr = compare_images(lr, model, hr=hr)
    assert [panel.title.split(" ")[0] for panel in with_hr.panels] == ["LR", "Bicubic", "SR:", "HR"]
    assert set(with_hr.scores) == {"bicubic", "bicubic (1)"}  # the model's label, made distinct
    assert all(panel.pixels.shape == (48, 64, 3) for panel in with_hr.panels)
    without_hr = compare_images(lr, model, crop=(0, 0, 10, 8))
    assert len(without_hr.panels) == 3 and without_hr.scores == {}
    assert without_hr.crop == (0, 0, 10, 8)
    figure = render_comparison(with_hr)
    assert figure.ndim == 3 and figure.shape[2] == 3 and figure.dtype == np.uint8
    with pytest.raises(ConfigError, match="leaves"):
        compare_images(lr, model, crop=(60, 0, 10, 10))


def test_compare_command_from_hr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_image(tmp_path / "hr.png", textured_image())
    figure = tmp_path / "figure.png"
    hr = str(tmp_path / "hr.png")
    argv = ["compare", hr, "--from-hr", "--scale", "2", "--model", "bicubic", "-o", str(figure)]
    code = main(argv)
    assert code == 0
    width, height = assert_valid_png(figure)
    assert width > height > 100
    out = capsys.readouterr().out
    assert "PSNR" in out and "Y channel" in out


def test_compare_draws_several_models_with_their_own_scores() -> None:
    hr, lr = degrade(textured_image(49, 65), 2)
    bicubic = create_model("bicubic", 2)
    torch.manual_seed(0)
    small = create_model("fsrcnn", 2, num_features=8, shrink_features=4, mapping_layers=1)
    comparison = compare_images(
        lr, bicubic, hr=hr, model_label="first", more_models=[("second", small, "torch")],
        perceptual=lambda sr, ref: float(np.abs(sr - ref).mean()),
    )
    titles = [panel.title for panel in comparison.panels]
    assert titles == ["LR (nearest, x2)", "Bicubic", "SR: first", "SR: second", "HR (reference)"]
    assert set(comparison.scores) == set(comparison.distances) == {"bicubic", "first", "second"}
    assert comparison.scores["first"][0] == pytest.approx(comparison.scores["bicubic"][0], abs=0.05)
    assert comparison.distances["second"] != comparison.distances["bicubic"]
    assert "LPIPS-approx" in comparison.panels[3].caption
    with pytest.raises(ConfigError, match="upscales x3, the figure is x2"):
        compare_images(lr, bicubic, more_models=[("x3", create_model("bicubic", 3), "torch")])


def test_compare_command_with_lr_and_hr(tmp_path: Path) -> None:
    hr, lr = degrade(textured_image(), 2)
    write_image(tmp_path / "hr.png", hr)
    write_image(tmp_path / "lr.png", lr)
    figure = tmp_path / "out" / "figure.png"
    lr_path, hr_path = str(tmp_path / "lr.png"), str(tmp_path / "hr.png")
    argv = ["compare", lr_path, "--hr", hr_path, "--scale", "2", "-o", str(figure)]
    assert main([*argv, "--crop", "4,4,20,16"]) == 0
    assert_valid_png(figure)


def test_compare_command_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "lr.png", textured_image(10, 10))
    write_image(tmp_path / "hr.png", textured_image(30, 30))
    argv = ["compare", str(tmp_path / "lr.png"), "-o", str(tmp_path / "f.png")]
    assert main([*argv, "--hr", str(tmp_path / "hr.png"), "--scale", "2"]) == 2
    assert main([*argv, "--model", "nope"]) == 2
    assert main([*argv, "--crop", "1,2"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "needs 20x20x3" in errors[0]
    assert not (tmp_path / "f.png").exists()


def test_sample_image_and_fallback_chart(monkeypatch: pytest.MonkeyPatch) -> None:
    image = samples.sample_image()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    monkeypatch.setattr(samples, "sample_photo_path", lambda: None)
    chart = samples.sample_image()
    assert chart.shape == (384, 384, 3) and chart.dtype == np.uint8
    assert chart.std() > 50  # a real pattern, not a flat image
    assert "synthetic" in samples.sample_credit()


def test_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "-o", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "bicubic" in out and "PSNR" in out and "Y channel" in out
    written = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert written == ["comparison_x2.png", "sample_bicubic_x2.png"]
    for name in written:
        assert_valid_png(tmp_path / "demo" / name)
