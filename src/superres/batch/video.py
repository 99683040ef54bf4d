"""Upscaling a video file: frames through the image pipeline, the original frame rate and audio.

Reading and writing go through PyAV (the `video` extra, `pip install 'superres[video]'`), which
links FFmpeg's libraries from its wheel: no ffmpeg binary to find and no subprocess, and a
smaller install than imageio-ffmpeg's bundled executable (36 MB against 68 MB of wheel).

The frames are decoded as 8-bit RGB, upscaled exactly as images are (`ImageBatchWorker`: the
same model, tiles and batches of several frames at once), and encoded as H.264 (VP9 for WebM) in
4:2:0, at constant quality (CRF 18) without B-frames, at the input's average frame rate: a variable-rate input
comes out at constant rate. 4:2:0 needs even sizes, so an odd upscaled width or height (x3 of an
odd size) gets one replicated column or row. The audio streams are copied untouched, packet for
packet; other streams (subtitles, data) are left out.

Resumable by frame ranges: the frames are encoded in segments of `segment_frames` into a hidden
folder beside the output (`.<name>.parts/`), each segment written atomically and recorded in a
`superres.batch.journal.Journal` there. A killed run, restarted with the same command, decodes past the
finished segments without upscaling them and redoes the unfinished one. When all are done they
are joined, with the audio, into the output (itself written atomically), and the folder goes.
Every segment starts with a key frame and comes from identically configured encoders, so the
joined stream is one valid stream, as FFmpeg's concat demuxer would make it.

A `Clip` (`--start`, `--duration`, `--frames`) upscales part of a video to try a model first: the
frames from `start` seconds on, for `duration` seconds or `frames` frames, with the audio of that
stretch, into `<name>_x<scale>_from<start>s<ext>` (so the trial never stands in for the whole).
The progress bar shows frames per second and the time left.
"""

from __future__ import annotations

import heapq
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from superres.batch.worker import ImageBatchWorker
from superres.errors import ConfigError, ImageReadError, ImageWriteError, SuperresError

logger = logging.getLogger(__name__)

#: Containers read and written as video (the output keeps the input's).
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
#: Frames per resumable segment: about 5 s at 24 fps, a few minutes of upscaling on a CPU.
DEFAULT_SEGMENT_FRAMES = 120
#: Constant-quality setting: visually lossless for H.264 (x264's scale; VP9 reads it alike).
CRF = 18


@dataclass(frozen=True)
class Clip:
    """Part of a video: from `start_s` seconds, for `duration_s` seconds and/or `frames` frames
    (None: to the end)."""

    start_s: float = 0.0
    duration_s: float | None = None
    frames: int | None = None

    def __post_init__(self) -> None:
        if self.start_s < 0 or (self.duration_s is not None and self.duration_s <= 0):
            raise ConfigError("--start must be at least 0 and --duration positive (seconds)")
        if self.frames is not None and self.frames < 1:
            raise ConfigError(f"--frames must be at least 1, got {self.frames}")

    @property
    def whole(self) -> bool:
        return self.start_s == 0 and self.duration_s is None and self.frames is None

    def end_s(self, rate: Fraction) -> float | None:
        """Where the clip ends, in seconds of the input (None: at its end)."""
        ends = [self.start_s + self.duration_s] if self.duration_s is not None else []
        ends += [self.start_s + float(self.frames / rate)] if self.frames is not None else []
        return min(ends) if ends else None

    def output_suffix(self) -> str:
        return "" if self.whole else f"_from{self.start_s:g}s"

    def journal_key(self) -> dict[str, Any]:
        return {} if self.whole else {"clip": [self.start_s, self.duration_s, self.frames]}


WHOLE = Clip()


def is_video(path: str | Path) -> bool:
    """Whether `path` names a video by its extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _require_av() -> Any:
    try:
        import av
    except ImportError as error:
        raise ConfigError("upscaling video needs the video extra: pip install 'superres[video]'") from error
    return av


def _codec_for(path: Path) -> str:
    return "libvpx-vp9" if path.suffix.lower() == ".webm" else "libx264"


def _even(pixels: np.ndarray) -> np.ndarray:
    """`pixels` with one replicated row / column where the size is odd (4:2:0 needs even)."""
    height, width = pixels.shape[:2]
    return np.pad(pixels, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


class _Probe:
    """What the output needs to know about the input's video stream."""

    def __init__(self, av: Any, path: Path) -> None:
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ImageReadError(f"{path}: no video stream")
                stream = container.streams.video[0]
                self.rate = Fraction(stream.average_rate or stream.guessed_rate or 25)
                self.frames = stream.frames or None  # 0 where the container does not say
                if self.frames is None and stream.duration and stream.time_base:
                    self.frames = int(stream.duration * stream.time_base * self.rate)
                if self.frames is None and container.duration:  # the container's, in microseconds
                    self.frames = int(Fraction(container.duration, 1_000_000) * self.rate)
        except av.error.FFmpegError as error:
            raise ImageReadError(f"{path}: cannot read video ({error.strerror or error})") from error


def _frames(av: Any, path: Path, clip: Clip = WHOLE, rate: Fraction = Fraction(25)) -> Iterator[np.ndarray]:
    """The video's frames (those of `clip`) as HWC uint8 RGB, in order."""
    end_s = clip.end_s(rate)
    # Half a frame of slack: a frame's time is exact only to the stream's time base.
    slack = float(1 / rate) / 2
    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if clip.start_s > 0:  # to the key frame before the start; the frames before it are dropped
                container.seek(int(clip.start_s * 1_000_000), backward=True)
            for frame in container.decode(video=0):
                time = frame.time if frame.time is not None else 0.0
                if time < clip.start_s - slack:
                    continue
                if (end_s is not None and time >= end_s - slack) or (clip.frames and count >= clip.frames):
                    return
                count += 1
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as error:
        raise ImageReadError(f"{path}: cannot decode video ({error.strerror or error})") from error


def upscale_video(
    input_path: str | Path,
    output_path: str | Path,
    worker: ImageBatchWorker,
    *,
    overwrite: bool = False,
    segment_frames: int = DEFAULT_SEGMENT_FRAMES,
    clip: Clip = WHOLE,
) -> bool:
    """Upscale the video `input_path` (the part `clip` names) into `output_path` with `worker`'s
    model (see the module docstring). Returns False when the output exists and `overwrite` is not
    set (skipped)."""
    from superres.batch.journal import Journal

    av = _require_av()
    input_path, output_path = Path(input_path), Path(output_path)
    if segment_frames < 1:
        raise ConfigError(f"segment length must be at least 1 frame, got {segment_frames}")
    if output_path.suffix.lower() not in _MUXERS:
        raise ConfigError(f"{output_path}: cannot write video as {output_path.suffix or 'no extension'}; "
                          f"use one of {' '.join(VIDEO_EXTENSIONS)}")
    if output_path.exists() and not overwrite:
        return False
    if not input_path.is_file():
        raise ImageReadError(f"{input_path}: file not found")
    probe = _Probe(av, input_path)
    parts = output_path.with_name(f".{output_path.name}.parts")
    status = input_path.stat()
    journal = Journal(
        parts / "journal.jsonl",
        {
            **worker.settings.journal_key(worker.network),
            "video": str(input_path), "bytes": status.st_size, "mtime_ns": status.st_mtime_ns,
            "segment_frames": segment_frames, **clip.journal_key(),
        },
    )
    segments = _encode_segments(
        av, input_path, output_path, parts, journal, worker, probe, segment_frames, clip
    )
    _join(av, input_path, output_path, segments, probe, segment_frames, clip)
    shutil.rmtree(parts, ignore_errors=True)
    return True


def _encode_segments(
    av: Any,
    input_path: Path,
    output_path: Path,
    parts: Path,
    journal: Any,
    worker: ImageBatchWorker,
    probe: _Probe,
    segment_frames: int,
    clip: Clip = WHOLE,
) -> list[Path]:
    """Every segment of the video as a file in `parts`, the finished ones of a killed run kept."""
    from tqdm import tqdm

    from superres.atomic import atomic_write, remove_stale_temporaries

    parts.mkdir(parents=True, exist_ok=True)
    decoded = _frames(av, input_path, clip, probe.rate)
    segments: list[Path] = []
    # Frames per second and the time left (tqdm's rate and ETA) need the number of frames.
    total = probe.frames
    end_s = clip.end_s(probe.rate)
    if total is not None:
        total = max(0, total - round(clip.start_s * probe.rate))
    if end_s is not None:
        in_clip = round((end_s - clip.start_s) * probe.rate)
        total = in_clip if total is None else min(total, in_clip)
    with tqdm(total=total, unit="frame", desc=input_path.name, dynamic_ncols=True) as bar:
        while True:
            frames = [frame for _, frame in zip(range(segment_frames), decoded, strict=False)]
            if not frames:
                break
            segment = parts / f"{len(segments):06d}{output_path.suffix}"
            segments.append(segment)
            if journal.is_done(input_path, segment):
                bar.update(len(frames))  # decoded past, not upscaled: the ETA counts only new work
                continue
            remove_stale_temporaries(segment)
            encoder = _SegmentEncoder(av, segment, probe.rate, worker, bar)
            try:
                atomic_write(segment, partial(encoder.encode, frames=frames))
            except av.error.FFmpegError as error:
                reason = error.strerror or error
                raise ImageWriteError(f"{output_path}: cannot encode video ({reason})") from error
            journal.record(input_path, segment)
    if not segments:
        raise ImageReadError(f"{input_path}: no frames in the video")
    return segments


class _SegmentEncoder:
    """Upscales one segment's frames (in batches, as images are) and encodes them to a stream."""

    def __init__(self, av: Any, segment: Path, rate: Fraction, worker: ImageBatchWorker, bar: Any) -> None:
        self.av, self.segment, self.rate, self.worker, self.bar = av, segment, rate, worker, bar

    def _upscaled(self, frames: list[np.ndarray]) -> Iterator[np.ndarray]:
        from superres.images import LoadedImage

        images = [LoadedImage(pixels=frame, icc_profile=None, path=self.segment) for frame in frames]
        run: list[Any] = []
        for image in images:
            if run and not self.worker.can_join(run[0], image, len(run)):
                yield from self.worker.compute(run)
                self.bar.update(len(run))
                run = []
            run.append(image)
        yield from self.worker.compute(run)
        self.bar.update(len(run))

    def encode(self, stream: Any, frames: list[np.ndarray]) -> None:
        suffix = self.segment.suffix.lower()
        with self.av.open(stream, "w", format=_MUXERS[suffix]) as container:
            video = None
            for index, sr in enumerate(self._upscaled(frames)):
                sr = _even(sr)
                if video is None:
                    video = container.add_stream(_codec_for(self.segment), rate=self.rate)
                    video.height, video.width = sr.shape[:2]
                    video.pix_fmt = "yuv420p"
                    # No B-frames: decode order is display order, so the segments' timestamps
                    # join monotonically (B-frames start each segment's dts before its pts).
                    video.options = {"crf": str(CRF), "bf": "0"}
                    video.codec_context.time_base = 1 / self.rate
                frame = self.av.VideoFrame.from_ndarray(sr, format="rgb24")
                frame.pts, frame.time_base = index, 1 / self.rate
                container.mux(video.encode(frame))
            container.mux(video.encode(None))  # flush the encoder's delayed frames


def _packets(
    container: Any, stream: Any, offset_s: Fraction = Fraction(0), window: tuple[float, float | None] = (0, None)
) -> Iterator[tuple[Fraction, int, Any]]:
    """(time in seconds, order, packet) of `stream` within `window` (start, end or None, in the
    stream's own seconds), shifted by `offset_s`; flush packets dropped."""
    start_s, end_s = window
    for order, packet in enumerate(container.demux(stream)):
        if packet.dts is None:
            continue
        if packet.pts is not None and packet.time_base is not None:
            at = float(packet.pts * packet.time_base)
            if at < start_s or (end_s is not None and at >= end_s):
                continue
        shift = round(offset_s / packet.time_base)
        packet.dts += shift
        if packet.pts is not None:
            packet.pts += shift
        yield Fraction(packet.dts) * packet.time_base, order, packet


def _join(
    av: Any,
    input_path: Path,
    output_path: Path,
    segments: list[Path],
    probe: _Probe,
    segment_frames: int,
    clip: Clip = WHOLE,
) -> None:
    """The segments' video and the input's audio, interleaved by time, into `output_path`."""
    from superres.atomic import atomic_write, remove_stale_temporaries

    def write_to(stream: Any) -> None:
        sources = [av.open(str(segment)) for segment in segments]
        original = av.open(str(input_path))
        try:
            with av.open(stream, "w", format=_MUXERS[output_path.suffix.lower()]) as out:
                video = out.add_stream_from_template(sources[0].streams.video[0])
                audio = [(out.add_stream_from_template(s), s) for s in original.streams.audio]
                # Every segment but the last holds exactly segment_frames frames.
                starts = [Fraction(index * segment_frames) / probe.rate for index in range(len(sources))]
                video_packets = (
                    (time, 0, index, order, packet, video)
                    for index, (source, start) in enumerate(zip(sources, starts, strict=True))
                    for time, order, packet in _packets(source, source.streams.video[0], start)
                )
                audio_packets = [
                    (
                        (time, 1 + index, 0, order, packet, target)
                        for time, order, packet in _packets(
                            original, source, Fraction(-clip.start_s), (clip.start_s, clip.end_s(probe.rate))
                        )
                    )
                    for index, (target, source) in enumerate(audio)
                ]
                # Merged by time: the muxer gets the streams interleaved, never all video first.
                for *_, packet, target in heapq.merge(video_packets, *audio_packets, key=lambda p: p[:4]):
                    packet.stream = target
                    out.mux(packet)
        finally:
            for container in [*sources, original]:
                container.close()

    output_path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output_path)
    try:
        atomic_write(output_path, write_to)
    except av.error.FFmpegError as error:
        raise ImageWriteError(f"{output_path}: cannot write video ({error.strerror or error})") from error


def upscale_videos(
    inputs: list[Path],
    output: Path | None,
    worker: ImageBatchWorker,
    *,
    overwrite: bool = False,
    segment_frames: int = DEFAULT_SEGMENT_FRAMES,
    clip: Clip = WHOLE,
) -> Any:  # superres.batch.worker.BatchReport
    """Several videos: each to `<stem>_x<scale><ext>` beside it or in the folder `output`, or to
    the file `output` for a single one. A bad video is reported and the others go on."""
    from superres.batch.worker import BatchReport

    report = BatchReport()
    scale = int(worker.network.scale)
    single_file = output is not None and len(inputs) == 1 and is_video(output) and not output.is_dir()
    for input_path in inputs:
        name = f"{input_path.stem}_x{scale}{clip.output_suffix()}{input_path.suffix}"
        target = output if single_file else (output or input_path.parent) / name
        if target.absolute() == input_path.absolute():
            report.failed.append((input_path, f"refusing to overwrite input {input_path}"))
            continue
        try:
            written = upscale_video(
                input_path, target, worker, overwrite=overwrite, segment_frames=segment_frames, clip=clip
            )
        except (SuperresError, OSError) as error:
            from superres.batch.journal import describe_failure

            reason = describe_failure(input_path, error)
            logger.warning("failed: %s", reason)
            report.failed.append((input_path, reason))
            continue
        if written:
            report.written.append(target)
        else:
            report.skipped.append((input_path, f"{target} exists (use --overwrite to replace it)"))
    return report


__all__ = ["DEFAULT_SEGMENT_FRAMES", "VIDEO_EXTENSIONS", "Clip", "is_video", "upscale_video", "upscale_videos"]
