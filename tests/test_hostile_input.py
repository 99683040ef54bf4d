"""Bad input, faults and concurrency, tried as a hostile user would: each test is one defect.

Numbered like the issue that found them: (1) lenient JPEG reading and the pixel limit, (2) the
run-folder lock, (3) tampered checkpoint metadata, (4) a full disk during a training checkpoint,
(5) leftovers and surprises in `upscale`, (6) inputs that must be refused, (7) feedback. All
images are generated here; CPU only, seconds each.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save

from superres.atomic import atomic_write
from superres.batch.files import upscale_files
from superres.cli import main
from superres.errors import (
    CheckpointError,
    ConfigError,
    ImageReadError,
    ImageWriteError,
)
from superres.images import limits, read_image, write_image
from superres.inference.pipeline import upscale_image
from superres.models import create_model
from superres.training.config import build_config, config_from_dict, resolve_config
from superres.training.runlock import hold_run_lock
from superres.zoo.checkpoint import load_model, save_checkpoint

TINY_SRCNN = {"kernel_sizes": [3, 1, 3], "num_features": [8, 4]}


def photo(height: int = 64, width: int = 80, seed: int = 0) -> np.ndarray:
    """A textured RGB uint8 image (gradients plus noise), so JPEG has data in every block."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 3) % 256, (y * 2) % 256, ((x + y) * 2) % 256], axis=2)
    return (base + rng.integers(0, 40, base.shape)).clip(0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
    return buffer.getvalue()


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def run_cli(*args: str, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "superres", *args], capture_output=True, env=env, timeout=120, **kwargs
    )


# --- 1. lenient JPEG reading, the pixel limit ------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"optimize": True}])
def test_truncated_jpeg_with_an_end_marker_is_refused(tmp_path: Path, options: dict) -> None:
    data = jpeg_bytes(photo(), **options)
    complete = tmp_path / "complete.jpg"
    complete.write_bytes(data)
    assert read_image(complete).pixels.shape == (64, 80, 3)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2] + b"\xff\xd9")  # head -c N; printf '\xff\xd9'
    with pytest.raises(ImageReadError, match="truncated JPEG"):
        read_image(cut)
    assert main(["upscale", str(cut), "--model", "bicubic"]) == 1
    assert not (tmp_path / "cut_x2.jpg").exists()


def test_the_default_pixel_limit_fits_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 23 KB JPEG claiming 16000 x 16000 decoded to 2.5 GB under a fixed 2**28 limit.
    monkeypatch.setattr(limits, "memory_bytes", lambda: 8 * 2**30)
    assert limits.default_max_pixels() < 16000 * 16000
    monkeypatch.setattr(limits, "memory_bytes", lambda: None)
    assert limits.default_max_pixels() == 2**28


def test_a_huge_jpeg_header_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytearray(jpeg_bytes(photo(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (16000).to_bytes(2, "big") + (16000).to_bytes(2, "big")
    path = tmp_path / "bomb.jpg"
    path.write_bytes(bytes(data))
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self) or None)
    with pytest.raises(ImageReadError, match="16000x16000 .* raise it with --max-pixels"):
        read_image(path, max_pixels=16000 * 16000 - 1)
    assert not decoded


def test_max_pixels_option_of_upscale(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "a.png"
    write_image(source, photo(8, 8))
    assert main(["upscale", str(source), "--model", "bicubic", "--max-pixels", "63"]) == 1
    assert "exceeds the limit of 63" in capsys.readouterr().err
    assert main(["upscale", str(source), "--model", "bicubic", "--max-pixels", "64"]) == 0


# --- 2. one training process per run folder ---------------------------------------------------


@pytest.fixture
def train_args(tmp_path: Path) -> list[str]:
    hr = tmp_path / "hr"
    for index in range(2):
        write_image(hr / f"{index}.png", photo(36, 40, seed=index))
    return [
        "train", "--model", "srcnn", "--model-kwargs", json.dumps(TINY_SRCNN), "--scale", "2",
        "--train-data", str(hr), "--val-data", "none", "--patch-size", "8", "--batch-size", "2",
        "--iterations", "4", "--checkpoint-every", "2", "--log-every", "2", "--device", "cpu",
        "--num-threads", "1",
    ]


def test_a_second_run_on_a_locked_folder_is_refused(
    tmp_path: Path, train_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    with hold_run_lock(run_dir):  # what a first `superres train --run-dir run` holds
        assert main([*train_args, "--run-dir", str(run_dir)]) == 2
        line = one_error_line(capsys)
        assert "is in use by pid" in line and str(os.getpid()) in line
        assert not (run_dir / "last.safetensors").exists()
    assert main([*train_args, "--run-dir", str(run_dir)]) == 0
    with hold_run_lock(run_dir):
        assert main(["train", "--resume", str(run_dir), "--iterations", "6"]) == 2
        assert "is in use by" in one_error_line(capsys)


def test_the_lock_of_a_killed_process_does_not_stick(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = (
        "import os, sys; from superres.training.runlock import hold_run_lock\n"
        f"with hold_run_lock({str(run_dir)!r}):\n    os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert result.returncode == -signal.SIGKILL
    assert (run_dir / ".lock").exists()  # the holder could not clean up...
    with hold_run_lock(run_dir):  # ...but its lock died with it
        pass


# --- 3. tampered checkpoint metadata ----------------------------------------------------------


def tiny_checkpoint(path: Path, **metadata_changes: object) -> Path:
    model = create_model("srcnn", 2, **TINY_SRCNN)
    metadata = {"model": "srcnn", "scale": 2, "model_kwargs": TINY_SRCNN, "channels": "Y"}
    save_checkpoint(path, model, metadata)
    tensors = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    tampered = {**metadata, **metadata_changes}
    path.write_bytes(save(tensors, metadata={"superres": json.dumps(tampered)}))
    return path


TAMPERED = {
    "scale is text": {"scale": "abc"},
    "kwargs are a list": {"model_kwargs": [1, 2]},
    "huge features": {"model_kwargs": {"kernel_sizes": [3, 1, 3], "num_features": [1e6, 1e6]}},
    "huge whole numbers": {"model_kwargs": {"kernel_sizes": [3, 1, 3], "num_features": [10**6, 10**6]}},
    "unknown model": {"model": "vdsr"},
}


@pytest.mark.parametrize("change", TAMPERED.values(), ids=TAMPERED.keys())
def test_tampered_metadata_is_refused_before_building(tmp_path: Path, change: dict) -> None:
    path = tiny_checkpoint(tmp_path / "bad.safetensors", **change)
    with pytest.raises(CheckpointError, match="bad metadata"):
        load_model(path)


def test_tampered_metadata_is_one_line_in_every_command(
    tmp_path: Path, train_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = str(tiny_checkpoint(tmp_path / "bad.safetensors", model_kwargs=[1, 2]))
    image = tmp_path / "hr" / "0.png"
    commands = [
        ["upscale", str(image), "--model", checkpoint],
        ["evaluate", str(image.parent), "--model", checkpoint, "--scale", "2"],
        ["export", "--model", checkpoint, "--scale", "2", "-o", str(tmp_path / "m.onnx")],
        [*train_args, "--init-weights", checkpoint, "--run-dir", str(tmp_path / "run")],
    ]
    for command in commands:
        assert main(command) == 2, command
        assert "bad metadata" in one_error_line(capsys), command


# --- 4. a full disk while training saves a checkpoint -----------------------------------------


def test_a_full_disk_during_a_training_checkpoint(
    tmp_path: Path, train_args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import superres.zoo.checkpoint as checkpoint_module

    writes = []

    def disk_fills_up(path: Path, data: bytes) -> None:
        writes.append(path)
        if len(writes) < 2:
            return atomic_write(path, lambda stream: stream.write(data))

        def half_then_full(stream: object) -> None:
            stream.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        return atomic_write(path, half_then_full)

    monkeypatch.setattr(checkpoint_module, "atomic_write_bytes", disk_fills_up)
    run_dir = tmp_path / "run"
    assert main([*train_args, "--run-dir", str(run_dir)]) == 2
    line = one_error_line(capsys)
    assert "No space left on device" in line and "previous checkpoint is kept" in line
    assert sorted(p.name for p in run_dir.iterdir() if ".tmp-" in p.name) == []
    monkeypatch.undo()
    assert main(["train", "--resume", str(run_dir)]) == 0  # the step-2 checkpoint survived
    assert "step 4/4" in capsys.readouterr().out


# --- 5. leftovers and surprises in upscale ----------------------------------------------------

# The write stalls for a minute; SELF_SIGNAL makes the writing thread send SIGTERM to itself first,
# as the kernel may do with a process-directed signal (any thread can receive it).
_SLOW_WRITE = """
import os, signal, sys, threading, time
import superres.images as images
real = images.atomic_write
def slow(path, write_to, **options):
    def stalled(stream):
        stream.write(b"x" * 4096); stream.flush(); print("WRITING", flush=True)
        if os.environ.get("SELF_SIGNAL"):
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(60)
    real(path, stalled, **options)
images.atomic_write = slow
from superres.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("receiver", ["process", "writing thread"])
def test_sigterm_during_a_write_leaves_no_temporary_file(tmp_path: Path, receiver: str) -> None:
    source = tmp_path / "a.png"
    write_image(source, photo(8, 8))
    environment = {**os.environ, "SELF_SIGNAL": "1" if receiver == "writing thread" else ""}
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITE, "upscale", str(source), "--model", "bicubic"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert process.stdout.readline().strip() == "WRITING"
        if receiver == "process":
            assert any(".tmp-" in p.name for p in tmp_path.iterdir())
            process.send_signal(signal.SIGTERM)
        # Well inside the write's minute: the interrupt must not wait for the stalled write.
        _, err = process.communicate(timeout=40)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "superres upscale: terminated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_stale_temporaries_of_a_killed_run_are_swept(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    write_image(source, photo(8, 8))
    dead = tmp_path / ".a_x2.png.tmp-4194305-0123abcd"  # above any pid_max: never a live process
    old_style = tmp_path / ".a_x2.png.tmp-89abcdef"
    alive = tmp_path / f".a_x2.png.tmp-{os.getppid()}-00000000"  # a live writer's: kept
    someone_elses = tmp_path / ".b_x2.png.tmp-4194305-0123abcd"  # not an output of this run
    for leftover in (dead, old_style, alive, someone_elses):
        leftover.write_bytes(b"x" * 100)
    hours_ago = time.time() - 7200
    os.utime(old_style, (hours_ago, hours_ago))
    assert main(["upscale", str(source), "--model", "bicubic"]) == 0
    assert not dead.exists() and not old_style.exists()
    assert alive.exists() and someone_elses.exists()


def test_a_write_error_names_the_output_not_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / "out.png"

    def full(descriptor: int) -> None:
        temporary = next(p for p in tmp_path.iterdir() if ".tmp-" in p.name)
        raise OSError(28, "No space left on device", str(temporary))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ImageWriteError) as error:
        write_image(output, photo(4, 4))
    assert ".tmp-" not in str(error.value) and str(output) in str(error.value)
    assert "No space left on device" in str(error.value)


def test_an_output_named_gif_is_refused_not_made_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a.png"
    write_image(source, photo(8, 8))
    assert main(["upscale", str(source), "-o", str(tmp_path / "out.gif"), "--model", "bicubic"]) == 2
    assert "cannot write .gif" in one_error_line(capsys)
    assert not (tmp_path / "out.gif").exists()


def test_an_unreadable_folder_is_reported_and_the_batch_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, locked = tmp_path / "good", tmp_path / "locked"
    write_image(good / "a.png", photo(8, 8))
    write_image(locked / "b.png", photo(8, 8))
    real_iterdir = Path.iterdir

    def iterdir(self: Path):
        if self == locked:  # chmod 000 does not stop root, so the refusal is simulated
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    report = upscale_files([locked, good], tmp_path / "out", scale=2, model="bicubic", device="cpu")
    assert report.written == [tmp_path / "out" / "a_x2.png"]
    assert [path for path, _ in report.failed] == [locked] and report.exit_code == 1
    assert "Permission denied" in report.failed[0][1]


def test_a_glob_reaching_one_file_twice_through_a_symlink(tmp_path: Path) -> None:
    write_image(tmp_path / "in" / "sub" / "a.png", photo(8, 8))
    (tmp_path / "in" / "link").symlink_to(tmp_path / "in" / "sub")
    assert main(["upscale", str(tmp_path / "in" / "**" / "*.png"), "--model", "bicubic"]) == 0
    assert (tmp_path / "in" / "sub" / "a_x2.png").is_file()


def test_a_name_that_is_not_utf8_under_strict_output_encoding(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path)
    source = os.path.join(folder, b"caf\xe9.png")  # Latin-1, not valid UTF-8
    buffer = io.BytesIO()
    Image.fromarray(photo(8, 8)).save(buffer, "PNG")
    with open(source, "wb") as stream:
        stream.write(buffer.getvalue())
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    result = run_cli("upscale", os.fsdecode(source), "--model", "bicubic", env=env)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert os.path.exists(os.path.join(folder, b"caf\xe9_x2.png"))
    assert b"wrote" in result.stdout


# --- 6. inputs that must be refused -----------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_weights_are_refused(
    tmp_path: Path, bad: float, capsys: pytest.CaptureFixture[str]
) -> None:
    model = create_model("srcnn", 2, **TINY_SRCNN)
    with torch.no_grad():
        next(model.parameters())[0].fill_(bad)
    path = tmp_path / "nan.safetensors"
    save_checkpoint(path, model, {"model": "srcnn", "scale": 2, "model_kwargs": TINY_SRCNN, "channels": "Y"})
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_model(path)
    source = tmp_path / "a.png"
    write_image(source, photo(8, 8))
    assert main(["upscale", str(source), "--model", str(path)]) == 2
    assert "NaN or infinite" in one_error_line(capsys)
    assert not (tmp_path / "a_x2.png").exists()


def test_a_one_pixel_patch_is_refused() -> None:
    config = config_from_dict(
        {"model": "srcnn", "scale": 2, "train_data": ["x"], "iterations": 1, "patch_size": 1}
    )
    with pytest.raises(ConfigError, match="patch_size must be at least 8"):
        resolve_config(config)


def test_upscale_accepts_the_scales_models_lists(tmp_path: Path) -> None:
    source = tmp_path / "a.png"
    write_image(source, photo(8, 8))
    assert main(["upscale", str(source), "--model", "bicubic", "--scale", "8"]) == 0
    assert read_image(tmp_path / "a_x8.png").pixels.shape == (64, 64, 3)


# --- 7. feedback a user needs -----------------------------------------------------------------


def test_progress_per_tile_once_an_image_takes_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import superres.batch.worker as batch_worker
    calls: list[tuple[int, int]] = []
    upscale_image(photo(32, 32), create_model("bicubic", 2), tile=8, on_tile=lambda *a: calls.append(a))
    assert calls == [(done, 16) for done in range(1, 17)]
    monkeypatch.setattr(batch_worker, "PROGRESS_DELAY_S", 0.0)
    source = tmp_path / "a.png"
    write_image(source, photo(32, 32))
    assert main(["upscale", str(source), "--model", "bicubic", "--tile", "8"]) == 0
    err = capsys.readouterr().err
    assert "/16 [00:00<" in err and "tile/s" in err  # done/total [elapsed<remaining: the ETA


def test_gif_input_is_upscaled_to_png(tmp_path: Path) -> None:
    source = tmp_path / "palette.gif"
    Image.fromarray(photo(8, 8)).convert("P").save(source)
    assert main(["upscale", str(source), "--model", "bicubic"]) == 0
    assert read_image(tmp_path / "palette_x2.png").pixels.shape == (16, 16, 3)


def test_config_data_paths_are_resolved_beside_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(tmp_path / "repo" / "data" / "hr" / "a.png", photo(8, 8))
    recipe = tmp_path / "repo" / "recipe.json"
    recipe.write_text(json.dumps({"model": "srcnn", "scale": 2, "iterations": 1, "train_data": ["data/hr"]}))
    monkeypatch.chdir(tmp_path)  # anywhere but the recipe's folder
    config = build_config(config_file=recipe)
    assert Path(config.train_data[0]).is_dir()


def test_a_missing_preset_path_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "srcnn-tutorial", "--iterations", "1", "--run-dir", "r"]) == 2
    line = one_error_line(capsys)
    assert str(tmp_path / ".." / "shared" / "data") in line and "working folder" in line


def test_a_pickle_checkpoint_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(2)}, path)  # a zip of pickles: never loaded, only named
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint .* never loads pickles"):
        load_model(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_not_called_empty(tmp_path: Path) -> None:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image(path)


def test_verbose_does_not_flood_with_pillow_debug_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "a.png"
    write_image(source, photo(8, 8))
    caplog.set_level(logging.DEBUG)
    assert main(["-v", "upscale", str(source), "--model", "bicubic"]) == 0
    assert not [record for record in caplog.records if record.name.startswith("PIL")]


def test_numpy_input_from_python(tmp_path: Path) -> None:
    pixels = photo(8, 8)
    pixels.flags.writeable = False
    model = create_model("bicubic", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PyTorch's "array is not writable" must not reach users
        assert upscale_image(pixels, model).shape == (16, 16, 3)
    with pytest.raises(TypeError, match="uint8 or uint16 .*from_float"):
        upscale_image(pixels.astype(np.float32) / 255, model)
