"""The quality/speed frontier, MAC counts and learning curves: `superres frontier` and `superres curves`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from superres.cli import main
from superres.lab.curves import plot_learning_curves, run_lineage
from superres.lab.frontier import (
    FrontierPoint,
    Timing,
    best_interleaved_rates,
    frontier_markdown,
    measure_frontier,
    opencv_fsrcnn_rate,
    plot_frontier,
)
from superres.models import create_model, get_model_info, list_models
from superres.models.complexity import conv_macs_per_output_pixel
from superres.training.runlog import write_history

TINY_TIMING = Timing(lr_size=(12, 16), min_calls=1, min_seconds=0.0)


def test_macs_of_a_plain_conv_stack_by_hand() -> None:
    # SRCNN 9-5-5 runs at HR: 1*64*81 + 64*32*25 + 32*1*25 MACs per output pixel, at any scale.
    expected = 64 * 81 + 64 * 32 * 25 + 32 * 25
    for scale in (2, 3, 4):
        assert conv_macs_per_output_pixel(create_model("srcnn", scale)) == pytest.approx(expected)


def test_macs_of_a_transposed_convolution_by_hand() -> None:
    # FSRCNN x2: LR-space layers per LR pixel, then the 9x9 deconv's 56*81 per LR pixel, all / 4.
    lr_work = 25 * 56 + 56 * 12 + 4 * 12 * 12 * 9 + 12 * 56 + 56 * 81
    assert conv_macs_per_output_pixel(create_model("fsrcnn", 2)) == pytest.approx(lr_work / 4)


@pytest.mark.parametrize("name", list_models())
def test_macs_count_the_folded_network_and_leave_the_model_alone(name: str) -> None:
    info = get_model_info(name)
    model = create_model(name, 2, **info.test_kwargs)
    before = copy.deepcopy(model.state_dict())
    macs = conv_macs_per_output_pixel(model)
    assert macs >= 0 and (macs > 0) == info.needs_weights
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_post_upsampling_costs_less_per_output_pixel_at_a_larger_scale() -> None:
    span = {key: value for key, value in get_model_info("span").test_kwargs.items()}
    x2, x4 = (conv_macs_per_output_pixel(create_model("span", s, **span)) for s in (2, 4))
    assert x4 < x2 / 3  # the body's cost is spread over 4x the output pixels


def test_frontier_measures_shipped_models_and_bicubic_in_one_run() -> None:
    points = measure_frontier([2], timing=TINY_TIMING)
    names = [point.name for point in points]
    assert names[0] == "bicubic" and points[0].relative_to_bicubic == 1.0
    assert all(point.output_mp_per_s > 0 and point.scale == 2 for point in points)
    from superres.zoo.pretrained import list_pretrained

    at_x2 = [entry for entry in list_pretrained() if entry.scale == 2]
    assert {entry.name for entry in at_x2 if not entry.by_name_only} <= set(names)
    assert not {entry.name for entry in at_x2 if entry.by_name_only} & set(names)  # not on a PSNR axis


def test_frontier_scores_bicubic_on_set5(shared_data: Path) -> None:
    points = measure_frontier([2], shared_data / "benchmark" / "Set5" / "HR", timing=TINY_TIMING)
    assert points[0].set5_psnr == pytest.approx(33.66, abs=0.01)


def test_opencv_reference_runs_the_fsrcnn_graph() -> None:
    pytest.importorskip("cv2", reason="OpenCV (the 'compare' extra) is not installed")
    assert opencv_fsrcnn_rate(2, TINY_TIMING) > 0


def test_models_are_timed_in_interleaved_rounds_and_keep_their_best() -> None:
    calls: list[str] = []
    lr = torch.zeros(1, 1, 4, 4)

    def runner(label: str) -> tuple:
        return (lambda _: calls.append(label)), lr

    rates = best_interleaved_rates(
        {"a": runner("a"), "b": runner("b")}, 2, Timing(min_calls=1, min_seconds=0.0, rounds=2)
    )
    # Each timing is a warm-up call and one timed call; the rounds alternate the two models.
    assert calls == ["a", "a", "b", "b", "a", "a", "b", "b"]
    assert set(rates) == {"a", "b"} and all(rate > 0 for rate in rates.values())


def _points() -> list[FrontierPoint]:
    return [
        FrontierPoint("bicubic", 2, "bicubic", 33.66, 30.23, 20.0, 1.0, 0.0),
        FrontierPoint("fast", 2, "espcn", 36.5, 32.2, 10.0, 0.5, 5e3),
        FrontierPoint("opencv-dnn FSRCNN", 2, "fsrcnn", None, None, 5.0, 0.25, 3e3),
        FrontierPoint("best", 4, "span", 31.0, 27.8, 2.0, 0.1, 2e4),
    ]


def test_frontier_table_is_markdown_fastest_first() -> None:
    table = frontier_markdown(_points()).splitlines()
    assert table[0].startswith("| scale | model | Set5 PSNR")
    assert [line.split("|")[2].strip() for line in table[2:]] == [
        "bicubic",
        "fast",
        "opencv-dnn FSRCNN",
        "best",
    ]
    assert "| - |" in table[4]  # a speed-only reference has no PSNR


def test_frontier_plot_is_a_png(tmp_path: Path) -> None:
    plot_frontier(_points(), tmp_path / "frontier.png")
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # seconds: left out by `make test-fast`
def test_frontier_command_writes_plot_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "frontier",
            "--quick",
            "--scales",
            "4",
            "-o",
            str(tmp_path / "f.png"),
            "--table",
            str(tmp_path / "f.md"),
            "--set5",
            str(tmp_path / "no-set5"),
        ]
    )
    assert code == 0
    assert (tmp_path / "f.png").is_file() and (tmp_path / "f.md").read_text().startswith("| scale |")
    assert "| x4 | bicubic |" in capsys.readouterr().out


def _fake_run(
    folder: Path, model: str, psnrs: list[float], *, scale: int = 2, init_weights: str | None = None
) -> Path:
    """A run folder with `psnrs` validated every 100 steps, half an hour apart."""
    folder.mkdir(parents=True)
    config = {"model": model, "scale": scale, "model_kwargs": {"num_features": 48}}
    if init_weights is not None:
        config["init_weights"] = init_weights
    (folder / "config.json").write_text(json.dumps(config))
    rows = [
        {
            "step": 100 * (i + 1),
            "epoch": 0.1,
            "loss": 0.01,
            "learning_rate": 1e-3,
            "val_psnr": psnr,
            "val_ssim": 0.9,
            "elapsed_s": 1800.0 * (i + 1),
            "hr_pixels_per_s": 1e5,
        }
        for i, psnr in enumerate(psnrs)
    ]
    write_history(folder, rows)
    return folder


def test_learning_curves_plot_runs_with_scores(tmp_path: Path) -> None:
    runs = [_fake_run(tmp_path / "a", "span", [35.0, 36.0]), _fake_run(tmp_path / "b", "espcn", [])]
    assert plot_learning_curves(runs, tmp_path / "curves.png") == 1
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_learning_curves_continue_the_runs_behind_them(tmp_path: Path) -> None:
    # x2 (1.5 h) -> x3 from its step-200 checkpoint (1 h in) -> x3 continued from its best (after 1 h).
    base = _fake_run(tmp_path / "runs" / "base", "span", [30.0, 31.0, 30.5])
    warm = _fake_run(tmp_path / "runs" / "warm", "span", [27.0, 28.0], scale=3,
                     init_weights="checkpoints/base/step200.safetensors")  # found beside it, by name
    more = _fake_run(tmp_path / "runs" / "more", "span", [28.5], scale=3,
                     init_weights=str(warm / "best.safetensors"))
    curves = {curve.run_dir.name: curve for curve in run_lineage([more])}
    assert list(curves) == ["base", "warm", "more"]  # ancestors first, drawn though not given
    assert curves["base"].hours == [0.5, 1.0, 1.5] and curves["base"].start is None
    assert curves["warm"].hours == [1.5, 2.0]
    assert curves["warm"].start is None  # another scale: nothing to join in its panel
    assert curves["more"].hours == [2.5] and curves["more"].start == (2.0, 28.0)  # 1 h + 1 h behind
    assert curves["more"].network == "span (48 features)" and curves["more"].scale == 3
    assert plot_learning_curves([more, base], tmp_path / "curves.png") == 3


def test_a_real_world_run_gets_its_own_panel_and_keeps_the_hours_behind_it(tmp_path: Path) -> None:
    clean = _fake_run(tmp_path / "runs" / "clean", "span", [31.0, 31.5], scale=4)
    real = _fake_run(tmp_path / "runs" / "real", "span", [24.0, 24.5], scale=4,
                     init_weights=str(clean / "best.safetensors"))
    config = json.loads((real / "config.json").read_text())
    (real / "config.json").write_text(json.dumps({**config, "degradation": "real", "channels": "RGB"}))
    curves = {curve.run_dir.name: curve for curve in run_lineage([real])}
    assert curves["real"].validation == "real-world LR" and curves["clean"].validation == ""
    assert curves["real"].hours == [1.5, 2.0]  # the clean run's hour counted
    assert curves["real"].start is None  # another measure: not joined to the clean run's 31.5 dB
    assert curves["real"].network == "span (48 features), RGB"
    assert plot_learning_curves([real], tmp_path / "curves.png") == 2
    # Validated on another preset's LR: another scale of dB, so another panel.
    (real / "config.json").write_text(json.dumps({**json.loads((real / "config.json").read_text()),
                                                  "val_preset": "jpeg"}))
    assert run_lineage([real])[-1].validation == "`jpeg` LR"


def test_learning_curves_survive_a_loop_and_a_missing_parent(tmp_path: Path) -> None:
    loop_back = str(tmp_path / "second" / "best.safetensors")
    first = _fake_run(tmp_path / "first", "span", [30.0], init_weights=loop_back)
    second = _fake_run(tmp_path / "second", "span", [31.0], init_weights=str(first / "best.safetensors"))
    orphan = _fake_run(tmp_path / "orphan", "span", [29.0], init_weights="gone/best.safetensors")
    curves = run_lineage([second, orphan])
    assert sorted(curve.run_dir.name for curve in curves) == ["first", "orphan", "second"]
    assert [curve.hours for curve in curves if curve.run_dir.name == "orphan"] == [[0.5]]


def test_learning_curves_follow_a_shipped_name_to_the_run_its_card_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shipped span96 x4 card's recipe names --run-dir checkpoints/span96-x4-ens; away from
    # the repository's own checkpoints/, the folder of that name beside the run is the one.
    monkeypatch.chdir(tmp_path)
    shipped = _fake_run(tmp_path / "runs" / "span96-x4-ens", "span", [31.4, 31.5], scale=4)
    wider = _fake_run(tmp_path / "runs" / "wider", "span", [31.6], scale=4, init_weights="span96")
    unknown = _fake_run(tmp_path / "runs" / "unknown", "span", [30.0], scale=4, init_weights="red20")
    curves = {curve.run_dir.name: curve for curve in run_lineage([wider, unknown])}
    assert curves["span96-x4-ens"].run_dir == shipped
    assert curves["wider"].hours == [1.5] and curves["wider"].start == (1.0, 31.5)
    assert curves["unknown"].hours == [0.5] and curves["unknown"].start is None  # no recorded run


def test_curves_command_refuses_a_folder_without_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _fake_run(tmp_path / "a", "span", [35.0])
    assert main(["curves", str(run), "-o", str(tmp_path / "c.png")]) == 0
    assert main(["curves", str(tmp_path), "-o", str(tmp_path / "c.png")]) != 0
    assert "no history.csv" in capsys.readouterr().err
    (run / "history.csv").write_text("step,elapsed_s,val_psnr\n100,1.5,abc\n")
    assert main(["curves", str(run), "-o", str(tmp_path / "c.png")]) != 0
    error = capsys.readouterr().err
    assert "line 2: val_psnr is 'abc', not a number" in error and "Traceback" not in error


def test_relative_speed_times_model_and_bicubic_alike() -> None:
    from superres.lab.frontier import relative_speed

    speed = relative_speed(create_model("espcn", 2, **get_model_info("espcn").test_kwargs), 2, TINY_TIMING)
    assert speed["output_mp_per_s"] > 0 and speed["bicubic_output_mp_per_s"] > 0
    assert speed["relative_to_bicubic"] == pytest.approx(
        speed["output_mp_per_s"] / speed["bicubic_output_mp_per_s"], rel=1e-2
    )
