"""Batches at scale: a SIGKILLed batch resumes to a clean run's outputs, shards, the journal,
batched network calls, and the folder-throughput measurement."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from superres.batch.files import upscale_files
from superres.batch.journal import Journal, Shard
from superres.cli import main
from superres.errors import ConfigError
from superres.images import read_image, write_image
from superres.inference.pipeline import upscale_image, upscale_images
from superres.zoo.names import resolve_model


def image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8, endpoint=True)


def make_folder(folder: Path, count: int = 10) -> list[Path]:
    """Images of two sizes, so that some runs are batched and some are not."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        size = (16, 20) if index % 4 else (18, 14)
        paths.append(folder / f"img{index:02d}.png")
        write_image(paths[-1], image(*size, seed=index))
    return paths


def contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


# Stalls the 4th write with its temporary file half written, then waits to be killed.
_KILLABLE = """
import sys, time
from superres.atomic import atomic_write
from superres.batch.worker import ImageBatchWorker
real = ImageBatchWorker.write
calls = []
def write(self, output_path, sr, image):
    calls.append(output_path)
    if len(calls) == 4:
        def stalled(stream):
            stream.write(b"x" * 4096); stream.flush(); print("WRITING", flush=True); time.sleep(60)
        atomic_write(output_path, stalled)
    real(self, output_path, sr, image)
ImageBatchWorker.write = write
from superres.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_a_sigkilled_batch_resumes_to_the_clean_outputs(tmp_path: Path, overwrite: bool) -> None:
    make_folder(tmp_path / "in")
    extra = ["--overwrite"] if overwrite else []
    args = ["upscale", str(tmp_path / "in"), "--model", "srcnn", "--device", "cpu", *extra]
    assert main([*args, "-o", str(tmp_path / "clean")]) == 0
    killed = [*args, "-o", str(tmp_path / "out")]
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE, *killed], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "WRITING"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert sum(".tmp-" in name for name in names) == 1  # the write it was killed in
    finished = {path: path.stat().st_mtime_ns for path in (tmp_path / "out").glob("img*.png")}
    assert len(finished) == 3

    assert main(killed) == 0
    assert contents(tmp_path / "out") == contents(tmp_path / "clean")  # no temporary, no journal
    # The finished outputs were not redone, even with --overwrite: the journal said so.
    assert {path: path.stat().st_mtime_ns for path in finished} == finished


def test_the_journal_ignores_a_torn_line_and_other_settings(tmp_path: Path) -> None:
    output = tmp_path / "a_x2.png"
    output.write_bytes(b"12345")
    journal = Journal(tmp_path / "j.jsonl", {"model": "srcnn"})
    journal.record(tmp_path / "a.png", output)
    with open(tmp_path / "j.jsonl", "a") as stream:
        stream.write('{"output": "b_x2.png", "inp')  # what a kill mid-append leaves
    again = Journal(tmp_path / "j.jsonl", {"model": "srcnn"})
    assert again.is_done(tmp_path / "a.png", output)
    assert not again.is_done(tmp_path / "other.png", output)  # another input for that output
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 2  # compacted
    output.write_bytes(b"123")  # replaced since: not as the batch wrote it
    assert not again.is_done(tmp_path / "a.png", output)
    assert not Journal(tmp_path / "j.jsonl", {"model": "red20"}).is_done(tmp_path / "a.png", output)


def test_shards_cover_every_file_exactly_once(tmp_path: Path) -> None:
    make_folder(tmp_path / "in", count=11)
    written: list[str] = []
    for index in range(3):
        report = upscale_files(
            [tmp_path / "in"], tmp_path / "out", scale=2, model="bicubic", device="cpu", shard=f"{index}/3"
        )
        assert len(report.written) in (3, 4) and not report.failed  # balanced to one file
        written += [path.name for path in report.written]
    assert sorted(written) == sorted(f"img{index:02d}_x2.png" for index in range(11))
    assert len(set(written)) == 11


def test_a_shard_is_the_same_whatever_order_the_files_are_listed_in() -> None:
    jobs = [(Path(f"in/{name}.png"), Path(f"out/{name}.png")) for name in "qwertyuiop"]
    shard = Shard.parse("2/4")
    assert shard.select(jobs) == shard.select(list(reversed(jobs)))
    assert Shard.parse("0/1").select(jobs) == sorted(jobs)


@pytest.mark.parametrize("text", ["4/4", "-1/2", "1", "a/b", "1/0"])
def test_a_bad_shard_is_one_line(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--shard must be i/N"):
        Shard.parse(text)
    make_folder(tmp_path, count=1)
    assert main(["upscale", str(tmp_path), "--model", "bicubic", f"--shard={text}"]) == 2
    assert "--shard must be i/N" in capsys.readouterr().err


def textured(height: int, width: int, seed: int) -> np.ndarray:
    """Noise over a ramp: enough values near a rounding boundary that any float difference shows."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 60, width)[None, :, None]
    return np.clip(rng.normal(128, 40, (height, width, 3)) + ramp, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("name", "channels"), [("espcn", "Y"), ("real", "RGB")])
def test_batched_network_calls_equal_one_by_one(name: str, channels: str) -> None:
    # Same-size images, as a folder of photos from one camera: the case that batches. A network
    # called on a batch of 8 rounds differently from 8 calls of one (oneDNN picks kernels by shape).
    model = resolve_model(name, 2, device="cpu")
    assert model.info.channels_for(model.model_kwargs) == channels
    images = [textured(40, 52, seed) for seed in range(20)]
    batched = [sr for start in range(0, 20, 8) for sr in upscale_images(images[start : start + 8], model)]
    for one, result in zip(images, batched, strict=True):
        np.testing.assert_array_equal(result, upscale_image(one, model))


def test_a_batch_writes_the_same_bytes_whatever_its_grouping(tmp_path: Path) -> None:
    for index in range(6):
        write_image(tmp_path / "in" / f"img{index}.png", textured(32, 44, index))
    outputs = {}
    for batch_size in (1, 4):
        out = tmp_path / f"out{batch_size}"
        report = upscale_files(
            [tmp_path / "in"], out, scale=2, model="espcn", device="cpu", batch_size=batch_size
        )
        assert report.exit_code == 0
        outputs[batch_size] = {path.name: path.read_bytes() for path in sorted(out.glob("*.png"))}
    assert len(outputs[1]) == 6 and outputs[1] == outputs[4]


def test_the_summary_and_exit_code_count_done_skipped_and_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_folder(tmp_path / "in", count=3)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "out").mkdir()
    write_image(tmp_path / "out" / "img00_x2.png", image(2, 2, 0))
    args = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "bicubic"]
    assert main(args) == 1
    assert "2 done, 1 skipped, 1 failed" in capsys.readouterr().out
    assert any(path.name.startswith(".superres-journal") for path in (tmp_path / "out").iterdir())


def pipeline_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("superres-")]


def test_a_batch_with_a_failed_input_exits_with_its_own_code(tmp_path: Path) -> None:
    # The pipeline's daemon threads were left running when `main` returned, and the interpreter's
    # shutdown then often died in a C++ terminate: exit code 134 (SIGABRT) instead of 1. The
    # abort needs a race, so the exact check is that no pipeline thread outlives the batch.
    make_folder(tmp_path / "in", count=1)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    args = ["upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out")]
    assert main([*args, "--model", "bicubic"]) == 1
    assert pipeline_threads() == []
    result = subprocess.run(
        [sys.executable, "-m", "superres", *args, "--overwrite"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "1 done, 0 skipped, 1 failed" in result.stdout
    assert sorted(path.name for path in (tmp_path / "out").glob("*.png")) == ["img00_x2.png"]


def test_folder_throughput_measures_both_runners(tmp_path: Path) -> None:
    from superres.lab.bench_batch import format_throughput, measure_folder_throughput

    make_folder(tmp_path, count=4)
    result = measure_folder_throughput(tmp_path, model="bicubic")
    assert result["images"] == 4 and result["loop_images_per_s"] > 0 and result["speedup"] > 0
    assert "images/s" in format_throughput(result)
    assert sorted(path.name for path in tmp_path.iterdir()) == [f"img{i:02d}.png" for i in range(4)]
    assert read_image(tmp_path / "img00.png").pixels.shape == (18, 14, 3)


def test_an_output_another_run_wrote_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    from superres.errors import ImageWriteError
    from superres.images import write_image as write

    target = tmp_path / "a_x2.png"
    write(target, image(8, 8, seed=1), replace=False)
    first = target.read_bytes()
    with pytest.raises(ImageWriteError, match="another run wrote it meanwhile"):
        write(target, image(8, 8, seed=2), replace=False)
    assert target.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_x2.png"]  # no temporary left
    write(target, image(8, 8, seed=2))  # replace=True (--overwrite): replaced
    assert target.read_bytes() != first


def test_two_batches_into_one_folder_write_every_output_once(tmp_path: Path) -> None:
    make_folder(tmp_path / "in", count=16)
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "superres",
                "upscale",
                str(tmp_path / "in"),
                "-o",
                str(tmp_path / "out"),
                "--model",
                model,
                "--device",
                "cpu",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in ("bicubic", "srcnn")
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    done = []
    for stdout, stderr in outputs:
        summary = [line for line in stdout.splitlines() if line.startswith("upscaled with")][-1]
        done.append(int(summary.split(": ")[1].split(" done")[0]))
        assert "not replaced" in stderr or done[-1] == 16 or "exists (use --overwrite" in stderr
    assert sum(done) == 16  # each output written by exactly one of the two runs
    written = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert len(written) == 16
