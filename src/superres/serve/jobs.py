"""The job queue behind `superres serve`: one worker thread upscales uploaded images in turn.

One worker, not a pool: the machine's cores already go to one network at a time, and the
network (loaded once by `superres.api.runtime_for` and reused) keeps buffers that two runs
must not share. Every job owns a folder inside the server's temporary folder; its files have
names chosen here, never from a request. Finished jobs beyond `keep` are deleted, oldest first.
A running job is cancelled between two tiles (`superres.api.upscale_pixels`' progress hook).

The "before" preview is the input enlarged by bicubic interpolation (the `bicubic` model, MATLAB's
imresize) to the output's size, written in the same format as the "after" one: what people compare
an upscaler against. A nearest-neighbour enlargement would flatter any model. The result is written
in the job's output format (the upload's by default) at its quality; where that format lacks alpha
the image is composited on white, and the snapshot's `output.notes` says so.

The worker is the only place an upload is decoded: the server admits a job from the file's header
alone (`superres.images.probe_image`), so a file damaged past its header (truncated, corrupt data)
fails here, as a job, with the reader's one-line message (`reader_message`), and its folder is
removed at once. The job's `input_info` holds the header's size until the worker has decoded the
file, then the decoded image's description (`describe_input`: upright size, mode, ICC profile).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import queue
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from superres.errors import SuperresError
from superres.images import formats
from superres.images.limits import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from superres.images import LoadedImage
    from superres.images.formats import ImageFormat

logger = logging.getLogger(__name__)

#: The previews of an upload in a format browsers do not show (TIFF): every browser shows PNG,
#: and PNG holds every layout and depth.
PREVIEW_FORMAT = formats.PNG
#: Finished states: a job in one of these never changes again.
FINAL_STATES = frozenset({"done", "error", "cancelled"})
#: JPEG and WebP quality when a request names none (`superres.images.write_image`'s).
DEFAULT_QUALITY = 95


class QueueFull(SuperresError):
    """The queue holds as many waiting jobs as it takes: 503, with Retry-After."""

    status = 503


class JobCancelled(Exception):
    """Raised inside the progress hook to stop a run between two tiles."""


def browser_shows(image_format: str) -> bool:
    """Whether an <img> shows files of `image_format` (a `superres.images.formats` name)."""
    row = formats.by_name(image_format)
    return row is not None and row.browser_shows


def _label(image_format: str) -> str:
    row = formats.by_name(image_format)
    return row.label if row is not None else image_format


def describe_pixels(shape: tuple[int, ...], bits: int) -> str:
    """'RGB, 8-bit' / 'gray+alpha, 16-bit': what a person checks a download by."""
    channels = 1 if len(shape) == 2 else shape[2]
    layout = {1: "gray", 2: "gray+alpha", 3: "RGB", 4: "RGBA"}[channels]
    return f"{layout}, {bits}-bit"


def describe_input(loaded: LoadedImage) -> dict[str, Any]:
    """The page's description of a decoded upload: its upright size, mode and whether it has an
    ICC profile (the snapshot's `input` once the worker has read the file)."""
    height, width = loaded.pixels.shape[:2]
    return {
        "width": int(width), "height": int(height), "icc": loaded.icc_profile is not None,
        "mode": describe_pixels(loaded.pixels.shape, loaded.bit_depth),
    }


def upload_formats() -> tuple[ImageFormat, ...]:
    """The formats an upload may be in: those superres reads and writes (the result is written
    in the upload's format)."""
    return tuple(fmt for fmt in formats.readable() if fmt.can_write)


def reader_message(error: Exception, path: Path, name: str) -> str:
    """The image reader's one-line message about the server's file `path`, in the page's words:
    the file by its own `name`, the server's pixel limit by its option (`--max-megapixels`), the
    formats as those uploaded (a format read but not written, GIF, is refused before decoding)."""
    message = str(error).replace(str(path), name).replace("--max-pixels", "--max-megapixels")
    return message.replace(formats.in_words(formats.readable()), formats.in_words(upload_formats()))


def fit_to_format(pixels: np.ndarray, image_format: str) -> tuple[np.ndarray, list[str]]:
    """`pixels` as a file of `image_format` holds them, and notes on what changed: alpha
    composited on white, 16 bits rounded to 8 (as `superres.images.write_image` would, without
    its log line: the job's `output.notes` say it to the person who asked)."""
    from superres.images import flatten_for_format

    row = formats.by_name(image_format)
    if row is None:
        return pixels, []
    pixels, lost = flatten_for_format(pixels, row)
    words = {
        "alpha": f"{row.label} has no transparency: transparent areas composited on white",
        "16-bit": f"{row.label} holds 8 bits per sample: the 16-bit result rounded to 8",
    }
    return pixels, [words[item] for item in lost]


@dataclass
class Job:
    """One uploaded image and what became of it. `folder` holds `upload<ext>` and the results."""

    name: str  # the uploaded file's name, cleaned; for display and the download name only
    image_format: str  # a `superres.images.formats` name (PNG, JPEG, ...), from the file's content
    extension: str
    folder: Path
    model: str
    scale: int
    self_ensemble: bool
    tile: str | int | None
    input_info: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"  # queued | running | done | error | cancelled
    progress: float = 0.0
    error: str | None = None
    model_label: str | None = None
    output_info: dict[str, Any] | None = None
    seconds: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    output_format: str | None = None  # a writable `formats` name; None: the upload's
    quality: int = DEFAULT_QUALITY  # JPEG and WebP
    width: int | None = None  # the output's width, reached by downscaling; None: the scale's
    started: float | None = None  # time.monotonic() when the network started on it
    estimate_s: float | None = None  # the run's expected seconds, from this server's last speed
    max_pixels: int = DEFAULT_MAX_PIXELS  # the decompression bomb guard when the worker decodes

    @property
    def upload_path(self) -> Path:
        return self.folder / f"upload{self.extension}"

    @property
    def result_format(self) -> str:
        return self.output_format or self.image_format

    @property
    def result_extension(self) -> str:
        row = formats.by_name(self.result_format)
        return row.extensions[0] if row is not None else self.extension

    @property
    def result_path(self) -> Path:
        return self.folder / f"result{self.result_extension}"

    def preview_path(self, which: str) -> Path:
        """The file an <img> shows for "before" (the bicubic enlargement) or "after"."""
        shown = browser_shows(self.result_format)
        if which == "after" and shown:
            return self.result_path
        return self.folder / f"{which}{self.result_extension if shown else PREVIEW_FORMAT.extensions[0]}"

    @property
    def download_name(self) -> str:
        return f"{Path(self.name).stem}_x{self.scale}{self.result_extension}"

    def eta_seconds(self, now: float) -> float | None:
        """Seconds left while running: from the time taken and the share of tiles done, or,
        before the first tile, from the speed this server measured for the model."""
        if self.state != "running" or self.started is None:
            return None
        elapsed = now - self.started
        if self.progress > 0:
            return max(0.0, elapsed * (1 - self.progress) / self.progress)
        if self.estimate_s is not None:
            return max(0.0, self.estimate_s - elapsed)
        return None


def release_memory() -> None:
    """Give the memory a finished job freed back to the system.

    A large job's arrays are freed, but glibc keeps the pages in its heap, so without this the
    server's resident size stays at its largest job's (measured: 1-1.5 GB) for as long as it runs.
    """
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): their allocators return memory on their own
        return
    libc.malloc_trim(0)


class JobQueue:
    """Jobs by id, a FIFO of waiting ones and the worker thread that runs them."""

    def __init__(self, device: str, *, keep: int = 50, max_waiting: int = 64) -> None:
        self.device = device
        self.keep = keep
        self.max_waiting = max_waiting
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._waiting: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        #: Output megapixels per second of the last run, by (model name, scale, self-ensemble).
        self.speeds: dict[tuple[str, int, bool], float] = {}
        self._worker = threading.Thread(target=self._work, name="superres-serve-worker", daemon=True)
        self._worker.start()

    # ----------------------------------------------------------------- requests

    def submit(self, job: Job) -> None:
        with self._lock:
            waiting = sum(1 for other in self._jobs.values() if other.state == "queued")
            if waiting >= self.max_waiting:
                raise QueueFull(f"{waiting} images are already waiting; try again later")
            self._jobs[job.id] = job
            self._forget_old()
        self._waiting.put(job)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job: Job) -> None:
        with self._lock:
            job.cancel_requested.set()
            if job.state == "queued":
                job.state = "cancelled"  # the worker skips it

    def snapshot(self, job: Job) -> dict[str, Any]:
        """The job as the page sees it (JSON-ready)."""
        with self._lock:
            position = None
            if job.state == "queued":
                queued = [other.id for other in self._jobs.values() if other.state == "queued"]
                position = queued.index(job.id) + 1
            now = time.monotonic()
            eta = job.eta_seconds(now)
            running = job.state == "running" and job.started is not None
            return {
                "id": job.id,
                "name": job.name,
                "state": job.state,
                "progress": round(job.progress, 4),
                "queue_position": position,
                "error": job.error,
                "model": job.model_label or job.model,
                "scale": job.scale,
                "self_ensemble": job.self_ensemble,
                "input": job.input_info,
                "output": job.output_info,
                "seconds": job.seconds,
                "format": _label(job.result_format),
                # While running: seconds since the network started, and an estimate of those left.
                "elapsed_s": round(now - job.started, 1) if running else None,
                "eta_s": None if eta is None else round(eta, 1),
            }

    def close(self) -> None:
        """Stop the worker after the running job; waiting jobs are dropped."""
        with self._lock:
            for job in self._jobs.values():
                job.cancel_requested.set()
        self._waiting.put(None)
        self._worker.join(timeout=30)

    def _forget_old(self) -> None:
        finished = [job for job in self._jobs.values() if job.state in FINAL_STATES]
        for job in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[job.id]
            shutil.rmtree(job.folder, ignore_errors=True)

    # ----------------------------------------------------------------- the worker

    def _work(self) -> None:
        while (job := self._waiting.get()) is not None:
            with self._lock:
                if job.state != "queued":  # cancelled while waiting
                    continue
                job.state = "running"
            try:
                self._run(job)
            except JobCancelled:
                self._finish(job, "cancelled")
            except SuperresError as error:
                message = reader_message(error, job.upload_path, job.name)
                logger.warning("job %s failed: %s", job.id, message)  # one line, no traceback
                self._finish(job, "error", message)
            except Exception as error:  # a bug: keep serving, say so on the page and in the log
                logger.exception("job %s failed", job.id)
                self._finish(job, "error", f"internal error: {type(error).__name__}: {error}")
            finally:
                release_memory()

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        if state == "error":
            # A failed job has no result, and the page shows previews of finished jobs only:
            # its upload and any preview go now, not when the job is forgotten; before the state
            # says "error", so that whoever sees the failure sees its files gone.
            shutil.rmtree(job.folder, ignore_errors=True)
        with self._lock:
            job.state, job.error = state, error

    def _run(self, job: Job) -> None:
        from superres.api import model_for_image, parse_model, read_image, runtime_for, upscale_pixels
        from superres.images import write_image

        def progress(done: int, total: int) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled
            job.progress = done / total

        progress(0, 1)  # cancelled (or the server stopping) while it waited: nothing is done
        # The only decode of the upload (the server checked its header only): a file damaged past
        # its header fails here, as this job.
        loaded = read_image(job.upload_path, max_pixels=job.max_pixels)
        with self._lock:
            job.input_info = describe_input(loaded)
        self._write_before(job, loaded)
        progress(0, 1)
        # "default" looks at the image: a compressed or noisy one goes to the real-world model.
        job.model = model_for_image(job.model, loaded.pixels, job.scale, job.upload_path)
        job.model_label = parse_model(job.model, job.scale).label
        # Loaded (once per model) before the clock starts: the card's speed is the network's.
        runtime_for(job.model, job.scale, device=self.device, self_ensemble=job.self_ensemble)
        key = (parse_model(job.model, job.scale).name, job.scale, job.self_ensemble)
        height, width = loaded.pixels.shape[:2]
        if self.speeds.get(key):
            job.estimate_s = height * width * job.scale**2 / 1e6 / self.speeds[key]
        started = time.perf_counter()
        job.started = time.monotonic()
        sr = upscale_pixels(
            loaded.pixels, job.model, scale=job.scale, tile=job.tile, device=self.device,
            self_ensemble=job.self_ensemble, progress=progress,
        )
        job.seconds = round(time.perf_counter() - started, 3)
        sr = self._to_width(job, sr, loaded.pixels.shape)
        written, notes = fit_to_format(sr, job.result_format)
        write_image(job.result_path, written, icc_profile=loaded.icc_profile, quality=job.quality)
        if not browser_shows(job.result_format):
            write_image(job.preview_path("after"), sr)
        self.speeds[key] = sr.shape[0] * sr.shape[1] / 1e6 / max(job.seconds, 1e-6)
        job.output_info = {
            "width": int(sr.shape[1]),
            "height": int(sr.shape[0]),
            "mode": describe_pixels(written.shape, 16 if written.dtype == np.uint16 else 8),
            "format": _label(job.result_format),
            "notes": notes,
            "bytes": job.result_path.stat().st_size,
            "download_name": job.download_name,
        }
        with self._lock:
            job.progress = 1.0
            job.state = "done"

    @staticmethod
    def _to_width(job: Job, sr: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
        """`sr` downscaled to the job's width (antialiased bicubic), as `superres upscale --width`."""
        if job.width is None:
            return sr
        from superres.batch.worker import OutputSize, fit_to_size

        return fit_to_size(sr, OutputSize(width=job.width), input_shape, job.scale)

    def _write_before(self, job: Job, loaded: LoadedImage) -> None:
        """The "before" preview: the loaded upload enlarged by the `bicubic` model to the output's
        size, written as the "after" preview is (same format and quality, alpha flattened alike,
        the ICC profile where the after preview is the result file, which keeps it)."""
        from superres.images import write_image
        from superres.inference.pipeline import upscale_image
        from superres.models.bicubic import Bicubic

        enlarged = upscale_image(loaded.pixels, Bicubic(job.scale), tile="auto", device=self.device)
        enlarged = self._to_width(job, enlarged, loaded.pixels.shape)
        enlarged, _ = fit_to_format(enlarged, job.result_format)
        icc_profile = loaded.icc_profile if browser_shows(job.result_format) else None
        write_image(job.preview_path("before"), enlarged, icc_profile=icc_profile, quality=job.quality)
