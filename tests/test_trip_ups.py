"""What a new user trips over, each fixed: alpha into JPEG, unsupported scales and devices, a
model name that implies its scale, `--version`, `superres models` without timing. CPU only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import superres
from superres.cli import main
from superres.images import read_image, write_image
from superres.zoo.pretrained import list_pretrained


def rgba_image() -> np.ndarray:
    """Red where opaque (left half), a transparent right half whose hidden colours vary."""
    rng = np.random.default_rng(0)
    pixels = np.zeros((16, 16, 4), np.uint8)
    pixels[:, :8] = (200, 30, 30, 255)
    pixels[:, 8:, :3] = rng.integers(0, 256, (16, 8, 3))
    return pixels


def test_alpha_into_jpeg_is_flattened_on_white_with_a_warning(tmp_path: Path, caplog) -> None:
    write_image(tmp_path / "in.png", rgba_image())
    assert (
        main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.jpg"), "--model", "bicubic"])
        == 0
    )
    out = read_image(tmp_path / "out.jpg").pixels.astype(int)
    assert out.shape == (32, 32, 3)
    assert np.abs(out[:, 20:] - 255).max() <= 3  # the transparent half is white, not its hidden colours
    assert "composited on RGB (255, 255, 255)" in caplog.text
    assert (
        main(
            [
                "upscale",
                str(tmp_path / "in.png"),
                "-o",
                str(tmp_path / "black.jpg"),
                "--model",
                "bicubic",
                "--background",
                "black",
            ]
        )
        == 0
    )
    assert read_image(tmp_path / "black.jpg").pixels[:, 20:].max() <= 3
    with pytest.raises(SystemExit):  # argparse: usage and the reason, exit code 2
        main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "x.jpg"), "--background", "nope"])


def test_a_scale_without_a_trained_model_is_one_line(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.png", rgba_image()[..., :3])
    assert main(["upscale", str(tmp_path / "a.png"), "--scale", "5"]) != 0
    error = capsys.readouterr().err.strip()
    assert "no trained model ships for x5" in error and "--model bicubic" in error and "\n" not in error
    assert main(["upscale", str(tmp_path / "a.png"), "--scale", "5", "--model", "bicubic"]) == 0
    assert read_image(tmp_path / "a_x5.png").pixels.shape == (80, 80, 3)
    assert main(["upscale", str(tmp_path / "a.png"), "--scale", "9"]) != 0
    assert "scale 9 is not supported" in capsys.readouterr().err


def test_a_model_that_ships_at_one_scale_implies_it(tmp_path: Path) -> None:
    only_x4 = sorted(
        {e.name for e in list_pretrained()} - {e.name for e in list_pretrained() if e.scale != 4}
    )
    if not only_x4:
        pytest.skip("no shipped model exists at x4 only")
    write_image(tmp_path / "a.png", rgba_image()[..., :3])
    assert (
        main(["upscale", str(tmp_path / "a.png"), "--model", only_x4[0], "-o", str(tmp_path / "b.png")]) == 0
    )
    assert read_image(tmp_path / "b.png").pixels.shape == (64, 64, 3)
    assert superres.upscale(rgba_image()[..., :3], model=only_x4[0]).shape == (64, 64, 3)


def test_default_means_the_same_in_every_command(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", rgba_image()[..., :3])
    assert (
        main(
            [
                "compare",
                str(tmp_path / "a.png"),
                "--model",
                "default",
                "--scale",
                "2",
                "-o",
                str(tmp_path / "fig.png"),
            ]
        )
        == 0
    )
    assert (
        main(["upscale", str(tmp_path / "a.png"), "--model", "default", "-o", str(tmp_path / "b.png")]) == 0
    )


@pytest.mark.parametrize("device", ["mps", "tpu", "cuda:7"])
def test_a_device_this_machine_lacks_is_one_line(tmp_path: Path, capsys, device: str) -> None:
    write_image(tmp_path / "a.png", rgba_image()[..., :3])
    assert main(["upscale", str(tmp_path / "a.png"), "--model", "bicubic", "--device", device]) != 0
    error = capsys.readouterr().err.strip()
    assert device in error and "this machine has: auto, cpu" in error and "\n" not in error


@pytest.mark.parametrize("quality", ["0", "101", "high"])
def test_a_quality_out_of_range_is_one_short_line(tmp_path: Path, capsys, quality: str) -> None:
    # argparse's `choices` listed all 100 valid values in the message.
    with pytest.raises(SystemExit) as stop:
        main(["upscale", str(tmp_path / "a.png"), "--quality", quality])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and f"expected a quality from 1 to 100, got '{quality}'" in error
    assert "99" not in error

def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("superres ")


def test_models_answers_from_the_cards_without_timing(monkeypatch, capsys) -> None:
    import superres.lab.frontier

    def no_timing(*args: object, **kwargs: object) -> None:
        raise AssertionError("superres models timed the models without --time")

    monkeypatch.setattr(superres.lab.frontier, "measure_frontier", no_timing)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "speed" in out and "superres upscale` sends a JPEG of quality <= 90" in out


def test_models_answers_without_importing_torch() -> None:
    # The cards are JSON: listing them must not wait for torch's import (about a second or more).
    import subprocess
    import sys

    code = (
        "import sys, io, contextlib\n"
        "from superres.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): assert main(['models']) == 0\n"
        "assert 'torch' not in sys.modules, 'superres models imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_models_lists_the_architectures_on_request(capsys) -> None:
    assert main(["models", "--architectures"]) == 0
    out = capsys.readouterr().out
    assert "Architectures (parameters" in out and "span" in out


def test_output_format_and_quality_for_a_batch(tmp_path: Path) -> None:
    for name in ("a.png", "b.jpg"):
        write_image(tmp_path / "in" / name, rgba_image()[..., :3])
    args = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "bicubic"]
    assert main([*args, "--format", "webp", "--quality", "40"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "a_x2.webp",
        "b_x2.webp",
    ]
    small = (tmp_path / "out" / "a_x2.webp").stat().st_size
    assert main([*args, "--format", "webp", "--quality", "95", "--overwrite"]) == 0
    assert (tmp_path / "out" / "a_x2.webp").stat().st_size > small


def test_an_empty_array_is_one_clear_error() -> None:
    from superres.errors import ConfigError

    with pytest.raises(ConfigError, match="at least one pixel, got shape \\(0, 0, 3\\)"):
        superres.upscale(np.zeros((0, 0, 3), np.uint8), model="bicubic")


def test_an_unknown_output_format_is_one_line(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.png", rgba_image()[..., :3])
    assert main(["upscale", str(tmp_path / "a.png"), "--model", "bicubic", "--format", "gif"]) != 0
    assert "cannot write gif files" in capsys.readouterr().err


def test_upscale_help_names_video_with_an_example(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "videos" in text and "superres upscale clip.mp4" in text


def _textured(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(height + width)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_fractional_scale_runs_the_next_whole_one_then_downscales(tmp_path: Path) -> None:
    from superres.inference.pipeline import upscale_image
    from superres.ops.resize import imresize
    from superres.zoo.names import resolve_model

    pixels = _textured(20, 30)
    write_image(tmp_path / "a.png", pixels)
    fp32 = ["--precision", "fp32"]  # as the expected result below ("auto" may run bf16)
    assert main(["upscale", str(tmp_path / "a.png"), "--model", "espcn", "--scale", "1.5", *fp32]) == 0
    result = read_image(tmp_path / "a_x1.5.png").pixels
    assert result.shape == (30, 45, 3)
    expected = imresize(upscale_image(pixels, resolve_model("espcn", 2)), size=(30, 45))
    np.testing.assert_array_equal(result, expected)


def test_a_target_width_picks_the_scale_that_reaches_it(tmp_path: Path, capsys) -> None:
    write_image(tmp_path / "a.png", _textured(40, 50))
    assert main(["upscale", str(tmp_path / "a.png"), "--model", "espcn", "--width", "120"]) == 0
    assert read_image(tmp_path / "a_w120.png").pixels.shape == (96, 120, 3)  # x2.4: run at x3
    assert "espcn at x3, then downscaled to w120 (antialiased bicubic)" in capsys.readouterr().out
    both = ["upscale", str(tmp_path / "a.png"), "--model", "espcn", "--width", "90", "--height", "70"]
    assert main(both) == 0 and read_image(tmp_path / "a_90x70.png").pixels.shape == (70, 90, 3)
    # Beyond what the model's scale reaches: that image fails with one line, nothing is written.
    too_wide = ["upscale", str(tmp_path / "a.png"), "--model", "espcn", "--scale", "2", "--width", "400"]
    assert main(too_wide) == 1
    assert "needs x8.00, more than the model's x2" in capsys.readouterr().err
    assert not (tmp_path / "a_w400.png").exists()


def test_the_python_api_takes_sizes_too(tmp_path: Path) -> None:
    from superres.inference.pipeline import upscale_image
    from superres.ops.resize import imresize
    from superres.zoo.names import resolve_model

    pixels = _textured(20, 30)
    fp32 = {"model": "espcn", "precision": "fp32"}
    half_again = superres.upscale(pixels, scale=1.5, **fp32)
    expected = imresize(upscale_image(pixels, resolve_model("espcn", 2)), size=(30, 45))
    np.testing.assert_array_equal(half_again, expected)
    assert superres.upscale(pixels, width=80, **fp32).shape == (53, 80, 3)  # x2.67: run at x3
    write_image(tmp_path / "a.png", pixels)
    assert superres.upscale(tmp_path / "a.png", height=50, **fp32) == tmp_path / "a_h50.png"
    assert read_image(tmp_path / "a_h50.png").pixels.shape == (50, 75, 3)
    report = superres.upscale_files([tmp_path / "a.png"], tmp_path / "out", width=60, **fp32)
    assert [path.name for path in report.written] == ["a_w60.png"]
    assert read_image(tmp_path / "out" / "a_w60.png").pixels.shape == (40, 60, 3)
