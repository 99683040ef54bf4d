"""Upscaling images and files: colour layouts, alpha without fringes, 16 bits, batches, the CLI."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from torch import nn

import superres.zoo.pretrained as pretrained
from superres.batch.files import upscale_files
from superres.cli import main
from superres.errors import ConfigError
from superres.images import read_image, write_image
from superres.inference.backends import Backend
from superres.inference.pipeline import fill_transparent, upscale_image
from superres.models import create_model, get_model_info, list_models
from superres.ops.resize import imresize
from superres.zoo.checkpoint import save_checkpoint


class BicubicAs(nn.Module):
    """MATLAB bicubic behind a card that claims `channels` ("Y" or "RGB"): a known answer."""

    def __init__(self, channels: str, scale: int = 2) -> None:
        super().__init__()
        self.inner = create_model("bicubic", scale)
        self.scale = scale
        self.info = dataclasses.replace(self.inner.info, channels=channels)
        self.model_kwargs: dict = {}

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.inner(lr)


def randomised(model: nn.Module) -> nn.Module:
    """Weights far from the near-bicubic init, so that backends really compute something."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(noise / max(parameter[0].numel(), 10) ** 0.5)
    return model.eval()


def random_image(
    height: int, width: int, channels: int, dtype: type = np.uint8, seed: int = 0
) -> np.ndarray:
    high = np.iinfo(dtype).max
    shape = (height, width, channels)
    return np.random.default_rng(seed).integers(0, high, shape, dtype=dtype, endpoint=True)


def float_bicubic(pixels: np.ndarray, scale: int = 2) -> np.ndarray:
    """MATLAB bicubic in float, clipped and rounded once at the end (as the upscaler does).

    `imresize` on uint8 rounds and clips between its two passes, which differs on noise.
    """
    resized = imresize(pixels.astype(np.float64), scale)
    return np.floor(np.clip(resized, 0, np.iinfo(pixels.dtype).max) + 0.5).astype(pixels.dtype)


def max_difference(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.abs(first.astype(np.int64) - second.astype(np.int64)).max())


@pytest.fixture(autouse=True)
def no_shipped_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default model must not depend on which weights happen to ship: bicubic here.
    monkeypatch.setattr(pretrained, "weights_root", lambda: tmp_path / "no-weights")


# --------------------------------------------------------------------------- one image


@pytest.mark.parametrize("name", ["srcnn", "srcnn-tutorial", "bicubic"])
def test_gray_in_gray_out(name: str) -> None:
    model = create_model(name, 3)
    pixels = random_image(11, 9, 1)
    sr = upscale_image(pixels, model, tile=None)
    assert sr.shape == (33, 27, 1) and sr.dtype == np.uint8
    assert upscale_image(pixels[:, :, 0], model).shape == (33, 27)


@pytest.mark.parametrize("name", ["srcnn", "srcnn-tutorial", "rednet"])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_layouts_keep_channels_and_sizes(name: str, channels: int) -> None:
    kwargs = {"num_layers": 2, "num_features": 8} if name == "rednet" else {}
    sr = upscale_image(random_image(10, 7, channels), create_model(name, 2, **kwargs))
    assert sr.shape == (20, 14, channels) and sr.dtype == np.uint8


def test_y_model_on_rgb_matches_rgb_bicubic() -> None:
    # Y through the model, Cb/Cr bicubic: with a bicubic "model" that is plain RGB bicubic.
    pixels = random_image(16, 13, 3)
    via_y = upscale_image(pixels, BicubicAs("Y"), tile=5)
    via_rgb = upscale_image(pixels, BicubicAs("RGB"), tile=None)
    assert max_difference(via_y, via_rgb) <= 1
    assert max_difference(via_rgb, float_bicubic(pixels)) <= 1


def test_rgb_model_on_gray_averages_back_to_gray() -> None:
    pixels = random_image(12, 10, 1)
    expected = float_bicubic(pixels)
    assert max_difference(upscale_image(pixels, BicubicAs("RGB")), expected) <= 1
    assert max_difference(upscale_image(pixels, BicubicAs("Y")), expected) <= 1


def red_square_on_transparent_black(channels: int = 4) -> np.ndarray:
    pixels = np.zeros((24, 24, channels), dtype=np.uint8)
    if channels == 4:
        pixels[6:18, 6:18] = (255, 0, 0, 255)
    else:
        pixels[6:18, 6:18] = (255, 255)
    return pixels


@pytest.mark.parametrize("model_channels", ["RGB", "Y"])
def test_rgba_keeps_alpha_and_has_no_dark_fringe(model_channels: str) -> None:
    pixels = red_square_on_transparent_black()
    sr = upscale_image(pixels, BicubicAs(model_channels), tile=7)
    assert sr.shape == (48, 48, 4)
    alpha = sr[:, :, 3]
    assert max_difference(alpha, float_bicubic(pixels[:, :, 3])) <= 1
    assert alpha[0, 0] == 0 and alpha[24, 24] == 255
    visible = alpha >= 13  # 5 % opacity and more: where a fringe would show
    assert sr[visible, 0].min() >= 250 and sr[visible, 1:3].max() <= 5

    # The check has power: bicubic on the raw colour drags black into the edge.
    naive = imresize(pixels[:, :, :3], 2)
    assert naive[visible, 0].min() < 200


def test_gray_alpha_has_no_dark_fringe() -> None:
    pixels = red_square_on_transparent_black(channels=2)
    sr = upscale_image(pixels, create_model("srcnn-tutorial", 2).eval(), tile=None)
    assert sr.shape == (48, 48, 2)
    sr = upscale_image(pixels, BicubicAs("Y"), tile=None)
    assert sr[sr[:, :, 1] >= 13, 0].min() >= 250


def test_fill_transparent_keeps_visible_and_fills_from_neighbours() -> None:
    colour = np.zeros((9, 11, 3), dtype=np.float32)
    alpha = np.zeros((9, 11), dtype=np.float32)
    colour[2:5, 3:6] = (0.2, 0.4, 0.6)
    alpha[2:5, 3:6] = 0.5
    filled = fill_transparent(colour, alpha)
    assert np.array_equal(filled[alpha > 0], colour[alpha > 0])
    assert np.allclose(filled, (0.2, 0.4, 0.6))  # one visible colour: it spreads everywhere
    assert fill_transparent(colour, np.zeros_like(alpha)) is colour
    assert fill_transparent(colour, np.ones_like(alpha)) is colour


def test_sixteen_bit_in_sixteen_bit_out() -> None:
    ramp = np.linspace(0, 65535, 14 * 12, dtype=np.float64).reshape(14, 12)
    pixels = np.round(np.stack([ramp, ramp[::-1], ramp[:, ::-1]], axis=2)).astype(np.uint16)
    sr = upscale_image(pixels, BicubicAs("RGB"), tile=5)
    assert sr.dtype == np.uint16 and sr.shape == (28, 24, 3)
    assert np.any(sr % 257 != 0)  # real 16-bit values, not 8 bits scaled up
    expected = np.clip(imresize(pixels.astype(np.float64), 2), 0, 65535)
    assert np.abs(sr - expected).max() <= 1.0


def test_half_needs_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="--half needs a CUDA device"):
        upscale_image(random_image(4, 4, 3), create_model("bicubic", 2), half=True)
    with pytest.raises(ConfigError, match="is not available here"):
        upscale_image(random_image(4, 4, 3), create_model("bicubic", 2), device="cuda")


def test_a_ready_backend_is_called() -> None:
    calls: list[tuple[int, ...]] = []
    bicubic = create_model("bicubic", 2)

    def forward(lr: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(lr.shape))
        return bicubic(lr)

    backend = Backend(forward=forward, device=torch.device("cpu"), name="counting")
    sr = upscale_image(random_image(8, 8, 3), bicubic, tile=4, backend=backend)
    assert sr.shape == (16, 16, 3) and len(calls) == 4
    expected = "unknown backend 'nope'; available: onnxruntime, torch"
    with pytest.raises(ConfigError, match=expected):
        upscale_image(random_image(8, 8, 3), bicubic, backend="nope")


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", list_models())
def test_tiled_equals_untiled_for_every_registered_model(name: str, scale: int) -> None:
    # The overlap comes from the card alone (receptive field for the model's own kwargs and
    # scale); random weights, so an overlap that is too small shows. Odd sizes give uneven
    # tiles, and the image is large enough that tiles plus context do not cover it whole.
    info = get_model_info(name)
    model = randomised(create_model(name, scale, **info.test_kwargs))
    pixels = random_image(37, 41, 3, seed=scale)
    whole = upscale_image(pixels, model, tile=None)
    for tile in (7, 12):
        tiled = upscale_image(pixels, model, tile=tile)
        assert tiled.shape == (37 * scale, 41 * scale, 3)
        assert max_difference(tiled, whole) <= 1, tile


# --------------------------------------------------------------------------- files and the CLI


def write_png(path: Path, pixels: np.ndarray, **kwargs) -> Path:
    write_image(path, pixels, **kwargs)
    return path


def test_upscale_files_beside_input(tmp_path: Path) -> None:
    source = write_png(tmp_path / "a.png", random_image(9, 7, 3))
    report = upscale_files([source], None, scale=2, model="bicubic", device="cpu")
    assert report.written == [tmp_path / "a_x2.png"] and report.exit_code == 0
    assert read_image(tmp_path / "a_x2.png").pixels.shape == (18, 14, 3)


def test_cli_single_output_file_and_folder(tmp_path: Path) -> None:
    first = write_png(tmp_path / "in" / "a.png", random_image(9, 7, 3))
    second = write_png(tmp_path / "in" / "b.png", random_image(5, 6, 1))
    assert main(["upscale", str(first), "-o", str(tmp_path / "one.png"), "--scale", "3"]) == 0
    assert read_image(tmp_path / "one.png").pixels.shape == (27, 21, 3)
    assert main(["upscale", str(first), str(second), "-o", str(tmp_path / "out")]) == 0
    assert read_image(tmp_path / "out" / "b_x2.png").pixels.shape == (10, 12, 1)


def test_folder_and_glob_inputs(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.jpg"):
        write_png(tmp_path / "in" / name, random_image(6, 6, 3))
    assert main(["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "folder")]) == 0
    written = sorted(p.name for p in (tmp_path / "folder").iterdir())
    assert written == ["a_x2.png", "b_x2.png", "c_x2.jpg"]
    assert main(["upscale", str(tmp_path / "in" / "*.png"), "-o", str(tmp_path / "glob")]) == 0
    assert sorted(p.name for p in (tmp_path / "glob").iterdir()) == ["a_x2.png", "b_x2.png"]


def test_previous_outputs_in_a_folder_are_not_upscaled_again(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", random_image(6, 6, 3))
    assert main(["upscale", str(tmp_path)]) == 0
    assert main(["upscale", str(tmp_path)]) == 0  # a_x2.png is a.png's output: skipped
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".png") == ["a.png", "a_x2.png"]


def test_never_overwrites_an_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_png(tmp_path / "a.png", random_image(6, 6, 3))
    before = source.read_bytes()
    assert main(["upscale", str(source), "-o", str(source), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to overwrite input" in err[0]
    other = write_png(tmp_path / "a_x2.png", random_image(6, 6, 3))  # named: an input too
    assert main(["upscale", str(source), str(other), "--overwrite"]) == 2
    assert source.read_bytes() == before


def test_existing_output_skipped_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_png(tmp_path / "a.png", random_image(6, 6, 3))
    target = write_png(tmp_path / "a_x2.png", np.zeros((3, 3, 3), dtype=np.uint8))
    assert main(["upscale", str(source)]) == 0
    assert "0 done, 1 skipped, 0 failed" in capsys.readouterr().out
    assert read_image(target).pixels.shape == (3, 3, 3)
    assert main(["upscale", str(source), "--overwrite"]) == 0
    assert read_image(target).pixels.shape == (12, 12, 3)


def test_unreadable_file_is_reported_and_the_rest_done(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_png(tmp_path / "a.png", random_image(6, 6, 3))
    bad = tmp_path / "b.png"
    bad.write_bytes(b"not a png at all")
    later = write_png(tmp_path / "c.png", random_image(6, 6, 3))
    with caplog.at_level(logging.WARNING):
        code = main(["upscale", str(good), str(bad), str(later), str(tmp_path / "missing.png")])
    assert code == 1
    assert (tmp_path / "a_x2.png").is_file() and (tmp_path / "c_x2.png").is_file()
    failures = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 2 and "b.png" in failures[0] and "missing.png" in failures[1]
    assert "2 done, 0 skipped, 2 failed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--scale", "9"], "scale 9 is not supported"),  # bicubic, listed up to x8, runs x5
        (["--model", "srcnn"], "needs trained weights"),
        (["--backend", "nope"], "unknown backend 'nope'"),
    ],
)
def test_bad_model_or_scale_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    source = write_png(tmp_path / "a.png", random_image(6, 6, 3))
    assert main(["upscale", str(source), *arguments]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "a_x2.png").exists()


def test_file_output_for_several_inputs_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_png(tmp_path / "a.png", random_image(6, 6, 3))
    second = write_png(tmp_path / "b.png", random_image(6, 6, 3))
    assert main(["upscale", str(first), str(second), "-o", str(tmp_path / "x.png")]) == 2
    assert "give a folder" in capsys.readouterr().err


def test_checkpoint_model_and_scale_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = create_model("rednet", 3, num_layers=2, num_features=8)
    checkpoint = tmp_path / "red.safetensors"
    metadata = {"model": "rednet", "scale": 3, "model_kwargs": model.model_kwargs, "channels": "Y"}
    save_checkpoint(checkpoint, model, metadata)
    source = write_png(tmp_path / "a.png", random_image(6, 5, 3))
    # No --scale: the checkpoint's own scale.
    assert main(["upscale", str(source), "--model", str(checkpoint)]) == 0
    assert read_image(tmp_path / "a_x3.png").pixels.shape == (18, 15, 3)
    assert main(["upscale", str(source), "--model", str(checkpoint), "--scale", "2"]) == 2
    assert "not the requested x2" in capsys.readouterr().err


def test_palette_sixteen_bit_and_icc_profile_files(tmp_path: Path) -> None:
    rgb = Image.fromarray(random_image(8, 10, 3))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "palette.png")
    sixteen = write_png(tmp_path / "deep.png", random_image(7, 5, 3, dtype=np.uint16))
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = write_png(tmp_path / "tagged.png", random_image(5, 5, 3), icc_profile=profile)
    report = upscale_files([tmp_path], tmp_path / "out", scale=2, model="bicubic", device="cpu")
    assert report.exit_code == 0 and len(report.written) == 3
    upscaled_palette = read_image(tmp_path / "out" / "palette_x2.png").pixels
    assert upscaled_palette.shape == (16, 20, 3) and upscaled_palette.dtype == np.uint8
    deep = read_image(tmp_path / "out" / "deep_x2.png").pixels
    assert deep.shape == (14, 10, 3) and deep.dtype == np.uint16
    assert read_image(tmp_path / "out" / "tagged_x2.png").icc_profile == profile
    assert sixteen.is_file() and tagged.is_file()


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_tiff_file_stays_sixteen_bit(tmp_path: Path, channels: int) -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pixels = random_image(7, 5, channels, dtype=np.uint16)
    source = write_png(tmp_path / "deep.tif", pixels, icc_profile=profile)
    report = upscale_files([source], tmp_path / "out", scale=2, model="bicubic", device="cpu")
    assert report.exit_code == 0 and report.written == [tmp_path / "out" / "deep_x2.tif"]
    deep = read_image(tmp_path / "out" / "deep_x2.tif")
    assert deep.pixels.shape == (14, 10, channels) and deep.pixels.dtype == np.uint16
    assert np.any(deep.pixels % 257 != 0)  # real 16-bit values, not 8 bits scaled up
    assert deep.icc_profile == profile


def test_onnxruntime_backend_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = randomised(create_model("rednet", 2, num_layers=2, num_features=8))
    pixels = random_image(13, 11, 3)
    via_torch = upscale_image(pixels, model, tile=6)
    via_onnx = upscale_image(pixels, model, tile=6, backend="onnxruntime")
    assert max_difference(via_torch, via_onnx) <= 1
    source = write_png(tmp_path / "a.png", pixels)
    assert main(["upscale", str(source), "--backend", "onnxruntime", "--device", "cpu"]) == 0
    assert read_image(tmp_path / "a_x2.png").pixels.shape == (26, 22, 3)
