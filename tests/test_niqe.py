"""NIQE (`superres.evaluation.niqe`, `superres evaluate --niqe`) and the mirrored-border resize it needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_helpers import blocky_benchmark_folder
from superres.cli import main
from superres.errors import ConfigError
from superres.evaluation import niqe as niqe_module
from superres.evaluation.niqe import niqe, pristine_model
from superres.images import read_image
from superres.ops.color import rgb_to_y
from superres.ops.resize import imresize
from superres.zoo.packaged import PACKAGED_FILES


def _installed_model() -> None:
    try:
        pristine_model()
    except ConfigError as error:
        pytest.skip(str(error))


def _y_plane(path: Path) -> np.ndarray:
    pixels = read_image(path).pixels
    return np.round(rgb_to_y(pixels / 255.0) * 255.0)


def test_symmetric_border_is_a_resize_of_the_mirror_padded_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((20, 26)) * 255
    pad = 8  # past the reach of the 0.5x bicubic kernel (4.5 input px), and even: the grids align
    padded = np.pad(image, pad, mode="symmetric")
    expected = imresize(padded, 0.5)[pad // 2 : -pad // 2, pad // 2 : -pad // 2]
    np.testing.assert_allclose(imresize(image, 0.5, border="symmetric"), expected, atol=1e-9)
    replicated = imresize(image, 0.5)
    assert not np.allclose(replicated[0], expected[0])  # the two borders differ at the edge
    np.testing.assert_allclose(replicated[3:-3, 3:-3], expected[3:-3, 3:-3], atol=1e-9)  # not inside
    with pytest.raises(ValueError, match="unknown resize border"):
        imresize(image, 0.5, border="wrap")


def test_niqe_reproduces_the_matlab_release(shared_data: Path) -> None:
    _installed_model()
    # BasicSR publishes MATLAB R2021a's NIQE of its baboon.png, 5.72957338: that file is the left
    # 492 columns of Set14's baboon, and NIQE reads only the top-left 480x480 of either.
    plane = _y_plane(shared_data / "benchmark" / "Set14" / "HR" / "baboon.png")
    assert niqe(plane) == pytest.approx(5.72957338, abs=1e-5)


def test_niqe_finds_blur_less_natural(shared_data: Path) -> None:
    _installed_model()
    plane = _y_plane(shared_data / "benchmark" / "Set5" / "HR" / "baby.png")
    blurred = imresize(imresize(plane, 0.25), 4)
    assert niqe(plane) < niqe(blurred)


def test_niqe_refuses_what_it_cannot_score(monkeypatch: pytest.MonkeyPatch) -> None:
    _installed_model()
    with pytest.raises(ConfigError, match="needs two 96x96 blocks; a 150x100 image has fewer"):
        niqe(np.zeros((100, 150)))
    with pytest.raises(ConfigError, match="too few blocks with texture"):
        niqe(np.full((192, 192), 128.0))
    with pytest.raises(ValueError, match="one gray plane"):
        niqe(np.zeros((192, 192, 3)))
    monkeypatch.setitem(PACKAGED_FILES, "niqe", ("no_such_wheel_here", "params.npz"))
    niqe_module.pristine_model.cache_clear()
    try:
        with pytest.raises(ConfigError, match="'no_such_wheel_here' wheel is not installed"):
            pristine_model()
    finally:
        niqe_module.pristine_model.cache_clear()


def test_evaluate_niqe_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _installed_model()
    folder = blocky_benchmark_folder(tmp_path, blocks=25, block_size=8)
    assert main(["evaluate", str(folder), "--scale", "2", "--niqe", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "NIQE of SR alone" in report["protocol"]
    assert report["results"][0]["niqe"] > 0
    assert main(["evaluate", str(folder), "--scale", "2", "--niqe", "--rgb"]) != 0
    assert "--niqe scores the Y plane" in capsys.readouterr().err


def test_compare_captions_niqe_without_a_reference(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _installed_model()
    rng = np.random.default_rng(2)
    lr = np.kron(rng.integers(0, 256, (25, 25, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    Image.fromarray(lr).save(tmp_path / "lr.png")
    figure = tmp_path / "figure.png"
    assert main(["compare", str(tmp_path / "lr.png"), "--model", "espcn", "--scale", "2", "--niqe",
                 "-o", str(figure)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("bicubic (MATLAB)") and "NIQE" in printed[0]
    assert printed[1].startswith("SR: espcn") and "NIQE" in printed[1] and "PSNR" not in printed[1]
    assert figure.is_file()
