"""Video: frames upscaled at the original rate with the audio kept, resumable by segments."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from superres.cli import main

av = pytest.importorskip("av", reason="the video extra (PyAV) is not installed: pip install superres[video]")

RATE = Fraction(30000, 1001)


def make_clip(path: Path, frames: int = 7, width: int = 32, height: int = 24) -> Path:
    """A short H.264 clip at 29.97 fps with an AAC tone."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=44100)
        for index in range(frames):
            pixels = np.random.default_rng(index).integers(0, 255, (height, width, 3), dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(video.encode(None))
        tone = (0.3 * np.sin(np.arange(44100 * frames // 30) / 10)).astype(np.float32)[None]
        sound = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        sound.sample_rate, sound.pts = 44100, 0
        container.mux(audio.encode(sound))
        container.mux(audio.encode(None))
    return path


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_a_video_keeps_its_frames_rate_and_audio(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4")
    assert main(["upscale", str(clip), "--model", "srcnn", "--device", "cpu", "--segment-frames", "3"]) == 0
    output = tmp_path / "clip_x2.mp4"
    with av.open(str(output)) as container:
        video = container.streams.video[0]
        assert video.average_rate == RATE
        assert (video.codec_context.width, video.codec_context.height) == (64, 48)
        assert len(container.streams.audio) == 1
    assert len(decoded(output)) == 7
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clip.mp4", "clip_x2.mp4"]  # parts gone


def test_an_interrupted_video_resumes_from_its_finished_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import superres.batch.video as video

    clip = make_clip(tmp_path / "clip.mp4")
    args = ["upscale", str(clip), "--model", "srcnn", "--device", "cpu", "--segment-frames", "3"]
    assert main([*args, "-o", str(tmp_path / "clean.mp4")]) == 0
    real = video._SegmentEncoder.encode
    encoded: list[int] = []

    def interrupted_after_one(self, stream, frames):  # noqa: ANN001
        if encoded:
            raise KeyboardInterrupt  # Ctrl-C during the second segment
        encoded.append(len(frames))
        real(self, stream, frames)

    monkeypatch.setattr(video._SegmentEncoder, "encode", interrupted_after_one)
    assert main([*args, "-o", str(tmp_path / "out.mp4")]) == 130  # the CLI's "interrupted"
    parts = tmp_path / ".out.mp4.parts"
    assert sorted(path.name for path in parts.iterdir()) == ["000000.mp4", "journal.jsonl"]

    def counted(self, stream, frames):  # noqa: ANN001
        encoded.append(len(frames))
        real(self, stream, frames)

    monkeypatch.setattr(video._SegmentEncoder, "encode", counted)
    assert main([*args, "-o", str(tmp_path / "out.mp4")]) == 0
    assert encoded == [3, 3, 1]  # the first segment was not upscaled again
    assert not parts.exists()
    again, clean = decoded(tmp_path / "out.mp4"), decoded(tmp_path / "clean.mp4")
    assert len(again) == len(clean) == 7
    assert all(np.array_equal(a, b) for a, b in zip(again, clean, strict=True))


def test_part_of_a_video_can_be_tried_first(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=12)
    args = ["upscale", str(clip), "--model", "bicubic", "--device", "cpu"]
    assert main([*args, "--start", "0.1", "--frames", "4"]) == 0
    trial = tmp_path / "clip_x2_from0.1s.mp4"  # named for the part: never mistaken for the whole
    frames = decoded(trial)
    assert len(frames) == 4
    # The frames are those from 0.1 s on: the 4th to the 7th of the input, upscaled.
    source = decoded(clip)
    start = int(np.ceil(0.1 * RATE - 0.5))
    assert abs(frames[0][::2, ::2].astype(int) - source[start]).mean() < abs(
        frames[0][::2, ::2].astype(int) - source[0]
    ).mean()
    with av.open(str(trial)) as container:
        assert len(container.streams.audio) == 1
    assert main([*args, "--duration", "0.2", "-o", str(tmp_path / "short.mp4")]) == 0
    assert len(decoded(tmp_path / "short.mp4")) == round(0.2 * RATE)


def test_clip_options_without_a_video_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from superres.images import write_image

    write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert main(["upscale", str(tmp_path / "a.png"), "--model", "bicubic", "--frames", "3"]) == 2
    assert "choose part of a video" in capsys.readouterr().err
