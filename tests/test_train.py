"""Tests of the trainer, its configuration and `superres train`: tiny models, tiny images, CPU only."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from superres.cli import main
from superres.errors import CheckpointError, ConfigError, ModelError, TrainingDiverged
from superres.images import write_image
from superres.models import create_model
from superres.ops.ensemble import ensemble_average
from superres.ops.resize import imresize
from superres.training.config import (
    TrainConfig,
    build_config,
    config_from_dict,
    list_presets,
    load_run_config,
    resolve_config,
)
from superres.training.data import DeviceBatches, open_patch_source
from superres.training.distill import teacher_images
from superres.training.ema import EMA_PREFIX
from superres.training.loop import learning_rate_at, train
from superres.training.runlog import HISTORY_COLUMNS
from superres.training.state import FRESH_LAYER_SCALE
from superres.zoo.checkpoint import load_checkpoint
from superres.zoo.names import resolve_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY_SRCNN = {"kernel_sizes": [3, 1, 3], "num_features": [8, 4]}


def synthetic_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random RGB uint8 image (sums of sinusoids)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [
        sum(np.sin(rng.uniform(0.05, 0.3) * y + rng.uniform(0.05, 0.3) * x + rng.uniform(0, 6))
            for _ in range(3))
        for _ in range(3)
    ]
    image = np.stack(planes, axis=2)
    return np.round((image - image.min()) / (image.max() - image.min()) * 255.0).astype(np.uint8)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    (root / "hr").mkdir()
    (root / "val").mkdir()
    for index in range(3):
        write_image(root / "hr" / f"train{index}.png", synthetic_image(36 + 4 * index, 40, seed=index))
    for index in range(2):
        write_image(root / "val" / f"val{index}.png", synthetic_image(24, 28, seed=10 + index))
    return root / "hr", root / "val"


def tiny_config(data_dirs: tuple[Path, Path], **changes: object) -> TrainConfig:
    hr_dir, val_dir = data_dirs
    values = {
        "model": "srcnn",
        "model_kwargs": TINY_SRCNN,
        "scale": 2,
        "train_data": [str(hr_dir)],
        "val_data": str(val_dir),
        "patch_size": 8,
        "batch_size": 4,
        "iterations": 8,
        "learning_rate": 3e-3,
        "val_every": 4,
        "checkpoint_every": 3,
        "log_every": 2,
        "num_threads": 1,
        "seed": 3,
        "device": "cpu",
    }
    values.update(changes)
    return config_from_dict(values)


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    state_dict, _, _ = load_checkpoint(path)
    return state_dict


def read_history(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "history.csv", newline="") as stream:
        return list(csv.DictReader(stream))


# --- training -------------------------------------------------------------------------------


def test_a_short_run_learns_and_writes_its_run_folder(data_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    config = tiny_config(data_dirs, iterations=40, log_every=10, val_every=20, checkpoint_every=20)
    summary = train(config, tmp_path / "run")
    run_dir = tmp_path / "run"
    assert summary.stop_reason == "completed" and summary.steps == 40
    assert summary.best_psnr is not None and summary.hr_pixels_per_s > 0
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best.safetensors", "config.json", "history.csv", "last-previous.safetensors", "last.safetensors",
        "loss.png", "psnr.png",
    ]
    rows = read_history(run_dir)
    assert list(rows[0]) == list(HISTORY_COLUMNS)
    assert [int(row["step"]) for row in rows] == [10, 20, 30, 40]
    assert float(rows[-1]["loss"]) < 0.5 * float(rows[0]["loss"])
    assert rows[1]["val_psnr"] and rows[3]["val_psnr"] and not rows[0]["val_psnr"]
    for name in ("psnr.png", "loss.png"):
        assert (run_dir / name).read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(run_dir / name) as image:
            image.verify()
    saved = load_run_config(run_dir)
    assert saved.channels == "Y" and saved.degradation == "bicubic"  # filled in from ModelInfo
    _, metadata, extra = load_checkpoint(run_dir / "last.safetensors")
    assert metadata["step"] == 40 and metadata["training"]["optimizer"]["param_groups"]
    assert any(name.startswith("optim.") for name in extra) and "rng.torch" in extra
    _, best_metadata, best_extra = load_checkpoint(run_dir / "best.safetensors")
    assert best_extra == {} and best_metadata["metrics"]["best_psnr"] == pytest.approx(summary.best_psnr)


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_a_killed_run_resumed_ends_with_identical_weights(
    data_dirs: tuple[Path, Path], tmp_path: Path, ema_decay: float | None
) -> None:
    config = tiny_config(data_dirs, model="rednet", model_kwargs={"num_layers": 2, "num_features": 8},
                         schedule="cosine", warmup_steps=2, grad_clip=0.5, val_every=5, ema_decay=ema_decay)
    whole = train(config, tmp_path / "whole")
    # Killed after step 5: its last checkpoint is step 3, and steps 4-5 are lost (as after a crash).
    killed = train(config, tmp_path / "resumed", stop_after=5)
    assert killed.stop_reason == "stop_after"
    assert [row["step"] for row in read_history(tmp_path / "resumed")] == ["2", "3", "4", "5"]
    resumed = train(load_run_config(tmp_path / "resumed"), tmp_path / "resumed", resume=True)
    assert resumed.steps == whole.steps == 8
    # The weights, and with an EMA the average (in last's extra tensors and as best), bit for bit.
    for checkpoint in ("last.safetensors", "best.safetensors"):
        expected_weights, _, expected_extra = load_checkpoint(tmp_path / "whole" / checkpoint)
        weights, _, extra = load_checkpoint(tmp_path / "resumed" / checkpoint)
        averages = {name: tensor for name, tensor in extra.items() if name.startswith(EMA_PREFIX)}
        assert len(averages) == (len(weights) if ema_decay and checkpoint == "last.safetensors" else 0)
        for name, tensor in {**weights, **averages}.items():
            assert torch.equal(tensor, {**expected_weights, **expected_extra}[name]), (checkpoint, name)
    def deterministic_columns(run: str) -> list[tuple[str, ...]]:
        rows = read_history(tmp_path / run)
        return [(row["step"], row["loss"], row["learning_rate"], row["val_psnr"]) for row in rows]

    assert deterministic_columns("resumed") == deterministic_columns("whole")


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_a_damaged_last_checkpoint_resumes_from_the_one_before(
    data_dirs: tuple[Path, Path], tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny_config(data_dirs, model="rednet", model_kwargs={"num_layers": 2, "num_features": 8})
    whole = train(config, tmp_path / "whole")
    run_dir = tmp_path / "run"
    train(config, run_dir, stop_after=6)  # checkpoints at steps 3 and 6: last is 6, previous 3
    last = run_dir / "last.safetensors"
    data = bytearray(last.read_bytes())
    if damage == "flipped":
        for offset in range(len(data) - 1000, len(data)):  # 1,000 bytes of tensor data
            data[offset] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(last)
    resumed = train(load_run_config(run_dir), run_dir, resume=True)
    assert "resuming from the checkpoint before it, last-previous.safetensors" in caplog.text
    assert resumed.steps == whole.steps == 8
    # Steps 4-6 were redone from step 3's state: the same weights as the uninterrupted run.
    for name, tensor in weights_of(tmp_path / "whole" / "last.safetensors").items():
        assert torch.equal(tensor, weights_of(last)[name]), name


def test_nan_loss_keeps_the_last_good_checkpoint(
    data_dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_sample = DeviceBatches.sample
    calls = {"count": 0}

    def poisoned_sample(self: DeviceBatches, *args: object) -> tuple[torch.Tensor, torch.Tensor]:
        calls["count"] += 1
        lr, hr = real_sample(self, *args)
        return (lr * float("nan"), hr) if calls["count"] >= 5 else (lr, hr)

    monkeypatch.setattr(DeviceBatches, "sample", poisoned_sample)
    run_dir = tmp_path / "run"
    expected = r"loss became nan at step 5; last good checkpoint: .*last.safetensors"
    with pytest.raises(TrainingDiverged, match=expected):
        train(tiny_config(data_dirs, iterations=10, checkpoint_every=3, log_every=3, val_every=100), run_dir)
    state_dict, metadata, _ = load_checkpoint(run_dir / "last.safetensors")
    assert metadata["step"] == 3
    assert all(torch.isfinite(tensor).all() for tensor in state_dict.values())


def test_time_limit_stops_cleanly_with_a_checkpoint(data_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    summary = train(tiny_config(data_dirs, iterations=1000, max_minutes=1e-6), tmp_path / "run")
    assert summary.stop_reason == "time_limit" and summary.steps == 1
    _, metadata, _ = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert metadata["step"] == 1 and metadata["metrics"]["val_psnr"] is not None


def test_epochs_and_a_prepared_patch_file(data_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    from superres.training.data import prepare_patches

    pairs = tmp_path / "pairs.npz"
    prepare_patches(
        [data_dirs[0]], pairs, scale=2, patch_size=8, count=10, degradation="bicubic", channels="Y", seed=1
    )
    config = tiny_config(data_dirs, train_data=[str(pairs)], iterations=None, epochs=2, val_data=None)
    summary = train(config, tmp_path / "run")
    assert summary.steps == 6  # ceil(10 pairs / batch 4) = 3 steps per epoch
    assert not (tmp_path / "run" / "best.safetensors").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def act_as_rank(rank: int, world_size: int, port: int) -> None:
    """The environment torchrun gives a worker process."""
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)


def _ddp_worker(rank: int, world_size: int, port: int, config_values: dict, root: str) -> None:
    from safetensors.torch import save_file

    act_as_rank(rank, world_size, port)
    config = config_from_dict(config_values)
    trainer = importlib.import_module("superres.training.loop")

    model_holder = {}
    original = trainer.create_model

    def keep_model(*args: object, **kwargs: object) -> torch.nn.Module:
        model_holder["model"] = original(*args, **kwargs)
        return model_holder["model"]

    trainer.create_model = keep_model  # the name the trainer calls
    train(config, Path(root) / "run")
    state = {name: t.detach().clone().contiguous() for name, t in model_holder["model"].state_dict().items()}
    save_file(state, str(Path(root) / f"rank{rank}.safetensors"))


def spawn_two_ranks(worker: object, config: TrainConfig, tmp_path: Path) -> None:
    """Run `worker(rank, 2, port, config values, tmp_path)` in two processes (run folder tmp_path/run)."""
    import torch.multiprocessing as mp

    # A free port can be taken by another process between choosing it and binding it; a real DDP
    # bug fails every attempt, a lost port race only one, so a second attempt gets a fresh port.
    for attempt in range(2):
        try:
            worker_args = (2, _free_port(), config.to_dict(), str(tmp_path))
            mp.spawn(worker, args=worker_args, nprocs=2, join=True)
            return
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as error:
            if attempt == 1:
                raise
            warnings.warn(f"DDP attempt failed, retrying on a fresh port: {error}", stacklevel=1)
            shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.mark.slow  # seconds: left out by `make test-fast`
def test_two_processes_with_ddp_end_with_identical_weights(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    config = tiny_config(data_dirs, iterations=6, val_every=6, checkpoint_every=6, log_every=3)
    spawn_two_ranks(_ddp_worker, config, tmp_path)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    torch.manual_seed(config.seed)
    initial = create_model("srcnn", 2, **TINY_SRCNN).state_dict()
    assert all(torch.equal(rank0[name], rank1[name]) for name in rank0)
    assert any(not torch.equal(rank0[name], initial[name]) for name in rank0)
    assert weights_of(tmp_path / "run" / "last.safetensors").keys() == rank0.keys()
    assert [row["step"] for row in read_history(tmp_path / "run")] == ["3", "6"]  # rank 0 alone writes


# --- configuration --------------------------------------------------------------------------


def test_presets_are_valid_configurations() -> None:
    presets = list_presets()
    assert {"srcnn-tutorial", "rednet-tutorial", "srcnn-paper", "rednet-paper"} <= set(presets)
    for name in presets:
        config = resolve_config(build_config(preset=name))
        assert config.channels in ("Y", "RGB") and config.iterations
    tutorial = resolve_config(build_config(preset="srcnn-tutorial", overrides={"scale": 3, "epochs": 2}))
    assert (tutorial.channels, tutorial.degradation, tutorial.scale) == ("RGB", "bilinear", 3)
    assert tutorial.iterations is None and tutorial.epochs == 2
    assert build_config(preset="rednet-paper").model_kwargs == {"num_layers": 15, "num_features": 64}


def test_unknown_keys_and_bad_values_are_config_errors(tmp_path: Path) -> None:
    base = {"model": "srcnn", "scale": 2, "train_data": ["x"], "iterations": 5}
    with pytest.raises(ConfigError, match="unknown key 'lerning_rate'"):
        config_from_dict({**base, "lerning_rate": 1.0})
    assert config_from_dict({**base, "_comment": "ignored"}).model == "srcnn"
    with pytest.raises(ConfigError, match="loss must be one of"):
        resolve_config(config_from_dict({**base, "loss": "ssim"}))
    with pytest.raises(ConfigError, match="exactly one of 'iterations' and 'epochs'"):
        resolve_config(config_from_dict({**base, "epochs": 3}))
    with pytest.raises(ModelError, match="does not support scale 5"):
        resolve_config(config_from_dict({**base, "scale": 5}))
    with pytest.raises(ModelError, match="unknown model"):
        resolve_config(config_from_dict({**base, "model": "vdsr"}))
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        build_config(preset="nope")
    with pytest.raises(ConfigError, match="'train_data' must be a path or a list of paths, got 5"):
        config_from_dict({**base, "train_data": 5})
    (tmp_path / "utf16.json").write_text(json.dumps(base), encoding="utf-16")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        build_config(config_file=tmp_path / "utf16.json")


def test_a_network_too_large_for_this_machine_is_refused_before_anything_is_allocated(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    config = tiny_config(data_dirs, model="span", model_kwargs={"num_features": 100_000})
    with pytest.raises(ConfigError, match=r"training state needs about [0-9.]+ GiB; this machine has"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written


def test_learning_rate_schedules() -> None:
    base = {"model": "srcnn", "scale": 2, "train_data": ["x"], "iterations": 100, "learning_rate": 1.0}
    constant = config_from_dict(base)
    assert learning_rate_at(constant, 1, 100) == learning_rate_at(constant, 100, 100) == 1.0
    step = config_from_dict({**base, "schedule": "step", "step_size": 10, "gamma": 0.5})
    assert [learning_rate_at(step, s, 100) for s in (1, 10, 11, 21)] == [1.0, 1.0, 0.5, 0.25]
    cosine = config_from_dict({**base, "schedule": "cosine", "warmup_steps": 10, "min_learning_rate": 0.1})
    assert learning_rate_at(cosine, 5, 100) == pytest.approx(0.5)
    assert learning_rate_at(cosine, 11, 100) == pytest.approx(1.0)
    assert learning_rate_at(cosine, 100, 100) == pytest.approx(0.1, abs=1e-3)


# --- command line ---------------------------------------------------------------------------


def _train_args(data_dirs: tuple[Path, Path], run_dir: Path, *extra: str) -> list[str]:
    hr_dir, val_dir = data_dirs
    return [
        "train", "--model", "srcnn", "--model-kwargs", json.dumps(TINY_SRCNN), "--scale", "2",
        "--train-data", str(hr_dir), "--val-data", str(val_dir), "--run-dir", str(run_dir),
        "--iterations", "4", "--batch-size", "4", "--patch-size", "8", "--val-every", "4",
        "--checkpoint-every", "2", "--log-every", "2", "--num-threads", "1", "--device", "cpu", *extra,
    ]


def test_command_line_train_then_resume_for_more_steps(
    data_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert main(_train_args(data_dirs, run_dir)) == 0
    assert "completed: step 4/4" in capsys.readouterr().out
    assert main(["train", "--resume", str(run_dir), "--iterations", "6"]) == 0
    assert "completed: step 6/6" in capsys.readouterr().out
    assert load_run_config(run_dir).iterations == 6
    assert main(["train", "--list-presets"]) == 0
    assert "rednet-paper" in capsys.readouterr().out


def _error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_command_line_errors_are_one_line(
    data_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    assert "unknown model 'vdsr'" in _error_of([*_train_args(data_dirs, run_dir), "--model", "vdsr"], capsys)
    assert "does not support scale 5" in _error_of([*_train_args(data_dirs, run_dir), "--scale", "5"], capsys)
    missing = str(tmp_path / "missing")
    args = _train_args(data_dirs, run_dir)
    assert "training data not found" in _error_of([*args, "--train-data", missing], capsys)
    (tmp_path / "empty").mkdir()
    empty = str(tmp_path / "empty")
    assert "no images found" in _error_of([*_train_args(data_dirs, run_dir), "--train-data", empty], capsys)
    assert "smaller than the HR patch" in _error_of([*args, "--patch-size", "40"], capsys)
    config_file = tmp_path / "bad.json"
    settings = {"model": "srcnn", "scale": 2, "train_data": ["x"], "iterations": 1, "batchsize": 4}
    config_file.write_text(json.dumps(settings))
    assert "unknown key 'batchsize'" in _error_of(["train", "--config", str(config_file)], capsys)
    assert not run_dir.exists()  # nothing was written for a run that could not start

    assert main(_train_args(data_dirs, run_dir)) == 0
    capsys.readouterr()
    before = (run_dir / "last.safetensors").read_bytes()
    assert "already holds a training run" in _error_of(_train_args(data_dirs, run_dir), capsys)
    err = _error_of(["train", "--resume", str(run_dir), "--model", "rednet", "--model-kwargs", "{}"], capsys)
    assert "holds a 'srcnn' x2 model" in err
    assert (run_dir / "last.safetensors").read_bytes() == before
    assert "not a training run folder" in _error_of(["train", "--resume", str(tmp_path / "nothing")], capsys)


def test_resume_rejects_a_checkpoint_of_another_model(data_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    train(tiny_config(data_dirs, iterations=2, checkpoint_every=2), tmp_path / "a")
    other = tiny_config(
        data_dirs,
        iterations=2,
        checkpoint_every=2,
        model="rednet",
        model_kwargs={"num_layers": 2, "num_features": 8},
    )
    with pytest.raises(CheckpointError, match="holds a 'srcnn' x2 model"):
        train(other, tmp_path / "a", resume=True)


def test_init_weights_starts_a_new_run_from_trained_weights(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    first = train(tiny_config(data_dirs, iterations=8), tmp_path / "first")
    source = str(tmp_path / "first" / "best.safetensors")
    # A learning rate of ~0 keeps the weights: the new run validates exactly where the source stood.
    tuned = train(
        tiny_config(data_dirs, iterations=4, learning_rate=1e-30, init_weights=source), tmp_path / "tuned"
    )
    assert tuned.best_psnr == pytest.approx(first.best_psnr, abs=1e-9)
    assert int(read_history(tmp_path / "tuned")[0]["step"]) == 2  # step count and schedule start fresh
    for name, tensor in weights_of(tmp_path / "first" / "best.safetensors").items():
        torch.testing.assert_close(weights_of(tmp_path / "tuned" / "last.safetensors")[name], tensor)

    with pytest.raises(ModelError):  # another depth: a clear error, not a partial load
        train(
            tiny_config(
                data_dirs,
                model_kwargs={"kernel_sizes": [3, 3, 3], "num_features": [8, 4]},
                init_weights=source,
            ),
            tmp_path / "deeper",
        )
    assert not (tmp_path / "deeper").exists()  # nothing written for a run that could not start


TINY_SPAN = {"num_features": 4, "num_blocks": 1, "reparam_gain": 0, "bicubic_skip": True, "channels": "Y"}


def test_init_weights_from_another_scale_takes_the_body_and_starts_the_upsampler_quiet(
    data_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    span = {"model": "span", "model_kwargs": TINY_SPAN}
    train(tiny_config(data_dirs, **span, iterations=4), tmp_path / "x2")
    source_path = str(tmp_path / "x2" / "best.safetensors")
    source = weights_of(tmp_path / "x2" / "best.safetensors")
    # A learning rate of ~0 keeps the starting weights; x4 LR patches of 8 px fit the 36 px images.
    config = tiny_config(
        data_dirs, **span, scale=4, iterations=2, learning_rate=1e-30, val_every=2, init_weights=source_path
    )
    train(config, tmp_path / "x4")
    started = weights_of(tmp_path / "x4" / "last.safetensors")
    torch.manual_seed(config.seed)  # what the x4 run drew for its fresh layers
    default = create_model("span", 4, **TINY_SPAN).state_dict()
    fresh = {name for name in started if started[name].shape != source[name].shape}
    assert fresh == {"upsample.0.weight", "upsample.0.bias"}  # the x4 sub-pixel convolution
    for name in set(started) - fresh:
        torch.testing.assert_close(started[name], source[name], rtol=0, atol=1e-20)
    # Fresh layers start quiet: their default initialisation scaled down, biases zero.
    torch.testing.assert_close(started["upsample.0.weight"], FRESH_LAYER_SCALE * default["upsample.0.weight"])
    torch.testing.assert_close(
        started["upsample.0.bias"], torch.zeros_like(default["upsample.0.bias"]), rtol=0, atol=1e-20
    )

    # Another architecture cannot lend its tensors: a one-line error, and nothing is written.
    srcnn_x2 = tmp_path / "srcnn"
    train(tiny_config(data_dirs, iterations=2, val_every=2), srcnn_x2)
    weights = str(srcnn_x2 / "best.safetensors")
    args = _train_args(data_dirs, tmp_path / "other", "--model", "span", "--model-kwargs",
                       json.dumps(TINY_SPAN), "--scale", "4", "--init-weights", weights)
    assert "holds a 'srcnn' model; a 'span' run cannot start from it" in _error_of(args, capsys)
    assert not (tmp_path / "other").exists()


TINY_FSRCNN = {"num_features": 6, "shrink_features": 3, "mapping_layers": 1, "bicubic_skip": True}


@pytest.mark.parametrize(
    ("model", "source_kwargs", "grown_kwargs", "grown_tensor", "shape"),
    [  # a wider span (`superres.models.widen`); an FSRCNN that trains with branches (`reparam`)
        ("span", TINY_SPAN, {**TINY_SPAN, "num_features": 7}, "merge.weight", (7, 28, 1, 1)),
        ("fsrcnn", TINY_FSRCNN, {**TINY_FSRCNN, "reparam_gain": 2}, "features.0.body.weight", (12, 2, 5, 5)),
    ],
)
def test_init_weights_from_a_smaller_form_grows_it_and_starts_at_its_score(
    data_dirs: tuple[Path, Path],
    tmp_path: Path,
    model: str,
    source_kwargs: dict,
    grown_kwargs: dict,
    grown_tensor: str,
    shape: tuple[int, ...],
) -> None:
    source = tiny_config(data_dirs, model=model, model_kwargs=source_kwargs, iterations=4)
    first = train(source, tmp_path / "a")
    # A learning rate of ~0 keeps the grown start: it validates where the source network stood.
    grown = train(
        tiny_config(data_dirs, model=model, model_kwargs=grown_kwargs, iterations=2, val_every=2,
                    learning_rate=1e-30, init_weights=str(tmp_path / "a" / "best.safetensors")),
        tmp_path / "grown",
    )
    assert grown.best_psnr == pytest.approx(first.best_psnr, abs=1e-4)
    assert weights_of(tmp_path / "grown" / "last.safetensors")[grown_tensor].shape == shape


def test_init_weights_from_another_scale_refuses_other_kwargs(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    span = {"model": "span", "model_kwargs": TINY_SPAN}
    train(tiny_config(data_dirs, **span, iterations=2, val_every=2), tmp_path / "x2")
    deeper = tiny_config(
        data_dirs,
        model="span",
        model_kwargs={**TINY_SPAN, "num_blocks": 2},
        scale=4,
        iterations=2,
        init_weights=str(tmp_path / "x2" / "best.safetensors"),
    )
    with pytest.raises((ModelError, CheckpointError)):
        train(deeper, tmp_path / "x4")
    assert not (tmp_path / "x4").exists()


# --- weight average (EMA) -------------------------------------------------------------------


def _averages(extra: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name[len(EMA_PREFIX) :]: t for name, t in extra.items() if name.startswith(EMA_PREFIX)}


def test_ema_is_what_validation_scores_and_best_holds(data_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    from superres.evaluation.protocol import Protocol, evaluate_model

    # Validated once, at the last step, which is therefore the best one.
    config = tiny_config(data_dirs, ema_decay=0.9, iterations=8, val_every=100, checkpoint_every=100)
    summary = train(config, tmp_path / "run")
    weights, _, extra = load_checkpoint(tmp_path / "run" / "last.safetensors")
    averages = _averages(extra)
    assert set(averages) == set(weights)  # last.safetensors carries the whole average
    assert any(not torch.equal(averages[name], weights[name]) for name in weights)
    best = weights_of(tmp_path / "run" / "best.safetensors")
    assert all(torch.equal(best[name], averages[name]) for name in weights)

    def psnr_of(state_dict: dict[str, torch.Tensor]) -> float:
        model = create_model("srcnn", 2, **TINY_SRCNN)
        model.load_state_dict(state_dict)
        return evaluate_model(model.eval(), data_dirs[1], 2, channels="Y", protocol=Protocol()).psnr

    assert summary.best_psnr == pytest.approx(psnr_of(averages), abs=1e-4)
    assert abs(psnr_of(weights) - summary.best_psnr) > 1e-3  # the raw weights score otherwise


def test_resuming_a_run_without_ema_starts_one_from_its_weights(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    train(tiny_config(data_dirs, iterations=4, val_every=4), run_dir)
    before, _, extra = load_checkpoint(run_dir / "last.safetensors")
    assert not _averages(extra)
    config = dataclasses.replace(load_run_config(run_dir), ema_decay=0.5, iterations=5)
    train(config, run_dir, resume=True)
    after, _, extra = load_checkpoint(run_dir / "last.safetensors")
    assert load_run_config(run_dir).ema_decay == 0.5
    # Started from the step-4 weights, then one update at step 5 with the warm-up decay
    # min(0.5, (1 + 5) / (10 + 5)) = 0.4: average = w4 + 0.6 * (w5 - w4).
    averages = _averages(extra)
    assert set(averages) == set(after)
    for name, tensor in averages.items():
        torch.testing.assert_close(tensor, torch.lerp(before[name], after[name], 0.6))
    best = weights_of(run_dir / "best.safetensors")
    assert all(torch.equal(best[name], tensor) for name, tensor in averages.items())


def test_resumed_optimizer_state_takes_the_channels_last_layout_of_its_parameters():
    """CUDA's fused Adam refuses moments whose strides differ from the (channels-last) parameters."""
    from superres.training.state import match_optimizer_state_layout

    conv = torch.nn.Conv2d(4, 8, 3).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(conv.parameters())
    conv(torch.randn(1, 4, 6, 6)).sum().backward()
    optimizer.step()
    saved = optimizer.state_dict()
    for state in saved["state"].values():  # as a checkpoint stores them: contiguous
        for key, value in state.items():
            if value.ndim == 4:
                state[key] = value.contiguous()
    optimizer.load_state_dict(saved)
    match_optimizer_state_layout(optimizer)
    moments = optimizer.state[conv.weight]
    assert moments["exp_avg"].stride() == conv.weight.stride()
    assert moments["exp_avg_sq"].stride() == conv.weight.stride()


@pytest.mark.parametrize(
    ("amp", "has_amx", "expected"),
    [
        ("auto", True, torch.bfloat16),  # AMX tiles: bf16 steps are ~3x faster, same curve
        ("auto", False, None),  # AVX-512 BF16 alone was slower than float32
        ("off", True, None),
        ("bf16", False, torch.bfloat16),  # asked for: given, even where it is slow
    ],
)
def test_amp_auto_on_a_cpu_takes_bf16_only_with_amx(
    monkeypatch: pytest.MonkeyPatch, amp: str, has_amx: bool, expected: torch.dtype | None
) -> None:
    trainer = importlib.import_module("superres.training.loop")
    monkeypatch.setattr(trainer, "has_amx_bf16", lambda: has_amx)
    config = TrainConfig(model="srcnn", scale=2, train_data=["unused"], amp=amp)
    assert trainer.choose_amp_dtype(config, torch.device("cpu")) == expected
    with pytest.raises(ConfigError, match="amp 'fp16' needs a CUDA device"):
        trainer.choose_amp_dtype(dataclasses.replace(config, amp="fp16"), torch.device("cpu"))


def test_a_bf16_run_on_a_cpu_trains_and_saves_float32_weights(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    train(tiny_config(data_dirs, iterations=3, val_data=None, amp="bf16"), tmp_path / "run")
    weights = weights_of(tmp_path / "run" / "last.safetensors")
    assert all(tensor.dtype == torch.float32 and torch.isfinite(tensor).all() for tensor in weights.values())


def test_the_optimizer_named_by_the_config_is_the_one_that_trains(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    # AdamW decays the weights apart from the gradient: with the same settings it ends elsewhere.
    runs = {}
    for name in ("adam", "adamw"):
        config = tiny_config(data_dirs, iterations=3, val_data=None, optimizer=name, weight_decay=0.5)
        train(config, tmp_path / name)
        _, metadata, _ = load_checkpoint(tmp_path / name / "last.safetensors")
        assert metadata["config"]["optimizer"] == name
        runs[name] = weights_of(tmp_path / name / "last.safetensors")
    assert any(not torch.equal(runs["adam"][key], runs["adamw"][key]) for key in runs["adam"])
    with pytest.raises(ConfigError, match="optimizer must be one of adam, adamw, got 'sgd'"):
        resolve_config(tiny_config(data_dirs, optimizer="sgd"))


def test_every_flagged_config_field_is_a_train_flag(
    data_dirs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The flags come from the fields' metadata: one place to add a training option.
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    flagged = [f.name for f in dataclasses.fields(TrainConfig) if "flag" in f.metadata]
    assert len(flagged) >= 30
    for name in flagged:
        expected = "--no-augment" if name == "augment" else "--" + name.replace("_", "-")
        assert expected in help_text, name
    run_dir = tmp_path / "run"
    argv = _train_args(data_dirs, run_dir, "--optimizer", "adamw", "--channels-last", "false")
    assert main(argv) == 0
    config = load_run_config(run_dir)
    assert config.optimizer == "adamw" and config.channels_last is False


# --- distillation (a teacher's outputs as a second target) ------------------------------------


def _sampler(data_dirs: tuple[Path, Path]):
    return open_patch_source([str(data_dirs[0])], scale=2, patch_size=8, degradation="bicubic", channels="Y")


def test_teacher_crops_are_cut_where_the_hr_crops_are(data_dirs: tuple[Path, Path]) -> None:
    source = _sampler(data_dirs)
    # HR itself as the "teacher": every flip, turn and position must then give taught == hr.
    batches = DeviceBatches(source, "cpu", teacher_images=source.hr_images)
    plain = DeviceBatches(source, "cpu")
    lr, hr, taught = batches.sample_taught(16, np.random.default_rng(5))
    plain_lr, plain_hr = plain.sample(16, np.random.default_rng(5))
    assert torch.equal(taught, hr) and torch.equal(hr, plain_hr) and torch.equal(lr, plain_lr)
    assert batches.has_teacher and not plain.has_teacher


def test_the_teacher_runs_once_per_image_at_the_hr_size(data_dirs: tuple[Path, Path]) -> None:
    source = _sampler(data_dirs)
    outputs = teacher_images(tiny_config(data_dirs, teacher="bicubic"), source.lr_images, torch.device("cpu"))
    assert [o.shape for o in outputs] == [hr.shape for hr in source.hr_images]
    assert all(o.dtype == np.uint8 for o in outputs)
    expected = np.clip(np.round(imresize(source.lr_images[0][..., 0] / 255.0, 2) * 255), 0, 255)
    assert np.abs(outputs[0][..., 0].astype(np.int64) - expected).max() <= 1  # bicubic, 8-bit


def test_a_student_at_its_teacher_has_almost_no_distillation_loss(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    train(tiny_config(data_dirs, iterations=8), tmp_path / "teacher")
    teacher = str(tmp_path / "teacher" / "last.safetensors")
    frozen = {"iterations": 2, "log_every": 2, "val_every": 2, "learning_rate": 1e-30,
              "init_weights": teacher}
    train(tiny_config(data_dirs, teacher=teacher, distill_weight=1.0, **frozen), tmp_path / "at-teacher")
    train(tiny_config(data_dirs, **frozen), tmp_path / "at-hr")
    to_teacher = float(read_history(tmp_path / "at-teacher")[0]["loss"])
    to_hr = float(read_history(tmp_path / "at-hr")[0]["loss"])
    assert to_teacher < 0.01 * to_hr


def test_a_self_ensemble_teacher_teaches_its_mean_over_the_eight_symmetries(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    train(tiny_config(data_dirs, iterations=4), tmp_path / "teacher")
    teacher_path = str(tmp_path / "teacher" / "last.safetensors")
    source = _sampler(data_dirs)
    config = tiny_config(data_dirs, teacher=teacher_path, teacher_self_ensemble=True)
    outputs = teacher_images(config, source.lr_images, torch.device("cpu"))
    plain = teacher_images(config.replace(teacher_self_ensemble=False), source.lr_images, torch.device("cpu"))

    teacher = resolve_model(teacher_path, 2, device="cpu").eval()
    lr = torch.from_numpy(source.lr_images[0]).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        expected = ensemble_average(teacher, lr)[0, 0].clamp(0, 1).mul(255).round().numpy()
    assert np.abs(outputs[0][..., 0].astype(np.int64) - expected).max() <= 1
    # A barely trained network is far from flip- and rotation-equivariant: the mean differs.
    assert any(not np.array_equal(a, b) for a, b in zip(outputs, plain))
    # Only a run that asks for it records the field: older configs stay as they were.
    assert config.to_dict()["teacher_self_ensemble"] is True
    assert "teacher_self_ensemble" not in config.replace(teacher_self_ensemble=False).to_dict()


def _teacher_worker(rank: int, world_size: int, port: int, config_values: dict, root: str) -> None:
    import torch.distributed as torch_dist

    from superres.training.distributed import setup_distributed

    act_as_rank(rank, world_size, port)
    dist = setup_distributed(torch.device("cpu"))
    config = config_from_dict(config_values)
    source = open_patch_source(config.train_data, scale=2, patch_size=8, degradation="bicubic", channels="Y")
    outputs = teacher_images(config, source.lr_images, torch.device("cpu"), dist)
    np.savez(Path(root) / f"teacher{rank}.npz", *outputs)
    torch_dist.destroy_process_group()


@pytest.mark.slow  # seconds: left out by `make test-fast`
def test_ranks_share_the_teacher_pass_and_all_end_with_every_output(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    config = tiny_config(data_dirs, teacher="bicubic")
    spawn_two_ranks(_teacher_worker, config, tmp_path)
    alone = teacher_images(config, _sampler(data_dirs).lr_images, torch.device("cpu"))
    assert len(alone) > 2  # each rank then computed some of them
    for rank in (0, 1):
        with np.load(tmp_path / f"teacher{rank}.npz") as shared:
            received = [shared[f"arr_{index}"] for index in range(len(shared.files))]
        assert len(received) == len(alone)
        assert all(np.array_equal(a, b) for a, b in zip(received, alone))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"distill_weight": 0.3}, "'distill_weight' needs a teacher"),
        ({"teacher_self_ensemble": True}, "'teacher_self_ensemble' needs a teacher"),
        ({"teacher": "bicubic", "distill_weight": 0.0}, r"distill_weight must be in \(0, 1\]"),
        ({"teacher": "bicubic", "gan": True}, "a GAN run .* takes none"),
    ],
)
def test_bad_distillation_settings_are_config_errors(data_dirs: tuple[Path, Path], changes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(tiny_config(data_dirs, **changes))


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_a_seed_that_numpy_cannot_take_is_a_config_error(data_dirs: tuple[Path, Path], seed) -> None:
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        resolve_config(tiny_config(data_dirs, seed=seed))

def test_a_teacher_that_cannot_serve_the_run_is_one_clear_error(
    data_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="teacher: unknown model 'no-such-model'"):
        train(tiny_config(data_dirs, teacher="no-such-model"), tmp_path / "unknown")
    train(tiny_config(data_dirs, iterations=2), tmp_path / "x2")
    with pytest.raises(ConfigError, match="teacher: .*x2.*x3|teacher: .*x3.*x2"):
        train(tiny_config(data_dirs, teacher=str(tmp_path / "x2" / "last.safetensors"), scale=3),
              tmp_path / "scale")
    assert not (tmp_path / "unknown").exists() and not (tmp_path / "scale").exists()
