"""Real-world models in use: the input check that routes compressed or noisy images to them, the
denoise strength, their place among the shipped models, and an RGB network through tiling and
ONNX. Small random-weight networks in a temporary weights folder; CPU only."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import superres.zoo.pretrained as pretrained
from superres.cli import main
from superres.errors import ModelError
from superres.images import read_image, write_image
from superres.images.jpeg import estimate_jpeg_quality
from superres.inference.input_check import (
    JPEG_BLOCK_SCORE_LIMIT,
    NOISE_SIGMA_LIMIT,
    InputCondition,
    inspect_input,
    jpeg_block_score,
    model_for_input,
    noise_sigma,
)
from superres.inference.pipeline import upscale_image
from superres.models import create_model
from superres.models.colour import span_y_to_rgb
from superres.zoo.checkpoint import save_checkpoint
from superres.zoo.names import resolve_model
from superres.zoo.pretrained import default_model_for, fastest_model_for, load_denoised, write_model_card
from test_train import synthetic_image

SMALL_SPAN = {"num_features": 8, "num_blocks": 1, "reparam_gain": 0, "bicubic_skip": True}


def ship(folder: Path, name: str, model: torch.nn.Module, set5: float, **card_fields: object) -> None:
    """`model` as shipped weights `name` at its scale, with a card (Set5 PSNR `set5`)."""
    metadata = {
        "model": "span",
        "scale": model.scale,
        "model_kwargs": model.model_kwargs,
        "channels": model.model_kwargs["channels"],
    }
    save_checkpoint(folder / f"{name}_x{model.scale}.safetensors", model, metadata)
    card_path = write_model_card(
        folder,
        name,
        model.scale,
        architecture="span",
        model_kwargs=model.model_kwargs,
        recipe="test",
        training_seconds=1.0,
        hardware="test",
        date="2026-01-01",
        metrics={"Set5": {"psnr": set5, "ssim": 0.9}},
    )
    card = json.loads(card_path.read_text())
    card.update(
        {"bicubic": {"Set5": {"psnr": 30.0, "ssim": 0.8}}, "macs_per_output_pixel": 1000, **card_fields}
    )
    card_path.write_text(json.dumps(card))


@pytest.fixture()
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`clean` (Y) and `real` (RGB, fine-tuned from clean's RGB form) at x2; `real` scores higher
    on the clean card on purpose: it must still never be the default."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(pretrained, "weights_root", lambda: folder)
    torch.manual_seed(0)
    clean = create_model("span", 2, **SMALL_SPAN, channels="Y").eval()
    ship(folder, "clean", clean, 35.0)
    real = span_y_to_rgb(clean)
    with torch.no_grad():
        for parameter in real.parameters():  # "fine-tuned": moved away from the start
            parameter.add_(0.05 * torch.randn_like(parameter))
    ship(folder, "real", real, 36.0, degradation="real", denoise_base="clean")
    return folder


# --- choosing models ---------------------------------------------------------------------------


def test_a_real_world_model_is_never_the_default_nor_fast(shipped: Path) -> None:
    assert default_model_for(2) == "clean"
    assert fastest_model_for(2) == "clean"
    entry = next(entry for entry in pretrained.list_pretrained() if entry.name == "real")
    assert entry.real_world and entry.by_name_only


def test_degraded_inputs_go_to_the_real_world_model_where_it_ships(shipped: Path) -> None:
    clean, jpeg, noisy = InputCondition(None, 1.0), InputCondition(70, 1.0), InputCondition(None, 6.0)
    assert not clean.degraded and jpeg.compressed and noisy.noisy
    assert model_for_input(clean, 2) == "clean"
    assert model_for_input(jpeg, 2) == model_for_input(noisy, 2) == "real"
    assert model_for_input(InputCondition(95, 1.0), 2) == "clean"  # a camera's quality
    assert model_for_input(jpeg, 3) == "bicubic"  # nothing ships at x3 here: no real-world model either


@pytest.mark.parametrize("quality", [35, 60, 75, 85, 90, 97])
def test_jpeg_quality_is_read_from_the_quantisation_tables(tmp_path: Path, quality: int) -> None:
    Image.fromarray(synthetic_image(40, 48, 0)).save(tmp_path / "q.jpg", quality=quality)
    assert estimate_jpeg_quality(tmp_path / "q.jpg") == quality
    write_image(tmp_path / "q.png", synthetic_image(40, 48, 0))
    assert estimate_jpeg_quality(tmp_path / "q.png") is None


def test_the_noise_estimate_tells_noise_from_smooth_detail() -> None:
    smooth = synthetic_image(200, 200, 1)
    rng = np.random.default_rng(0)
    noisy = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
    assert noise_sigma(smooth) < 1.0
    assert 6.0 < noise_sigma(noisy) < 10.0 and noise_sigma(noisy) >= NOISE_SIGMA_LIMIT
    assert noise_sigma(np.zeros((8, 8, 3), np.uint8)) == 0.0  # too small to tell: clean


def _decoded_jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_the_block_score_finds_a_jpeg_grid_at_any_offset_in_pixels_saved_again() -> None:
    picture = synthetic_image(120, 136, 1)
    blocky = _decoded_jpeg(picture, 60)
    assert jpeg_block_score(picture) < JPEG_BLOCK_SCORE_LIMIT
    for top, left in ((0, 0), (3, 5), (7, 1)):  # cropped after decoding: the grid sits anywhere
        assert jpeg_block_score(blocky[top:, left:]) > 2 * JPEG_BLOCK_SCORE_LIMIT
    assert jpeg_block_score(blocky[..., 1]) > JPEG_BLOCK_SCORE_LIMIT  # gray
    assert jpeg_block_score(blocky.astype(np.uint16) * 257) == pytest.approx(jpeg_block_score(blocky))
    assert jpeg_block_score(blocky[:60, :60]) == 0.0  # too few blocks to tell
    assert jpeg_block_score(np.full((80, 80, 3), 128, np.uint8)) == 0.0  # flat: no grid either way


def test_a_png_of_a_decoded_jpeg_is_compressed_but_a_jpeg_file_goes_by_its_tables(tmp_path: Path) -> None:
    picture = synthetic_image(120, 136, 2)
    write_image(tmp_path / "resaved.png", _decoded_jpeg(picture, 60))
    write_image(tmp_path / "clean.png", picture)
    Image.fromarray(picture).save(tmp_path / "camera.jpg", quality=95)
    resaved = inspect_input(tmp_path / "resaved.png", read_image(tmp_path / "resaved.png").pixels)
    assert resaved.compressed and resaved.jpeg_quality is None and "JPEG blocks" in resaved.describe()
    assert not inspect_input(tmp_path / "clean.png", picture).compressed
    camera = inspect_input(tmp_path / "camera.jpg", read_image(tmp_path / "camera.jpg").pixels)
    assert camera.jpeg_quality == 95 and camera.jpeg_block_score == 0.0 and not camera.compressed
    assert inspect_input(None, _decoded_jpeg(picture, 60)).compressed  # pixels without a file (the API)


def test_upscale_without_a_model_routes_each_image_by_its_condition(
    shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    picture = synthetic_image(40, 44, 2)
    write_image(inputs / "clean.png", picture)
    Image.fromarray(picture).save(inputs / "web.jpg", quality=60)
    rng = np.random.default_rng(1)
    write_image(
        inputs / "noisy.png", np.clip(picture + rng.normal(0, 10, picture.shape), 0, 255).astype(np.uint8)
    )
    assert main(["upscale", str(inputs), "-o", str(tmp_path / "auto"), "--scale", "2"]) == 0
    assert "clean / real" in capsys.readouterr().out
    for model in ("clean", "real"):
        assert (
            main(["upscale", str(inputs), "-o", str(tmp_path / model), "--scale", "2", "--model", model]) == 0
        )

    def output(folder: str, name: str) -> np.ndarray:
        return read_image(tmp_path / folder / name).pixels

    assert np.array_equal(output("auto", "clean_x2.png"), output("clean", "clean_x2.png"))
    assert np.array_equal(output("auto", "noisy_x2.png"), output("real", "noisy_x2.png"))
    assert np.array_equal(output("auto", "web_x2.jpg"), output("real", "web_x2.jpg"))
    # -o naming one file still takes one input only, however the inputs are split.
    assert main(["upscale", str(inputs), "-o", str(tmp_path / "one.png"), "--scale", "2"]) != 0


# --- the denoise strength ------------------------------------------------------------------------


def test_denoise_strength_interpolates_between_the_clean_start_and_the_real_model(shipped: Path) -> None:
    real = resolve_model("real", 2).state_dict()
    base = span_y_to_rgb(resolve_model("clean", 2)).state_dict()
    for strength, expected in ((1.0, real), (0.0, base)):
        for key, tensor in load_denoised("real", 2, strength).state_dict().items():
            torch.testing.assert_close(tensor, expected[key], rtol=0, atol=1e-6)
    half = resolve_model("real@denoise=0.25", 2).state_dict()
    for key, tensor in half.items():
        torch.testing.assert_close(tensor, 0.25 * real[key] + 0.75 * base[key], rtol=0, atol=1e-6)


def test_a_weak_denoise_rgb_network_can_be_the_base_of_the_strength(shipped: Path) -> None:
    # Real-ESRGAN's pairing: the base is an RGB network trained on lighter degradations, taken as
    # it is (no Y-to-RGB conversion).
    weak = resolve_model("real@denoise=1", 2)
    with torch.no_grad():
        for parameter in weak.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    ship(shipped, "weak", weak, 35.5, degradation="real")
    card_path = shipped / "real_x2.json"
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), "denoise_base": "weak"}))
    real, base = resolve_model("real@denoise=1", 2).state_dict(), weak.state_dict()
    for key, tensor in load_denoised("real", 2, 0.25).state_dict().items():
        torch.testing.assert_close(tensor, 0.25 * real[key] + 0.75 * base[key], rtol=0, atol=1e-6)


def test_denoise_strength_is_checked(shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ModelError, match="in \\[0, 1\\]"):
        load_denoised("real", 2, 1.5)
    with pytest.raises(ModelError, match="no denoise strength \\(the models with one: real\\)"):
        resolve_model("clean@denoise=0.5", 2)
    with pytest.raises(ModelError, match="must be a number"):
        resolve_model("real@denoise=much", 2)
    write_image(tmp_path / "a.png", synthetic_image(20, 20, 3))
    assert (
        main(["upscale", str(tmp_path / "a.png"), "--scale", "2", "--model", "clean", "--denoise", "0.5"])
        != 0
    )
    assert "no denoise strength" in capsys.readouterr().err
    assert (
        main(
            [
                "upscale",
                str(tmp_path / "a.png"),
                "-o",
                str(tmp_path / "b.png"),
                "--scale",
                "2",
                "--denoise",
                "0.5",
            ]
        )
        == 0
    )


# --- an RGB network through the shared paths ------------------------------------------------------


def test_an_rgb_model_tiled_equals_untiled() -> None:
    torch.manual_seed(2)
    model = create_model("span", 2, **SMALL_SPAN, channels="RGB").eval()
    image = synthetic_image(37, 45, 4)
    whole = upscale_image(image, model, tile=None)
    tiled = upscale_image(image, model, tile=12)
    assert whole.shape == (74, 90, 3)
    assert np.array_equal(whole, tiled)


def test_an_rgb_model_exports_to_onnx_matching_torch() -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    from superres.inference.export import INPUT_NAME, OUTPUT_NAME, export_onnx_bytes

    torch.manual_seed(3)
    model = span_y_to_rgb(create_model("span", 4, **SMALL_SPAN, channels="Y"))
    session = onnxruntime.InferenceSession(export_onnx_bytes(model), providers=["CPUExecutionProvider"])
    lr = torch.rand(1, 3, 11, 14)
    with torch.no_grad():
        expected = model(lr).numpy()
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: lr.numpy()})[0]
    assert actual.shape == (1, 3, 44, 56)
    assert np.abs(actual - expected).max() < 1e-4


def test_a_perceptual_real_world_model_gets_its_own_table_beside_its_parent(shipped: Path) -> None:
    from superres.cli.doc_tables import real_world_tables

    gan = resolve_model("real@denoise=1", 2)
    scores = {"Set5": {"psnr": 30.0, "ssim": 0.8, "lpips_approx": 0.1234, "niqe": 6.5}}
    ship(shipped, "real-gan", gan, 30.0, degradation="real", objective="perceptual",
         metrics_degraded={"jpeg": scores}, parent={"name": "real", "scale": 2})
    card_path = shipped / "real_x2.json"
    parent_scores = {"jpeg": {"Set5": {"psnr": 31.0, "ssim": 0.85, "lpips_approx": 0.1111, "niqe": 9.5}}}
    card_path.write_text(json.dumps({**json.loads(card_path.read_text()), "metrics_degraded": parent_scores}))
    lines = real_world_tables()
    # The PSNR table with denoise strengths is the PSNR model's; the GAN has no strength.
    assert not any(line.startswith("| `real-gan` (strength") for line in lines)
    title = lines.index("`real-gan` x2, a perceptual model (lower is better for both measures):")
    parent_row, gan_row = lines[title + 6], lines[title + 7]
    assert parent_row.startswith("| `real` (its parent) | 0.111 / - | 9.50 / - |")
    assert gan_row.startswith("| `real-gan` | 0.123 / - | 6.50 / - |")
    with pytest.raises(ModelError, match="no denoise strength"):
        resolve_model("real-gan@denoise=0.5", 2)


def test_a_card_default_denoise_is_what_the_name_alone_gives(shipped: Path) -> None:
    trained = resolve_model("real", 2).state_dict()
    card_path = shipped / "real_x2.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "default_denoise": 0.5}))
    by_name = resolve_model("real", 2).state_dict()
    blend = load_denoised("real", 2, 0.5).state_dict()
    assert all(torch.equal(by_name[key], blend[key]) for key in blend)
    assert any(not torch.equal(by_name[key], trained[key]) for key in trained)
    # Strength 1 is still the trained network.
    full = resolve_model("real@denoise=1", 2).state_dict()
    assert all(torch.equal(full[key], trained[key]) for key in trained)


def test_a_wider_real_network_blends_with_its_base_widened_by_the_runs_seed(shipped: Path) -> None:
    # real trained from clean's RGB form widened (Net2Net): strength 0 is that widened start, the
    # same new channels, rebuilt from the seed its card names.
    clean_rgb = span_y_to_rgb(resolve_model("clean", 2))
    start = clean_rgb.info.widen(clean_rgb, 12, 7)
    wide = create_model("span", 2, **{**SMALL_SPAN, "num_features": 12}, channels="RGB").eval()
    wide.load_state_dict(start.state_dict())
    with torch.no_grad():
        for parameter in wide.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    ship(shipped, "real", wide, 36.0, degradation="real", denoise_base="clean", denoise_base_widen_seed=7)
    expected = start.state_dict()
    for key, tensor in load_denoised("real", 2, 0.0).state_dict().items():
        torch.testing.assert_close(tensor, expected[key], rtol=0, atol=1e-6)
    card_path = shipped / "real_x2.json"
    card = json.loads(card_path.read_text())
    del card["denoise_base_widen_seed"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="no widening seed"):
        load_denoised("real", 2, 0.5)
