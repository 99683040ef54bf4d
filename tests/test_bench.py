"""Tests for `superres.lab.bench` and `superres bench`: FLOP counting, sizes, the JSON document."""

from __future__ import annotations

import ast
import copy
import inspect
import json

import pytest

from superres.cli import main
from superres.errors import ConfigError, ModelError
from superres.inference import backends
from superres.inference.export import frozen_copy
from superres.lab import bench
from superres.lab.bench import (
    BenchSettings,
    format_table,
    lr_size_for,
    parse_size,
    time_calls,
    training_setup,
)
from superres.models import create_model, get_model_info, list_models
from superres.models.complexity import count_conv_flops
from superres.models.reparam import fuse_reparameterizable

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _leave_the_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # retain_freed_memory is process-wide and permanent: keep it out of the shared pytest process.
    monkeypatch.setattr(backends, "retain_freed_memory", lambda: False)
    monkeypatch.setattr(bench, "retain_freed_memory", lambda: False)


def test_flops_of_srcnn_tutorial_follow_the_layer_shapes() -> None:
    model = create_model("srcnn-tutorial", 2)
    height, width = 2 * 30, 2 * 40
    macs_per_pixel = 3 * 64 * 9 + 64 * 32 * 9 + 32 * 3 * 9
    assert count_conv_flops(model, (2, 3, 30, 40)) == 2 * 2 * height * width * macs_per_pixel


def test_flops_of_rednet_count_transposed_convs_too() -> None:
    model = create_model("rednet", 3, num_layers=4, num_features=8)
    pixels = 3 * 10 * 3 * 12
    # encoder 1->8, 3 x 8->8; decoder 3 x 8->8, 8->1; all 3x3.
    macs_per_pixel = 9 * (1 * 8 + 3 * 8 * 8 + 3 * 8 * 8 + 8 * 1)
    forward = 2 * pixels * macs_per_pixel
    assert count_conv_flops(model, (1, 1, 10, 12)) == forward
    # Backward: weight gradients everywhere, input gradients everywhere but the first layer.
    first_layer = 2 * pixels * 9 * 1 * 8
    assert count_conv_flops(model.train(), (1, 1, 10, 12), training=True) == 3 * forward - first_layer


def test_flops_of_a_model_without_convolutions_are_zero() -> None:
    assert count_conv_flops(create_model("bicubic", 4), (1, 3, 8, 8)) == 0


def test_flop_counting_leaves_the_model_on_its_device() -> None:
    model = create_model("srcnn", 2)
    count_conv_flops(model, (1, 1, 720, 1280))
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    "output, scale, expected",
    [
        ((512, 512), 2, (256, 256)),
        ((512, 512), 3, (171, 171)),
        ((720, 1280), 4, (180, 320)),
        ((2, 2), 4, (1, 1)),
    ],
)
def test_lr_size_is_output_over_scale_rounded(output, scale, expected) -> None:
    assert lr_size_for(output, scale) == expected


def test_sizes_are_written_width_by_height() -> None:
    assert parse_size("1280x720") == (720, 1280)
    for bad in ["1280", "ax2", "0x5", "12x-3"]:
        with pytest.raises(ConfigError, match="output size"):
            parse_size(bad)


def test_training_patches_follow_where_the_network_convolves() -> None:
    # Pre-upsampling: 96 HR pixels, rounded to a multiple of the scale; post-upsampling: 48 LR.
    assert training_setup("rednet", 2, quick=False) == (16, 96)
    assert training_setup("rednet", 4, quick=False) == (16, 96)
    assert training_setup("srcnn", 3, quick=False) == (16, 96)
    assert training_setup("edsr", 2, quick=False) == (16, 96)
    assert training_setup("edsr", 3, quick=False) == (16, 144)
    assert training_setup("fsrcnn", 4, quick=True) == (2, 48)


def test_every_model_is_timed_at_its_card_configuration() -> None:
    assert bench.DEFAULT_MODELS == tuple(list_models())
    full, quick = BenchSettings(), BenchSettings.quick_run()
    for name in list_models():
        info = get_model_info(name)
        assert full.kwargs_for(name) == info.effective_kwargs(info.bench_kwargs)
        assert quick.kwargs_for(name) == info.effective_kwargs(info.test_kwargs)
    override = BenchSettings(model_kwargs={"edsr": {"num_blocks": 1}})
    assert override.kwargs_for("edsr")["num_blocks"] == 1
    with pytest.raises(ModelError, match="nope"):
        BenchSettings(models=("edsr",), model_kwargs={"edsr": {"nope": 1}}).check()


def test_bench_names_no_model() -> None:
    # The ModelInfo card is the whole contract: no per-model dicts or name lists in bench.py.
    names = set(list_models())
    tree = ast.parse(inspect.getsource(bench))
    literals = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert not names & literals


def test_inference_flops_count_folded_branches() -> None:
    model = create_model("span", 2, **get_model_info("span").test_kwargs)
    shape = (1, 1, 10, 12)
    assert count_conv_flops(model, shape) == count_conv_flops(frozen_copy(model), shape)
    # Training convolves with the folded kernel too (online folding): the same FLOPs as the plain net.
    folded = fuse_reparameterizable(copy.deepcopy(model))
    training_flops = count_conv_flops(model.train(), shape, training=True)
    assert training_flops == count_conv_flops(folded, shape, training=True)


def test_time_calls_warms_up_then_times_each_repeat() -> None:
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)


def test_bad_settings_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="'nope'"):
        BenchSettings(models=("nope",)).check()
    with pytest.raises(ModelError, match="scale 9"):
        BenchSettings(models=("srcnn",), scales=(9,)).check()
    with pytest.raises(ConfigError, match="repeats"):
        BenchSettings(repeats=0).check()


def test_matmul_rate_is_positive() -> None:
    assert bench.measure_matmul_gflops(size=64, repeats=2) > 0


INFERENCE_FIELDS = {
    "model",
    "scale",
    "backend",
    "batch",
    "lr_size",
    "output_size",
    "median_s",
    "min_s",
    "times_s",
    "megapixels_per_s",
    "gflop",
    "gflops",
    "matmul_ratio",
    "speedup_vs_eager",
}
TRAINING_FIELDS = {
    "model",
    "scale",
    "mode",
    "batch",
    "hr_size",
    "median_s",
    "min_s",
    "times_s",
    "hr_pixels_per_s",
    "gflop",
    "gflops",
    "matmul_ratio",
    "speedup_vs_eager",
}


@pytest.mark.slow  # seconds: left out by `make test-fast`
def test_quick_json_run_has_the_documented_fields(capsys) -> None:
    assert main(["bench", "--quick", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # progress went to stderr, stdout is pure JSON
    assert "bench:" in captured.err
    assert result["schema"] == bench.SCHEMA
    assert {"cpu", "cores", "torch", "onnxruntime", "torch_threads", "native_bf16", "load_average"} <= set(
        result["machine"]
    )
    assert set(result["matmul"]) == {"size", "gflops", "gflops_start", "gflops_end"}
    assert result["settings"]["quick"] is True
    models = set(list_models())
    trainable = {m for m in models if get_model_info(m).needs_weights}
    combos = {(record["model"], record["backend"]) for record in result["inference"]}
    from superres.inference.precision import cpu_runs_bf16

    # torch-bf16 only where the CPU has bf16 (refused, not emulated, elsewhere).
    backends = ("eager", "torch", "onnxruntime") + (("torch-bf16",) if cpu_runs_bf16() else ())
    assert combos == {(m, b) for m in models for b in backends}
    for record in result["inference"]:
        assert set(record) == INFERENCE_FIELDS
        assert record["output_size"] == [2 * s for s in record["lr_size"]]
        if record["model"] in trainable:
            assert record["gflops"] > 0 and 0 < record["matmul_ratio"]
        assert record["speedup_vs_eager"] > 0 and record["megapixels_per_s"] > 0
    assert {(record["model"], record["mode"]) for record in result["training"]} == {
        (m, mode) for m in trainable for mode in ("eager", "torch")
    }
    for record in result["training"]:
        assert set(record) == TRAINING_FIELDS and record["hr_pixels_per_s"] > 0
    assert {entry["model"] for entry in result["best"]} == models


def test_text_table_lists_every_measurement() -> None:
    settings = BenchSettings.quick_run(models=("bicubic", "srcnn-tutorial"), backends=("torch",))
    result = bench.run_bench(settings)
    table = format_table(result)
    assert "GFLOP/s" in table and "HR MP/s" in table and "of matmul" in table
    rows = [line for line in table.splitlines() if line.startswith(("bicubic", "srcnn-tutorial"))]
    # inference: 2 models x (eager, torch); training: the tutorial only; configurations and best:
    # one per model.
    assert len(rows) == 2 * 2 + 2 + 2 + 2
    bicubic = next(r for r in result["inference"] if r["model"] == "bicubic")
    assert bicubic["gflops"] is None and bicubic["matmul_ratio"] is None
    # Eager rows come first within each model; a machine that slowed down mid-run is flagged.
    assert rows[0].split()[3] == "eager" and rows[1].split()[3] == "torch"
    result["matmul"].update(gflops_start=100.0, gflops_end=40.0)
    assert "warning: the matmul rate moved from 100 to 40" in format_table(result)
    result["matmul"].update(gflops_start=100.0, gflops_end=90.0)
    assert "warning" not in format_table(result)


def test_cli_refuses_unknown_models_in_one_line(capsys) -> None:
    assert main(["bench", "--quick", "--models", "nope"]) == 2
    assert capsys.readouterr().err.strip().startswith("superres bench: error:")


def test_no_training_and_sizes_options(capsys) -> None:
    arguments = ["bench", "--quick", "--json", "--models", "srcnn-tutorial", "--no-training"]
    assert main([*arguments, "--sizes", "20x16", "--backends", "onnxruntime", "--repeats", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["training"] == []
    assert {r["backend"] for r in result["inference"]} == {"eager", "onnxruntime"}
    assert all(r["output_size"] == [16, 20] and len(r["times_s"]) == 2 for r in result["inference"])


def test_rates_use_the_larger_matmul_measurement() -> None:
    records = [
        {"model": "m", "scale": 2, "backend": "eager", "output_size": [4, 4], "median_s": 2.0, "gflop": 10.0},
        {"model": "m", "scale": 2, "backend": "torch", "output_size": [4, 4], "median_s": 1.0, "gflop": 10.0},
    ]
    bench._add_rates(records, "backend", reference_gflops=20.0)
    assert records[1]["gflops"] == pytest.approx(10.0)
    assert records[1]["matmul_ratio"] == pytest.approx(0.5)
    assert records[1]["speedup_vs_eager"] == pytest.approx(2.0)


def _pretend_run(spec: str, scale: int, width: int, height: int, precision: str, tile: str | None) -> dict:
    """A pipeline run without the upscale: what `run_once` reports, for the report's wording."""
    return {"precision": precision, "computed_in": "fp32", "tile": tile and 64, "tiles": 1,
            "seconds": 1.0, "peak_rss_bytes": None}


def test_bench_pipeline_says_why_the_one_pass_runs_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-one-pass is reported as turned off, not as too large; too large as too large."""
    from superres.images import limits
    from superres.lab.bench_pipeline import format_pipeline, measure_pipeline

    def measure(**options: object) -> dict:
        return measure_pipeline(40, 32, model="espcn", scale=2, precisions=("fp32",), runner=_pretend_run,
                                **options)

    off = measure(tiling=False)
    assert off["tiling_overhead"] is None and len(off["runs"]) == 1  # the tiled run only
    (line,) = [line for line in format_pipeline(off).splitlines() if line.startswith("tiling overhead")]
    assert "turned off" in line and "--no-one-pass" in line and "fit" not in line
    with monkeypatch.context() as patch:
        patch.setattr(limits, "memory_bytes", lambda: 1024)  # a machine where nothing fits
        full = measure()
    assert full["tiling_overhead"] is None and len(full["runs"]) == 1
    (line,) = [line for line in format_pipeline(full).splitlines() if line.startswith("tiling overhead")]
    assert "would not fit in memory" in line and "turned off" not in line
    fits = measure()
    assert fits["one_pass_skipped"] is None and set(fits["tiling_overhead"]) == {"fp32"}
