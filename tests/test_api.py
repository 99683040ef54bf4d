"""The Python facade: lazy import, the model-name grammar, each input kind of `upscale`, the
README's "Python API" examples run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

import superres
from superres import api
from superres.errors import ConfigError, ModelError
from superres.images import read_image, write_image
from superres.inference.pipeline import upscale_image
from superres.zoo.names import resolve_model

README = Path(__file__).resolve().parents[1] / "README.md"


def smooth_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth random uint8 image: something a network can sharpen."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [np.sin(rng.uniform(0.1, 0.4) * y + rng.uniform(0.1, 0.4) * x + rng.uniform(0, 6))
              for _ in range(channels)]
    return np.round((np.stack(planes, axis=2) + 1) * 127.5).astype(np.uint8)


def test_import_is_lazy_and_facade_names_stay_functions() -> None:
    code = (
        "import sys, superres; assert 'torch' not in sys.modules, 'torch imported'; "
        "import superres.inference.pipeline, superres.evaluation.protocol, superres.training.loop; "
        "assert all(callable(getattr(superres, n)) and not isinstance(getattr(superres, n), type(sys)) "
        "for n in ('upscale', 'evaluate', 'train'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert set(superres.__all__) >= {"upscale", "load_model", "evaluate", "train", "list_models"}


def test_one_grammar_for_model_names(tmp_path: Path) -> None:
    default = api.parse_model("default", 3)
    assert (default.kind, default.alias, default.scale) == ("pretrained", "default", 3)
    assert default.label == f"default ({default.name})"
    assert api.parse_model("fast").scale == 2
    assert api.parse_model("bicubic", 4).kind == "architecture"
    assert api.parse_model("red20", 2).kind == "pretrained"
    checkpoint = api.parse_model(str(tmp_path / "run" / "best.safetensors"))
    assert (checkpoint.kind, checkpoint.scale) == ("checkpoint", None)
    with pytest.raises(ModelError, match="unknown model 'nope'; choose one of: default, fast"):
        api.parse_model("nope")
    with pytest.raises(ModelError, match="ships for x2, x3, x4, not x5"):
        api.parse_model("red20", 5)
    with pytest.raises(ConfigError, match="positive integer"):
        api.parse_model("red20", "2")
    assert api.model_names()[:2] == ["default", "fast"] and "bicubic" in api.model_names()


def test_listing_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from superres.zoo import pretrained

    calls = []
    real = pretrained.list_pretrained
    monkeypatch.setattr(pretrained, "list_pretrained", lambda: calls.append(1) or real())
    api._pretrained_listing.cache_clear()
    try:
        for _ in range(3):
            api.list_pretrained()
            api.model_names()
        assert len(calls) == 1
    finally:
        api._pretrained_listing.cache_clear()


def test_upscale_returns_the_kind_it_was_given(tmp_path: Path) -> None:
    pixels = smooth_image(20, 26, 4)
    expected = upscale_image(pixels, resolve_model("srcnn", 2))
    # fp32 throughout: "auto" may pick bf16 where the card allows it (superres.inference.precision)
    np.testing.assert_array_equal(superres.upscale(pixels, "srcnn", device="cpu", precision="fp32"), expected)

    gray16 = (smooth_image(12, 10, 1)[:, :, 0].astype(np.uint16) * 257)
    assert superres.upscale(gray16, "bicubic", scale=3).shape == (36, 30)
    assert superres.upscale(gray16, "bicubic").dtype == np.uint16

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    pil = Image.fromarray(pixels[:, :, :3])
    pil.info["icc_profile"] = profile
    out = superres.upscale(pil, "srcnn")
    assert isinstance(out, Image.Image) and out.size == (52, 40) and out.mode == "RGB"
    assert out.info["icc_profile"] == profile

    source = tmp_path / "in.png"
    write_image(source, pixels, icc_profile=profile)
    written = superres.upscale(source, "srcnn", precision="fp32")
    assert written == tmp_path / "in_x2.png"
    loaded = read_image(written)
    np.testing.assert_array_equal(loaded.pixels, expected)
    assert loaded.icc_profile == profile
    assert superres.upscale(str(source), "srcnn", output=tmp_path / "o.tif") == tmp_path / "o.tif"
    with pytest.raises(ConfigError, match="refusing to overwrite input"):
        superres.upscale(source, "srcnn", output=source)
    with pytest.raises(TypeError, match="numpy array, a PIL image or a path"):
        superres.upscale(3)


def test_networks_are_loaded_once_and_load_model_is_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = smooth_image(8, 8)
    superres.upscale(pixels, "srcnn", scale=3)
    loads = []
    from superres.zoo import names  # api imports load_choice at call time: patch it here

    original = names.load_choice
    monkeypatch.setattr(names, "load_choice", lambda *a, **k: loads.append(a) or original(*a, **k))
    for _ in range(3):
        superres.upscale(pixels, "srcnn", scale=3)
    assert loads == []
    first, second = superres.load_model("srcnn", 3), superres.load_model("srcnn", 3)
    assert first is not second and not first.training and len(loads) == 2


def test_progress_reports_every_tile_and_can_stop_a_run() -> None:
    pixels = smooth_image(40, 40)
    seen = []
    api.upscale_pixels(pixels, "bicubic", tile=16, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (9, 9) and seen[0] == (0, 9)

    class Stop(Exception):
        pass

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        api.upscale_pixels(pixels, "bicubic", tile=16, progress=stop_after_two)


def readme_section_code(title: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = readme_section_code("Python API")
    assert len(blocks) >= 4
    # The files the examples name, made small so that the section runs in seconds.
    write_image(tmp_path / "photo.png", smooth_image(24, 32))
    for folder, count in (("scans", 3), ("Set5/HR", 2)):
        (tmp_path / folder).mkdir(parents=True)
        for index in range(count):
            write_image(tmp_path / folder / f"img{index}.png", smooth_image(36, 40, seed=index + 1))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md (Python API)", "exec"), namespace)
    assert (tmp_path / "photo_x2.png").is_file() and (tmp_path / "out" / "img0_x2.png").is_file()
    assert (tmp_path / "runs" / "tiny" / "last.safetensors").is_file()
