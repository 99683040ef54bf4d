"""`--precision auto|fp32|bf16|int8`: the choice, the refusals, and each precision's outputs held to
the tolerance its model card records (superres.inference.precision)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from superres.cli import main
from superres.cli.options import PRECISION_CHOICES
from superres.errors import ConfigError
from superres.evaluation.protocol import model_channels, score_image
from superres.images import read_image, write_image
from superres.inference import fast, pipeline, precision
from superres.inference.backends import make_backend
from superres.inference.pipeline import resolve_tile, upscale_image
from superres.inference.tiling import MAX_CPU_BUDGET_BYTES, MIN_CPU_BUDGET_BYTES, cpu_budget_bytes
from superres.models import create_model
from superres.zoo.pretrained import attach_card, card_of, list_pretrained, load_pretrained

SHIPPED = [(entry.name, entry.scale) for entry in list_pretrained()]
#: The shipped models whose card records a bf16 measurement (tools/measure_precision.py).
MEASURED = [
    (entry.name, entry.scale) for entry in list_pretrained() if "bf16" in entry.card.get("precision", {})
]
#: Pre-upsampling networks of RED-Net's depth take seconds per benchmark image.
HEAVY = {"red20"}

needs_bf16 = pytest.mark.skipif(
    not fast.bf16_convolutions_work(), reason="this torch build cannot compute bf16 convolutions here"
)


def _card(delta5: float, delta14: float, ratio: float | None = 0.5) -> dict:
    bf16: dict = {
        "Set5": {"psnr": 30.0, "delta_db": delta5, "max_abs_diff": 1, "rms_diff": 0.2},
        "Set14": {"psnr": 28.0, "delta_db": delta14, "max_abs_diff": 2, "rms_diff": 0.3},
    }
    if ratio is not None:
        bf16["network_time_ratio"] = ratio
    return {"name": "toy", "precision": {"bf16": bf16}}


def _toy(card: dict | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("espcn", 2).eval()
    return attach_card(model, card) if card is not None else model


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with bf16 instructions, whatever this one has (the choice, not the speed, is tested)."""
    monkeypatch.setattr(precision, "has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "bf16_convolutions_work", lambda: True)


# --------------------------------------------------------------------------- parsing and refusals


def test_the_command_line_offers_exactly_the_precisions() -> None:
    assert PRECISION_CHOICES == precision.PRECISIONS


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        precision.resolve_precision("fp16", _toy())
    with pytest.raises(SystemExit):
        main(["upscale", "x.png", "--precision", "fp16"])


def test_int8_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="int8"):
        make_backend(_toy(), "torch", "cpu", precision="int8")
    source = tmp_path / "photo.png"
    write_image(source, np.full((12, 16, 3), 128, np.uint8))
    assert main(["upscale", str(source), "--model", "espcn", "--precision", "int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "int8 is not available" in err[0] and "docs/precision.md" in err[0]
    assert not (tmp_path / "photo_x2.png").exists()


def test_bf16_is_refused_on_a_cpu_without_the_instructions(monkeypatch: pytest.MonkeyPatch) -> None:
    # Refused, not emulated: oneDNN's bf16 without the instructions runs slower than fp32.
    monkeypatch.setattr(precision, "has_native_bf16", lambda: False)
    model = _toy(_card(0.0, 0.0))
    with pytest.raises(ConfigError, match="no bf16 instructions"):
        precision.resolve_precision("bf16", model)
    assert precision.resolve_precision("auto", model) == "fp32"  # auto falls back


def test_bf16_is_refused_off_the_torch_cpu_path(bf16_cpu: None) -> None:
    model = _toy(_card(0.0, 0.0))
    with pytest.raises(ConfigError, match="onnxruntime"):
        precision.resolve_precision("bf16", model, "cpu", "onnxruntime")
    assert precision.resolve_precision("auto", model, "cpu", "onnxruntime") == "fp32"
    assert precision.resolve_precision("auto", model, "meta") == "fp32"


# --------------------------------------------------------------------------- auto follows the card


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        (_card(0.0006, -0.0001), "bf16"),
        (_card(-0.02, 0.02), "bf16"),  # at most 0.02 dB either way
        (_card(-0.021, 0.0), "fp32"),
        (_card(0.0, 0.05), "fp32"),  # a change is a change, even a gain
        (_card(0.0, 0.0, ratio=1.02), "fp32"),  # free but measured slower
        (_card(0.0, 0.0, ratio=None), "fp32"),  # no speed measured
        ({"precision": {"bf16": {"Set5": {"delta_db": 0.0}}, "network_time_ratio": 0.5}}, "fp32"),  # no Set14
        ({"name": "toy"}, "fp32"),  # no precision entry
    ],
)
def test_auto_picks_by_the_card(bf16_cpu: None, card: dict, expected: str) -> None:
    assert precision.resolve_precision("auto", _toy(card)) == expected


def test_auto_is_fp32_for_weights_no_card_describes(bf16_cpu: None) -> None:
    assert precision.resolve_precision("auto", _toy()) == "fp32"  # built here, no card
    model = _toy(_card(0.0, 0.0))
    assert card_of(model) is not None
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # fine-tuned after loading: the card no longer applies
    assert card_of(model) is None
    assert precision.resolve_precision("auto", model) == "fp32"


def test_a_card_that_says_bf16_is_unsafe_refuses_bf16_and_keeps_auto_at_fp32(bf16_cpu: None) -> None:
    """`ModelInfo.bf16_safe` (spandrel's verdict on a community architecture) comes before any
    measurement: even with a card that would have auto choose bf16, auto is fp32 and bf16 refused."""
    import dataclasses

    model = _toy(_card(0.0, 0.0))
    assert precision.resolve_precision("auto", model) == "bf16"  # the card alone would choose it
    model.info = dataclasses.replace(model.info, bf16_safe=False)
    assert precision.resolve_precision("auto", model) == "fp32"
    assert precision.describe_choice("auto", model).startswith("fp32: its card says the espcn architecture")
    for runtime in ("torch", "onnxruntime"):  # refused before the runtime or the CPU is looked at
        with pytest.raises(ConfigError, match="espcn architecture is not safe in bfloat16"):
            precision.resolve_precision("bf16", model, "cpu", runtime)
    with pytest.raises(ConfigError, match="not safe in bfloat16"):
        make_backend(model, "torch", "meta", precision="bf16")
    assert make_backend(model, "torch", "cpu", precision="auto").precision == "fp32"


def test_fp32_is_always_fp32(bf16_cpu: None) -> None:
    assert precision.resolve_precision("fp32", _toy(_card(0.0, 0.0))) == "fp32"


@pytest.mark.parametrize(("name", "scale"), SHIPPED)
def test_auto_on_each_shipped_model_follows_its_card(name: str, scale: int) -> None:
    model = load_pretrained(name, scale)
    card = card_of(model)
    assert card is not None
    expected = "bf16" if precision.worth_it_by_card(card, "bf16") and precision.cpu_runs_bf16() else "fp32"
    assert precision.resolve_precision("auto", model) == expected
    assert make_backend(model, "torch", "cpu", precision="auto").precision == expected


def test_the_card_entry_states_its_protocol() -> None:
    for entry in list_pretrained():
        recorded = entry.card.get("precision")
        if recorded is None:
            continue
        assert "superres evaluate --precision" in recorded["protocol"]
        assert recorded["fp32"]["Set5"]["psnr"] == pytest.approx(entry.metric("Set5", "psnr"), abs=1e-3)
        assert precision.tolerance(entry.card, "bf16") is not None


# --------------------------------------------------------------------------- outputs against fp32


def _bf16_backend(model: nn.Module, monkeypatch: pytest.MonkeyPatch):
    # The comparison holds on any CPU that computes bf16 convolutions, emulated or not.
    monkeypatch.setattr(precision, "has_native_bf16", lambda: True)
    return make_backend(model, "torch", "cpu", precision="bf16")


@needs_bf16
@pytest.mark.parametrize(
    ("name", "scale"),
    [pytest.param(*pair, marks=pytest.mark.slow) if pair[0] in HEAVY else pair for pair in MEASURED],
)
def test_bf16_outputs_stay_within_the_cards_tolerance(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch, name: str, scale: int
) -> None:
    """The SR image the protocol scores, bf16 against fp32, on Set5's smallest image: within the
    largest difference the card measured over Set5 and Set14 (plus one level and a quarter of the
    RMS: another CPU's bf16 kernels may round differently)."""
    model = load_pretrained(name, scale)
    limits = precision.tolerance(card_of(model), "bf16")
    hr = read_image(shared_data / "benchmark" / "Set5" / "HR" / "butterfly.png").pixels
    channels = model_channels(model)
    outputs = {}
    for chosen, backend in (
        ("fp32", make_backend(model, "torch", "cpu")),
        ("bf16", _bf16_backend(model, monkeypatch)),
    ):
        _, outputs[chosen] = score_image(backend, hr, scale, channels=channels)
    difference = outputs["bf16"].astype(np.int16) - outputs["fp32"].astype(np.int16)
    assert np.abs(difference).max() <= limits["max_abs_diff"] + 1
    assert np.sqrt(np.mean(difference.astype(np.float64) ** 2)) <= 1.25 * limits["rms_diff"]


@needs_bf16
def test_bf16_tiles_agree_with_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_pretrained("span60", 2)
    limits = precision.tolerance(card_of(model), "bf16")
    backend = _bf16_backend(model, monkeypatch)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    pixels = (np.stack([np.sin(x / 6.0 + c) * np.cos(y / 5.0) for c in range(3)], axis=2) * 100 + 128)
    pixels = np.clip(pixels + rng.normal(0, 3, pixels.shape), 0, 255).astype(np.uint8)
    whole = upscale_image(pixels, model, tile=None, backend=backend)
    tiled = upscale_image(pixels, model, tile=24, backend=backend)
    assert np.abs(whole.astype(np.int16) - tiled.astype(np.int16)).max() <= limits["max_abs_diff"] + 1
    fp32 = upscale_image(pixels, model, tile=None)
    assert np.abs(whole.astype(np.int16) - fp32.astype(np.int16)).max() <= limits["max_abs_diff"] + 1


@needs_bf16
def test_the_image_convolutions_stay_fp32() -> None:
    lowered = fast.optimize_for_inference(load_pretrained("span60", 2), precision="bf16")
    casts = [module for module in lowered.modules() if isinstance(module, fast.CastInputs)]
    image = [cast for cast in casts if cast.dtype == torch.float32]
    assert len(image) == 2 and len(casts) > 10  # the first (1 -> 60) and the last (60 -> 4) convolution
    assert {fast._conv_channels(cast.inner) for cast in image} == {(1, 60), (60, 4)}
    # The first hands bf16 features on, the last a float32 image.
    assert {(cast.inner.weight.shape[1], cast.output_dtype) for cast in image} == {
        (1, torch.bfloat16), (60, torch.float32)
    }
    assert lowered(torch.rand(1, 1, 20, 24)).dtype == torch.float32


# --------------------------------------------------------------------------- tiling


@pytest.mark.parametrize(("name", "scale"), SHIPPED)
def test_the_tile_overlap_is_the_cards_receptive_field(name: str, scale: int) -> None:
    model = load_pretrained(name, scale)
    receptive_field = model.info.receptive_field_for(scale, **model.model_kwargs)
    assert pipeline._tile_overlap(model) == receptive_field
    # ...and no more than the shipped network needs: a perturbed LR pixel changes output pixels
    # receptive_field (or, where the formula rounds up, receptive_field - 1) LR pixels away.
    network = model.double()
    size = 2 * receptive_field + 9
    channels = 1 if model_channels(model) == "Y" else 3
    lr = torch.rand(1, channels, size, size, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    perturbed = lr.clone()
    perturbed[:, :, size // 2, size // 2] += 1.0
    with torch.no_grad():
        change = (network(perturbed) - network(lr)).abs().amax(dim=(0, 1))
    rows, columns = torch.nonzero(change > 1e-12, as_tuple=True)
    reach = int(max((rows // scale - size // 2).abs().max(), (columns // scale - size // 2).abs().max()))
    assert receptive_field - 1 <= reach <= receptive_field


def test_bf16_tiles_are_sized_for_two_bytes_a_value() -> None:
    model = load_pretrained("span60", 2)
    cpu = torch.device("cpu")
    fp32 = resolve_tile("auto", model, 3, cpu, False, "fp32")
    bf16 = resolve_tile("auto", model, 3, cpu, False, "bf16")
    assert bf16 > fp32


def test_the_cpu_budget_is_a_share_of_memory_within_bounds() -> None:
    assert cpu_budget_bytes(None) == MIN_CPU_BUDGET_BYTES
    assert cpu_budget_bytes(2 * 1024**3) == MIN_CPU_BUDGET_BYTES
    assert cpu_budget_bytes(16 * 1024**3) == 1024**3
    assert cpu_budget_bytes(1024**4) == MAX_CPU_BUDGET_BYTES


# --------------------------------------------------------------------------- the front ends


@needs_bf16
def test_evaluate_measures_a_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(precision, "has_native_bf16", lambda: True)
    folder = tmp_path / "HR"
    folder.mkdir()
    y, x = np.mgrid[0:40, 0:48]
    write_image(folder / "a.png", (np.stack([x * 4, y * 5, x + y], axis=2) % 256).astype(np.uint8))
    rows = {}
    for chosen in ("fp32", "bf16"):
        assert main(["evaluate", str(folder), "--model", "espcn", "--scale", "2", "--precision", chosen,
                     "--format", "json"]) == 0
        document = json.loads(capsys.readouterr().out)
        rows[chosen] = document["results"][0]
    assert "precision" not in rows["fp32"] and rows["bf16"]["precision"] == "bf16"
    # A synthetic 40x48 image scores ~57 dB, where one grey level moves PSNR by a tenth of a dB.
    assert abs(rows["bf16"]["psnr"] - rows["fp32"]["psnr"]) < 0.5


def test_the_api_takes_a_precision() -> None:
    import superres

    pixels = np.full((10, 12, 3), 100, np.uint8)
    with pytest.raises(ConfigError, match="int8"):
        superres.upscale(pixels, model="espcn", precision="int8")
    with pytest.raises(ConfigError, match="unknown precision"):
        superres.upscale(pixels, model="espcn", precision="half")
    out = superres.upscale(pixels, model="espcn", scale=2, precision="fp32")
    assert out.shape == (20, 24, 3)


def test_bench_pipeline_reports_ratios_tiles_and_memory() -> None:
    from superres.lab.bench_pipeline import format_pipeline, measure_pipeline, run_once

    result = measure_pipeline(40, 32, model="espcn", scale=2, precisions=("fp32", "auto"), runner=run_once)
    assert result["model"] == "espcn" and result["output_size"] == [64, 80]
    assert {run["precision"] for run in result["runs"]} == {"fp32", "auto"}
    assert set(result["time_ratios"]) == {"auto_over_fp32"}
    assert set(result["tiling_overhead"]) == {"fp32", "auto"}
    assert all(run["peak_rss_bytes"] is None or run["peak_rss_bytes"] > 0 for run in result["runs"])
    assert "tiling overhead at fp32" in format_pipeline(result)
