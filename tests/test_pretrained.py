"""Shipped pretrained weights: listing, loading, the default model, resolving `--model`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import superres.zoo.pretrained as pretrained
from superres.cli import main
from superres.errors import ModelError
from superres.models import create_model, get_model_info
from superres.zoo.checkpoint import save_checkpoint
from superres.zoo.names import resolve_model
from superres.zoo.pretrained import default_model_for, list_pretrained, load_pretrained, write_model_card

SMALL_REDNET = {"num_layers": 2, "num_features": 8}


def save_model(path: Path, architecture: str, scale: int, **kwargs) -> torch.nn.Module:
    model = create_model(architecture, scale, **kwargs)
    metadata = {
        "model": architecture,
        "scale": scale,
        "model_kwargs": model.model_kwargs,
        "channels": model.info.channels,
    }
    save_checkpoint(path, model, metadata)
    return model


def card(
    folder: Path, name: str, scale: int, set5_psnr: float, architecture: str = "rednet"
) -> None:
    write_model_card(
        folder,
        name,
        scale,
        architecture=architecture,
        model_kwargs=SMALL_REDNET,
        recipe="superres train --config test.toml",
        training_seconds=12.0,
        hardware="test CPU",
        date="2025-01-01",
        metrics={
            "Set5": {"psnr": set5_psnr, "ssim": 0.9},
            "Set14": {"psnr": set5_psnr - 4, "ssim": 0.8},
        },
    )


@pytest.fixture()
def empty_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(pretrained, "weights_root", lambda: folder)
    return folder


@pytest.fixture()
def weights(empty_weights: Path) -> Path:
    """red20 at x2 and x3, redsmall at x2 (better Set5), a card-less srcnn at x4."""
    save_model(empty_weights / "red20_x2.safetensors", "rednet", 2, **SMALL_REDNET)
    card(empty_weights, "red20", 2, 36.0)
    save_model(empty_weights / "red20_x3.safetensors", "rednet", 3, **SMALL_REDNET)
    card(empty_weights, "red20", 3, 33.0)
    save_model(empty_weights / "red_small_x2.safetensors", "rednet", 2, **SMALL_REDNET)
    card(empty_weights, "red_small", 2, 37.5)
    save_model(empty_weights / "srcnn_x4.safetensors", "srcnn", 4)
    (empty_weights / "notes.txt").write_text("not weights")
    return empty_weights


def test_shipped_weights_list_and_load() -> None:
    unfilled_field = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*(:[^{}]*)?\}")  # "{s5:.2f}" left by a template
    for entry in list_pretrained():
        assert entry.path.name == f"{entry.name}_x{entry.scale}.safetensors"
        for field in ("note", "recipe", "hardware", "training_data"):
            text = str(entry.card.get(field, ""))
            assert not unfilled_field.search(text), f"{entry.name} x{entry.scale}: {field} {text!r}"
        assert entry.metric("Set5", "psnr") is not None, f"{entry.name} x{entry.scale}: no card"
        model = load_pretrained(entry.name, entry.scale)
        assert model.scale == entry.scale and not model.training
    for scale in (2, 3, 4):
        assert default_model_for(scale) in {entry.name for entry in list_pretrained()} | {"bicubic"}


def test_empty_folder(empty_weights: Path) -> None:
    assert list_pretrained() == []
    assert default_model_for(2) == "bicubic"
    with pytest.raises(ModelError, match="no pretrained weights ship"):
        load_pretrained("rednet", 2)


def test_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pretrained, "weights_root", lambda: tmp_path / "absent")
    assert list_pretrained() == []
    assert default_model_for(3) == "bicubic"


def test_listing_reads_names_scales_and_cards(weights: Path) -> None:
    entries = list_pretrained()
    assert [(e.name, e.scale) for e in entries] == [
        ("red20", 2),
        ("red20", 3),
        ("red_small", 2),
        ("srcnn", 4),
    ]
    red20 = entries[0]
    assert red20.metric("Set5", "psnr") == 36.0
    assert red20.metric("set14", "SSIM") == 0.8
    assert red20.architecture == "rednet"
    assert entries[3].card == {} and entries[3].metric("Set5", "psnr") is None


def test_default_model_is_best_set5_psnr(weights: Path) -> None:
    assert default_model_for(2) == "red_small"
    assert default_model_for(3) == "red20"
    assert default_model_for(4) == "srcnn"  # shipped without a card still beats bicubic


def test_load_pretrained_restores_weights_in_eval_mode(weights: Path) -> None:
    original = save_model(weights / "red20_x2.safetensors", "rednet", 2, **SMALL_REDNET)
    model = load_pretrained("red20", 2)
    assert not model.training and model.scale == 2
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


def test_unknown_name_or_scale_lists_what_ships(weights: Path) -> None:
    with pytest.raises(ModelError, match="red20 x2, red20 x3"):
        load_pretrained("red20", 4)
    with pytest.raises(ModelError, match="ships for x2, x3, not x4"):
        resolve_model("red20", 4)
    with pytest.raises(ModelError, match="unknown model 'nope'.*bicubic"):
        resolve_model("nope", 2)


def test_broken_card_is_ignored_not_fatal(weights: Path) -> None:
    (weights / "red20_x2.json").write_text("{not json")
    entry = next(e for e in list_pretrained() if (e.name, e.scale) == ("red20", 2))
    assert entry.card == {}


def test_resolve_shipped_registered_and_path(weights: Path, tmp_path: Path) -> None:
    assert resolve_model("red20", 3).scale == 3
    bicubic = resolve_model("bicubic", 4)
    assert bicubic.info.name == "bicubic" and bicubic.scale == 4
    checkpoint = tmp_path / "mine.safetensors"
    save_model(checkpoint, "srcnn-tutorial", 3)
    assert resolve_model(str(checkpoint), 3).info.name == "srcnn-tutorial"
    assert resolve_model(str(checkpoint), None).scale == 3  # None: the checkpoint's own scale
    with pytest.raises(ModelError, match="scale x3, not the requested x2"):
        resolve_model(str(checkpoint), 2)
    with pytest.raises(ModelError, match="not found"):
        resolve_model(str(tmp_path / "missing.safetensors"), 2)


def test_untrained_architecture_is_refused(empty_weights: Path) -> None:
    with pytest.raises(ModelError, match="needs trained weights"):
        resolve_model("srcnn", 2)
    with pytest.raises(ModelError, match="does not support scale"):
        resolve_model("srcnn", 5)


def fast_card(folder: Path, name: str, scale: int, set5_psnr: float, macs: float, bicubic: float) -> None:
    card(folder, name, scale, set5_psnr)
    path = folder / f"{name}_x{scale}.json"
    written = json.loads(path.read_text())
    written.update({"macs_per_output_pixel": macs, "bicubic": {"Set5": {"psnr": bicubic, "ssim": 0.8}}})
    path.write_text(json.dumps(written))


def test_default_breaks_a_near_tie_by_speed(empty_weights: Path) -> None:
    for name, psnr, macs in (("slow", 37.31, 6e5), ("quick", 37.30, 4e4), ("weak", 36.0, 1e3)):
        save_model(empty_weights / f"{name}_x2.safetensors", "rednet", 2, **SMALL_REDNET)
        fast_card(empty_weights, name, 2, psnr, macs, bicubic=33.5)
    assert default_model_for(2) == "quick"  # 0.01 dB is noise on five images; 15x less work is not
    path = empty_weights / "quick_x2.json"
    written = json.loads(path.read_text())
    written["metrics"]["Set5"]["psnr"] = 37.2
    path.write_text(json.dumps(written))
    assert default_model_for(2) == "slow"  # 0.11 dB is a real difference


def test_fast_is_the_fastest_that_beats_bicubic_by_a_decibel(empty_weights: Path) -> None:
    for name, psnr, macs in (("big", 37.0, 9e5), ("small", 34.5, 2e4), ("tiny", 34.2, 1e3)):
        save_model(empty_weights / f"{name}_x2.safetensors", "rednet", 2, **SMALL_REDNET)
        fast_card(empty_weights, name, 2, psnr, macs, bicubic=33.5)
    assert pretrained.fastest_model_for(2) == "small"  # tiny gains 0.7 dB only
    assert default_model_for(2) == "big"
    assert resolve_model("fast", 2).scale == 2
    assert pretrained.fastest_model_for(3) == "bicubic"  # nothing ships at x3
    # Measured speeds (relative to bicubic in the same run), when every candidate has one, decide.
    for name, relative in (("big", 0.01), ("small", 0.2), ("tiny", 0.9)):
        path = empty_weights / f"{name}_x2.json"
        written = json.loads(path.read_text())
        written["speed"] = {"relative_to_bicubic": relative * (3 if name == "big" else 1)}
        path.write_text(json.dumps(written))
    assert pretrained.fastest_model_for(2) == "small"
    path = empty_weights / "big_x2.json"
    written = json.loads(path.read_text())
    written["speed"] = {"relative_to_bicubic": 0.5}  # more MACs, yet faster here
    path.write_text(json.dumps(written))
    assert pretrained.fastest_model_for(2) == "big"


@pytest.mark.parametrize(
    "marked",
    [{"objective": "perceptual"}, {"denoise_base_of": "real"}],  # a GAN; real-wdn, the 0 end of real's slider
)
def test_a_by_name_only_model_is_never_the_default_nor_fast(empty_weights: Path, marked: dict) -> None:
    for name, psnr, macs in (("psnr", 37.0, 9e5), ("other", 37.2, 1e3)):
        save_model(empty_weights / f"{name}_x2.safetensors", "rednet", 2, **SMALL_REDNET)
        fast_card(empty_weights, name, 2, psnr, macs, bicubic=33.5)
    assert default_model_for(2) == "other" and pretrained.fastest_model_for(2) == "other"
    path = empty_weights / "other_x2.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **marked}))
    assert default_model_for(2) == "psnr" and pretrained.fastest_model_for(2) == "psnr"
    assert resolve_model("other", 2).scale == 2  # still served by its name


def test_models_lists_the_perceptual_scores_of_perceptual_models(
    empty_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_model(empty_weights / "gan_x2.safetensors", "rednet", 2, **SMALL_REDNET)
    fast_card(empty_weights, "gan", 2, 36.0, 1e3, bicubic=33.5)
    path = empty_weights / "gan_x2.json"
    written = json.loads(path.read_text())
    written["objective"] = "perceptual"
    written["metrics"]["Set5"].update({"lpips_approx": 0.0834, "niqe": 6.694})
    path.write_text(json.dumps(written))
    assert main(["models", "--no-speed"]) == 0
    out = capsys.readouterr().out
    assert "gan (perceptual)" in out and "Perceptual models (lower is better" in out
    assert "0.0834 / 6.69" in out and "- / -" in out  # Set14 lacks them


def test_shipped_fast_and_default_models_keep_their_promises() -> None:
    for scale in (2, 3, 4):
        entries = {
            entry.name: entry for entry in list_pretrained() if entry.scale == scale and not entry.perceptual
        }
        fast = pretrained.fastest_model_for(scale)
        if fast == "bicubic":
            continue
        assert entries[fast].gain_over_bicubic() >= pretrained.FAST_MIN_GAIN_DB
        for entry in entries.values():
            if (entry.gain_over_bicubic() or 0) >= pretrained.FAST_MIN_GAIN_DB:
                assert entries[fast].speed_vs_bicubic >= entry.speed_vs_bicubic


def test_model_card_layout(tmp_path: Path) -> None:
    card(tmp_path, "red20", 2, 36.0)
    written = json.loads((tmp_path / "red20_x2.json").read_text())
    assert written["metrics"]["Set5"] == {"psnr": 36.0, "ssim": 0.9}
    assert {"recipe", "training_seconds", "hardware", "date", "protocol"} <= set(written)


def test_models_command_lists_architectures_and_weights(
    weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--time", "--architectures"]) == 0
    out = capsys.readouterr().out
    for name in ("bicubic", "srcnn", "srcnn-tutorial", "rednet", "red_small"):
        assert name in out
    assert "37.50 / 0.9000" in out and "33.50 / 0.8000" in out
    assert "Y channel" in out  # the protocol is stated under the table
    assert "output MP/s here" in out and "bicubic in the same run" in out


def test_models_command_times_only_when_asked(weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["models"], ["models", "--no-speed"]):
        assert main(args) == 0
        assert "MP/s" not in capsys.readouterr().out


def test_models_command_without_weights(
    empty_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models"]) == 0
    assert "none ship" in capsys.readouterr().out


@pytest.mark.slow  # seconds: left out by `make test-fast`
@pytest.mark.parametrize(("name", "scale"), [(entry.name, entry.scale) for entry in list_pretrained()])
def test_shipped_weights_reproduce_their_model_card(shared_data: Path, name: str, scale: int) -> None:
    """The Set5 score on each card is what `superres evaluate` measures with the shipped weights."""
    from superres.evaluation.protocol import evaluate_model
    from superres.zoo.pretrained import list_pretrained, load_pretrained

    entry = next(e for e in list_pretrained() if (e.name, e.scale) == (name, scale))
    result = evaluate_model(load_pretrained(name, scale), shared_data / "benchmark" / "Set5" / "HR", scale)
    assert result.psnr == pytest.approx(entry.metric("Set5", "psnr"), abs=0.01)
    assert result.ssim == pytest.approx(entry.metric("Set5", "ssim"), abs=0.001)


REPOSITORY = Path(__file__).resolve().parents[1]


def test_recipes_and_committed_runs_are_valid_and_match_the_cards() -> None:
    from superres.training.config import build_config, load_run_config, resolve_config

    recipes = {path.name: path for path in (REPOSITORY / "recipes").glob("*.json")}
    assert recipes, "the training recipes of the shipped weights live in recipes/"
    configs = {name: resolve_config(build_config(config_file=path)) for name, path in recipes.items()}
    for entry in list_pretrained():
        named = [name for name in recipes if f"recipes/{name}" in entry.card["recipe"]]
        assert named, f"{entry.name} x{entry.scale}: its card names no recipe in recipes/"
        info = get_model_info(entry.card["architecture"])
        shipped = info.effective_kwargs(entry.card["model_kwargs"])
        for name in named:
            config = configs[name]
            assert (config.model, config.scale) == (entry.card["architecture"], entry.scale)
            trained = info.effective_kwargs(config.model_kwargs)
            if shipped.get("reparam_gain") == 0 and trained.get("reparam_gain"):
                trained["reparam_gain"] = 0  # trained with branches, shipped folded into the plain net
            if info.widen is not None and trained.get("num_features", 0) < shipped.get("num_features", 0):
                trained["num_features"] = shipped["num_features"]  # an ancestor run, widened since (Net2Net)
            assert trained == shipped, name
    for config_file in (REPOSITORY / "checkpoints").glob("*/config.json"):
        resolve_config(load_run_config(config_file.parent))
