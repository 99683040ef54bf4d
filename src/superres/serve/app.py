"""The web application of `superres serve`: a Starlette app, its JSON API and the page's files.

Routes:
- `GET /`, `GET /static/...`: the page (one HTML, one JS, one CSS file shipped in the package;
  nothing is fetched from anywhere else, and the Content-Security-Policy forbids it);
- `GET /api/models`: the models the page offers (the aliases, the shipped models and the
  weight-free ones, and with `--models-dir` the model files in that folder by file name, never a
  path) with their card: Set5/Set14 scores, MACs per pixel, and the
  speed measured by this server's last run, and per scale its `purpose` (the page's menu groups);
  and the upload formats (the file picker's `accept`) and the output formats;
- `POST /api/jobs?model=&scale=&tile=&self_ensemble=&name=[&denoise=][&format=&quality=]`: the image
  file as the raw request body (no multipart parser: the body is counted as it streams in and
  refused past the limit); `format`: `keep` (the upload's) or a written format's extension (`png`,
  `jpg`, `webp`, ...), `quality` 1..100 for JPEG and WebP;
- `GET /api/jobs/{id}` (with `eta_s` while running), `POST /api/jobs/{id}/cancel`,
  `GET /api/jobs/{id}/{before,after,result}` ("before": the input enlarged by bicubic interpolation);
- `GET /api/jobs/zip?ids=ID,ID,...`: the results of finished jobs as one zip, each under its
  download name.

Safe by default: bound to 127.0.0.1 with a Host check (a DNS-rebinding page cannot reach it),
state-changing requests from this page's origin only (`Origin` and `Sec-Fetch-Site` checked, an
upload must be `application/octet-stream`, which no cross-site form or no-cors fetch can send
without a preflight this server never answers),
upload bytes and pixels limited (the decompression-bomb guard of `superres.images`), only content of
a format superres both reads and writes accepted (`superres.images.formats`: the table that also
gives the media types and the page's file picker its `accept` list), files named by the server,
models from the list only. A bad
request gets a 4xx with `{"error": "one line"}`; the server keeps serving.

Resources: uploads stream to disk (never whole in memory) with a read timeout per chunk, so a
stalled client cannot hold the server. A request decodes nothing: an upload is admitted by its
header alone (`superres.images.probe_image`: size, bytes per pixel, so a memory budget in bytes),
at most `MAX_CONCURRENT_CHECKS` headers checked at once, and the job queue's one worker is the only
place an upload is decoded (a file damaged past its header fails there, as a job, with the same
one-line message); after each job the worker returns freed memory to the system. The upload
folder is named after the server's process and swept at the next start if a killed server left it
behind; shutdown waits at most `SHUTDOWN_DEADLINE_S` for open connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from superres.errors import SuperresError
from superres.images import formats
from superres.serve.jobs import DEFAULT_QUALITY, Job, JobQueue, reader_message, upload_formats

#: The scales the page offers (those of the shipped architectures).
SCALES = (2, 3, 4)
#: A body declared up to this many times the upload limit is read and discarded before the 413:
#: answering while the client still sends makes it fail on a broken pipe instead of reading why.
#: Anything larger is refused at once, unread.
DRAINED_OVERSIZE_FACTOR = 4
#: Everything the page loads comes from this server; images also from blob: (local previews).
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; "
     b"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_STATIC = Path(__file__).with_name("static")
#: Uploads whose header is checked at the same time. Nothing is decoded then, but a 16-bit colour
#: PNG's header check reads the whole file to find its chunks (up to the upload limit, twice).
MAX_CONCURRENT_CHECKS = 2
#: Seconds an upload may go without sending a byte before it is dropped (408).
BODY_READ_TIMEOUT_S = 30.0
#: Seconds a stopping server waits for open connections (a stalled upload) before it closes them.
SHUTDOWN_DEADLINE_S = 5
#: What stops `serve_forever` gracefully (uvicorn's own pair).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The upload folder's name: the prefix, then the owning process id (for the sweep at start).
_FOLDER_PREFIX = "superres-serve-"
#: Request methods that change nothing: exempt from the same-origin check.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Most results one zip takes (the queue keeps 50 finished jobs).
MAX_ZIPPED = 100
#: Formats whose files are compressed already: stored in a zip as they are, not deflated again.
_COMPRESSED_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
#: Formats whose writer takes a quality (`superres.images.write_image`).
_QUALITY_FORMATS = frozenset({"JPEG", "WEBP"})

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one upload may be. Pixels beyond `max_pixels` are refused before decoding."""

    max_upload_bytes: int = 64 * 1024**2
    max_pixels: int = 2**24  # 16.7 MP in: a 4896 x 3264 photo
    max_output_pixels: int = 2**27  # 134 MP out: a 16 MP image at x2, 8 MP at x4
    max_tile: int = 4096
    #: Bytes one decoded upload may take, read from its header before decoding: the pixel limit
    #: in 8-bit RGBA, so a 16-bit RGBA image (8 bytes a pixel) is held to half the pixels.
    max_decoded_bytes: int | None = None  # None: 4 x max_pixels

    @property
    def decoded_bytes(self) -> int:
        return self.max_decoded_bytes if self.max_decoded_bytes is not None else 4 * self.max_pixels


class BadRequest(SuperresError):
    """A request the page should explain: carries its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def accept_list() -> str:
    """The page's file picker `accept` attribute: the upload formats' media types and extensions."""
    chosen = upload_formats()
    return ",".join([*(fmt.mime for fmt in chosen), *(ext for fmt in chosen for ext in fmt.extensions)])


def media_type(path: Path) -> str:
    """The Content-Type of a job's file, by its extension (one the server chose)."""
    image_format = formats.for_extension(path.suffix)
    return image_format.mime if image_format is not None else "application/octet-stream"


def sniff_format(head: bytes) -> tuple[str, str]:
    """(format name, extension) from a file's first bytes (`formats.head_length()` or more): the
    content decides, never the uploaded name. `BadRequest` (415) for anything but an upload format."""
    image_format = formats.sniff(head, among=upload_formats())
    if image_format is None:
        raise BadRequest(f"not a {formats.in_words(upload_formats())} image", 415)
    return image_format.name, image_format.extensions[0]


def output_format(text: str | None) -> str | None:
    """The `formats` name of a `format=` value: None for `keep` (the upload's format), else a
    written format named by an extension (`png`, `jpg`, `jpeg`, `webp`, ...); BadRequest otherwise."""
    if not text or text.lower() == "keep":
        return None
    row = formats.for_extension("." + text.lower().lstrip("."))
    if row is None or not row.can_write:
        choices = ", ".join(["keep", *(fmt.extensions[0].lstrip(".") for fmt in formats.writable())])
        raise BadRequest(f"format must be one of {choices}")
    return row.name


def output_quality(text: str | None) -> int:
    """The `quality=` value (JPEG and WebP), 1..100; the writer's default when not given."""
    if not text:
        return DEFAULT_QUALITY
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise BadRequest("quality must be a whole number from 1 to 100")
    return int(text)


def model_purpose(name: str, entry: Any) -> str:
    """What a menu name is for at one scale (`entry`: the shipped weights it resolves to there, or
    None): the aliases `default` and `fast`, then `real-world` (compressed or noisy photos, and the
    0 end of such a model's denoise slider),
    `perceptual` (GAN-trained detail), `seed` (the SRCNN and RED-Net superres started from),
    `other` (the other PSNR-trained models) or `interpolation` (weight-free: bicubic). The roles
    `superres models` prints; the page groups its menu by them."""
    from superres.zoo import ALIASES, SEED_MODELS

    if name in ALIASES:
        return name
    if entry is None:
        return "interpolation"
    if entry.real_world or entry.denoise_base_of:
        return "real-world"
    if entry.perceptual:
        return "perceptual"
    return "seed" if entry.name in SEED_MODELS else "other"


def clean_name(name: str | None) -> str:
    """A display name from the client's file name: no folders, tame characters, short."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .")[:80]
    return base or "image"


def _file_card(path: Path) -> tuple[int, str] | None:
    """(scale, architecture) of the model in a file of `--models-dir`, or None if it holds none."""
    from superres.zoo import community
    from superres.zoo.names import load_choice, parse_model

    try:
        if community.is_community_file(path):
            model = community.load_community_model(path, measured=False)  # measured when first run
        else:
            model = load_choice(parse_model(str(path)))
    except SuperresError as error:
        logger.warning("not offering %s: %s", path, error)
        return None
    return int(model.scale), str(model.info.name)


class _SecurityHeaders:
    """ASGI middleware adding `_SECURITY_HEADERS` to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _SameOrigin:
    """ASGI middleware refusing state-changing requests that come from another origin (403).

    A browser sends `Origin` with every cross-origin POST and `Sec-Fetch-Site` with every request
    (modern browsers); either naming another site is refused. Requests without both (curl, the
    Python API's own clients) are not from a web page and pass.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS:
            headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
            reason = _cross_origin(headers)
            if reason:
                await _error(f"refused: {reason}", 403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _cross_origin(headers: dict[str, str]) -> str | None:
    """Why a request with these headers is not from this server's own page, or None."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request (only this page may change anything)"
    origin = headers.get("origin")
    if origin is not None and origin != f"http://{headers.get('host', '')}":
        return f"a request from {origin} (only this page may change anything)"
    return None


def _sweep_abandoned_folders(parent: Path) -> None:
    """Remove upload folders left by servers that were killed (their process is gone)."""
    for folder in parent.glob(_FOLDER_PREFIX + "*"):
        pid_text = folder.name[len(_FOLDER_PREFIX):].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _process_alive(int(pid_text)):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s, left by a server that was stopped without cleaning up", folder)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class _Server:
    """The state the routes share: limits, device, the job queue and the upload folder."""

    def __init__(self, limits: Limits, device: str, models_dir: Path | None = None) -> None:
        self.limits = limits
        self.device = device
        self.models_dir = models_dir
        # (path, mtime, size) -> (scale, architecture), or None for a file that is not a model.
        self._file_cards: dict[tuple[str, int, int], tuple[int, str] | None] = {}
        self._file_lock = threading.Lock()
        _sweep_abandoned_folders(Path(tempfile.gettempdir()))
        self.folder = Path(tempfile.mkdtemp(prefix=f"{_FOLDER_PREFIX}{os.getpid()}-"))
        self.jobs = JobQueue(device)
        self.checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)

    def close(self) -> None:
        self.jobs.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    # ----------------------------------------------------------------- models

    def model_cards(self) -> list[dict[str, Any]]:
        from superres.api import list_pretrained, model_names, parse_model

        entries = {(entry.name, entry.scale): entry for entry in list_pretrained()}
        # The bicubic scores every card records, by scale: the weight-free model's card.
        bicubic = {scale: entry.card.get("bicubic") for (_, scale), entry in entries.items()}
        cards = []
        for name in model_names():
            per_scale = {}
            for scale in SCALES:
                try:
                    choice = parse_model(name, scale)
                except SuperresError:
                    continue
                entry = entries.get((choice.name, scale))
                metrics = (entry.card.get("metrics") if entry else bicubic.get(scale)) or {}
                per_scale[str(scale)] = {
                    "resolves_to": choice.name,
                    "architecture": entry.architecture if entry else choice.name,
                    "purpose": model_purpose(name, entry),
                    "scores": {key: metrics[key] for key in ("Set5", "Set14") if key in metrics},
                    "macs_per_pixel": entry.macs_per_pixel if entry else None,
                    # A real-world model's denoising strength can be turned (`load_denoised`).
                    "denoise": bool(entry and entry.card.get("denoise_base")),
                    "speed_mp_s": {
                        str(ensemble).lower(): self.jobs.speeds.get((choice.name, scale, ensemble))
                        for ensemble in (False, True)
                    },
                }
            if per_scale:
                cards.append({"name": name, "scales": per_scale})
        for name, (path, scale, architecture) in self.model_files().items():
            cards.append({"name": name, "scales": {str(scale): {
                "resolves_to": name, "architecture": architecture, "purpose": "community",
                "scores": {}, "macs_per_pixel": None, "denoise": False,
                "speed_mp_s": {
                    str(ensemble).lower(): self.jobs.speeds.get((path, scale, ensemble))
                    for ensemble in (False, True)
                },
            }}})
        return cards

    def model_files(self) -> dict[str, tuple[str, int, str]]:
        """The model files in `--models-dir` by file name: (path, scale, architecture). Community
        files (`superres.zoo.community`) and superres checkpoints at a scale the page offers; each
        file is read once per version (size and time), one that is no model is left out (logged)."""
        if self.models_dir is None:
            return {}
        from superres.zoo import community

        try:
            paths = sorted(path for path in self.models_dir.iterdir() if path.is_file())
        except OSError as error:
            logger.warning("cannot list --models-dir %s: %s", self.models_dir, error)
            return {}
        found = {}
        for path in paths:
            if not path.name.lower().endswith(community.SUFFIXES):
                continue
            status = path.stat()
            key = (str(path), status.st_mtime_ns, status.st_size)
            with self._file_lock:
                if key not in self._file_cards:
                    self._file_cards[key] = _file_card(path)
                card = self._file_cards[key]
            if card is not None and card[0] in SCALES:
                found[path.name] = (str(path), *card)
        return found

    # ----------------------------------------------------------------- uploads

    def options(self, request: Request) -> dict[str, Any]:
        """The job's settings from the query string, each checked against what is offered."""
        from superres.api import model_names, parse_model

        query = request.query_params
        model = query.get("model", "default")
        files = self.model_files()
        if model not in model_names() and model not in files:
            raise BadRequest(f"unknown model {model!r}; choose one of {', '.join([*model_names(), *files])}")
        try:
            scale = int(query.get("scale", "2"))
        except ValueError:
            scale = 0
        if scale not in SCALES:
            raise BadRequest(f"scale must be one of {', '.join(map(str, SCALES))}")
        tile_text = query.get("tile", "auto")
        tile: str | int = tile_text
        if tile_text != "auto":
            tile = int(tile_text) if tile_text.isdigit() else 0
            if not 16 <= tile <= self.limits.max_tile:
                raise BadRequest(f"tile must be 'auto' or 16..{self.limits.max_tile} pixels")
        ensemble = query.get("self_ensemble", "false").lower()
        if ensemble not in ("true", "false", "1", "0"):
            raise BadRequest("self_ensemble must be true or false")
        if model in files:  # a file of --models-dir, named by the page; the job gets its path
            path, file_scale, _ = files[model]
            if scale != file_scale:
                raise BadRequest(f"{model} is a x{file_scale} model, not x{scale}")
            model = path
        choice = parse_model(model, scale)  # a shipped model lacking this scale: a ModelError, said so
        if query.get("denoise"):
            model = self._denoised(model, choice.name, scale, query["denoise"])
        return {
            "model": model, "scale": scale, "tile": tile,
            "self_ensemble": ensemble in ("true", "1"), "name": clean_name(query.get("name")),
            "format": output_format(query.get("format")), "quality": output_quality(query.get("quality")),
            "width": self._output_width(query.get("width")),
        }

    def _output_width(self, text: str | None) -> int | None:
        """The page's optional output width: the model's result downscaled to it."""
        if not text:
            return None
        width = int(text) if text.isdigit() else 0
        if not 1 <= width <= self.limits.max_output_pixels:
            raise BadRequest("width must be a whole number of pixels")
        return width

    @staticmethod
    def _denoised(model: str, name: str, scale: int, text: str) -> str:
        """`model` at denoising strength `text` (0..1), for a real-world model only."""
        from superres.api import list_pretrained

        try:
            strength = float(text)
        except ValueError:
            strength = -1.0
        if not 0.0 <= strength <= 1.0:
            raise BadRequest("denoise must be a number from 0 to 1")
        cards = [entry.card for entry in list_pretrained() if (entry.name, entry.scale) == (name, scale)]
        if not cards or not cards[0].get("denoise_base"):
            raise BadRequest(f"model {model!r} has no denoise strength at x{scale}")
        return f"{name}@denoise={strength:g}"

    async def receive_upload(self, request: Request, folder: Path) -> tuple[str, str, Path]:
        """Stream the body into `folder/upload<ext>`, counting bytes; (format, extension, path)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/octet-stream":
            # Not a type a cross-site form or no-cors fetch may send: such requests need a preflight.
            raise BadRequest("send the image as the body with Content-Type: application/octet-stream", 415)
        limit = self.limits.max_upload_bytes
        declared_header = request.headers.get("content-length")
        declared = int(declared_header) if declared_header is not None and declared_header.isdigit() else 0
        too_large = BadRequest(f"file is larger than the limit of {limit // 1024**2} MiB", 413)
        if declared > limit:
            if declared <= DRAINED_OVERSIZE_FACTOR * limit:
                async for _ in _timed(request.stream()):
                    pass
            raise too_large
        partial = folder / "upload.part"
        head, size = b"", 0
        with open(partial, "wb") as sink:  # to disk as it arrives: never the whole body in memory
            async for chunk in _timed(request.stream()):
                size += len(chunk)
                if size > limit:
                    raise too_large
                if len(head) < formats.head_length():
                    head += chunk[: formats.head_length() - len(head)]
                sink.write(chunk)
        if not size:
            raise BadRequest("the file is empty")
        image_format, extension = sniff_format(head)
        path = partial.rename(folder / f"upload{extension}")
        return image_format, extension, path

    def check_header(self, path: Path, name: str, scale: int) -> dict[str, Any]:
        """Admit the upload by its header alone (nothing is decoded: the job's worker does that,
        and a file damaged past its header fails there, as a job): the pixel limit, the decoded
        size in bytes and the output size. The input's description until the worker has read it:
        the size as stored (before any EXIF turn), mode and profile not known yet."""
        from superres.images import probe_image

        try:
            width, height, pixel_bytes = probe_image(path)
        except SuperresError as error:
            # The reader's words are for the command line; here they name the upload by its name.
            raise BadRequest(reader_message(error, path, name)) from None
        pixels = width * height
        if pixels > self.limits.max_pixels:
            raise BadRequest(
                f"{name}: {width}x{height} = {pixels} pixels exceeds the limit of "
                f"{self.limits.max_pixels} (decompression bomb guard; raise it with --max-megapixels)"
            )
        if pixels * pixel_bytes > self.limits.decoded_bytes:
            raise BadRequest(
                f"{name}: {width}x{height} at {pixel_bytes} bytes a pixel needs "
                f"{pixels * pixel_bytes / 2**20:.0f} MiB decoded, over this server's "
                f"{self.limits.decoded_bytes / 2**20:.0f} MiB", 413,
            )
        if pixels * scale * scale > self.limits.max_output_pixels:
            raise BadRequest(
                f"{name}: {width}x{height} at x{scale} exceeds the output limit of "
                f"{self.limits.max_output_pixels} pixels", 413,
            )
        return {"width": width, "height": height, "icc": None, "mode": None}

    async def create_job(self, request: Request) -> Job:
        options = self.options(request)
        folder = Path(tempfile.mkdtemp(dir=self.folder))
        try:
            image_format, extension, path = await self.receive_upload(request, folder)
            async with self.checks:  # a bounded number of header checks at once, whatever the uploads
                info = await run_in_threadpool(self.check_header, path, options["name"], options["scale"])
            job = Job(
                name=options["name"], image_format=image_format, extension=extension,
                folder=folder, model=options["model"], scale=options["scale"],
                self_ensemble=options["self_ensemble"], tile=options["tile"], input_info=info,
                output_format=options["format"], quality=options["quality"], width=options["width"],
                max_pixels=self.limits.max_pixels,
            )
            self.jobs.submit(job)
        except ClientDisconnect:
            shutil.rmtree(folder, ignore_errors=True)
            logger.warning("an upload of %s was abandoned by its client", options["name"])
            raise BadRequest("the upload was abandoned", 400) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return job

    def zip_results(self, ids_text: str) -> Path:
        """A zip (a temporary file in the server's folder) of the results of the finished jobs
        named by `ids_text` ("ID,ID,..."), each under its download name (numbered where two
        share one). Unknown jobs: 404; unfinished ones: 409."""
        ids = list(dict.fromkeys(part for part in ids_text.split(",") if part))
        if not ids:
            raise BadRequest("name the finished jobs to zip: ?ids=ID,ID,...")
        if len(ids) > MAX_ZIPPED:
            raise BadRequest(f"at most {MAX_ZIPPED} results fit in one zip")
        jobs = []
        for job_id in ids:
            job = self.jobs.get(job_id)
            if job is None:
                raise BadRequest("no such job (finished jobs are kept for a while only)", 404)
            if job.state != "done":
                raise BadRequest(f"{job.name}: the result is not ready (the job is {job.state})", 409)
            jobs.append(job)
        handle, name = tempfile.mkstemp(prefix="results-", suffix=".zip", dir=self.folder)
        path, used = Path(name), set()
        try:
            with os.fdopen(handle, "wb") as sink, zipfile.ZipFile(sink, "w") as archive:
                for job in jobs:
                    # Download names are the server's (`clean_name`): no folders, nothing to traverse.
                    stem, suffix = Path(job.download_name).stem, Path(job.download_name).suffix
                    member, number = f"{stem}{suffix}", 1
                    while member in used:
                        number += 1
                        member = f"{stem}-{number}{suffix}"
                    used.add(member)
                    stored = job.result_format in _COMPRESSED_FORMATS
                    method = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                    archive.write(job.result_path, member, compress_type=method)
        except FileNotFoundError:
            path.unlink(missing_ok=True)
            gone = "a result was removed meanwhile (finished jobs are kept for a while only)"
            raise BadRequest(gone, 404) from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path


async def _timed(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The chunks of a request body, each awaited at most `BODY_READ_TIMEOUT_S` (then a 408)."""
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), BODY_READ_TIMEOUT_S)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise BadRequest(f"the upload stalled (no data for {BODY_READ_TIMEOUT_S:g} s)", 408) from None
        yield chunk


def create_app(
    *,
    limits: Limits = Limits(),
    device: str = "auto",
    allowed_hosts: list[str] | None = None,
    models_dir: str | os.PathLike[str] | None = None,
) -> Starlette:
    """The ASGI app. `allowed_hosts`: Host header values accepted (default: loopback names).
    `models_dir`: a folder whose model files (`.pth`, `.safetensors`, ...) the page offers too."""
    from superres.inference.backends import resolve_device

    server = _Server(limits, str(resolve_device(device)), Path(models_dir) if models_dir else None)

    def job_or_404(request: Request) -> Job:
        job = server.jobs.get(request.path_params["job_id"])
        if job is None:
            raise BadRequest("no such job (finished jobs are kept for a while only)", 404)
        return job

    async def index(request: Request) -> Response:
        return FileResponse(_STATIC / "index.html", media_type="text/html")

    async def models(request: Request) -> Response:
        cards = await run_in_threadpool(server.model_cards)
        return JSONResponse({
            "models": cards, "scales": list(SCALES), "limits": asdict(limits), "device": server.device,
            # What the page's file picker offers and its hint says, from the format table.
            "upload": {"accept": accept_list(), "formats": formats.in_words(upload_formats())},
            # The page's output format menu (`format=`), besides "keep".
            "output_formats": [
                {"value": fmt.extensions[0].lstrip("."), "label": fmt.label, "alpha": fmt.alpha,
                 "quality": fmt.name in _QUALITY_FORMATS}
                for fmt in formats.writable()
            ],
        })

    async def submit(request: Request) -> Response:
        job = await server.create_job(request)
        return JSONResponse(server.jobs.snapshot(job), status_code=201)

    async def status(request: Request) -> Response:
        return JSONResponse(server.jobs.snapshot(job_or_404(request)))

    async def zip_results(request: Request) -> Response:
        path = await run_in_threadpool(server.zip_results, request.query_params.get("ids", ""))
        return FileResponse(
            path, media_type="application/zip", filename="superres-results.zip",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    async def cancel(request: Request) -> Response:
        job = job_or_404(request)
        server.jobs.cancel(job)
        return JSONResponse(server.jobs.snapshot(job))

    async def image(request: Request) -> Response:
        job = job_or_404(request)
        which = request.path_params["which"]
        if which not in ("before", "after", "result"):
            raise BadRequest(f"no such resource: {which} (before, after or result)", 404)
        if which != "before" and job.state != "done":
            raise BadRequest(f"the result is not ready (the job is {job.state})", 409)
        if which == "result":
            return FileResponse(
                job.result_path, media_type=media_type(job.result_path),
                filename=job.download_name,
            )
        path = job.preview_path(which)
        if not path.is_file():
            raise BadRequest("the preview is not ready yet", 409)
        return FileResponse(path, media_type=media_type(path))

    async def bad_request(request: Request, error: Exception) -> Response:
        response = _error(str(error), getattr(error, "status", 400))
        if response.status_code == 503:
            response.headers["Retry-After"] = "30"
        return response

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(server.close)

    routes = [
        Route("/", index),
        Route("/api/models", models),
        Route("/api/jobs", submit, methods=["POST"]),
        Route("/api/jobs/zip", zip_results),  # before /api/jobs/{job_id}, which would take "zip"
        Route("/api/jobs/{job_id:str}", status),
        Route("/api/jobs/{job_id:str}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job_id:str}/{which:str}", image),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]
    hosts = allowed_hosts or hosts_for("127.0.0.1")
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(TrustedHostMiddleware, allowed_hosts=hosts),
            Middleware(_SameOrigin),
        ],
        exception_handlers={SuperresError: bad_request},
        lifespan=lifespan,
    )
    app.state.server = server
    return app


# --------------------------------------------------------------------------- running it


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening now, before anyone is told the URL: connections queue until the server runs.
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise SuperresError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def hosts_for(host: str) -> list[str]:
    """The Host headers to accept: loopback names when bound to loopback; otherwise any
    (bound to a LAN address on purpose, the machine's own names are not known here)."""
    return list(dict.fromkeys(["127.0.0.1", "localhost", host])) if _is_loopback(host) else ["*"]


def _uvicorn_server(app: Starlette) -> Any:
    """The uvicorn server both ways of running use: quiet, with the bounded graceful shutdown."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=SHUTDOWN_DEADLINE_S
    ))


class RunningServer:
    """A server on a background thread (tests, notebooks): `.url`, `.app` and `.stop()`."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        self.app = app
        self.url = url_of(sock)
        self._server = _uvicorn_server(app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="superres-serve", daemon=True
        )
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            self._thread.join(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)


def start_in_thread(host: str = "127.0.0.1", port: int = 0, **app_options: Any) -> RunningServer:
    """`create_app` served on a background thread; returns once it accepts connections."""
    sock = bind(host, port)
    return RunningServer(create_app(allowed_hosts=hosts_for(host), **app_options), sock)


def serve_forever(
    host: str = "127.0.0.1", port: int = 8000, *, on_ready: Any = print, **app_options: Any
) -> None:
    """Serve on this thread until Ctrl-C or SIGTERM; `on_ready(url)` once the socket listens.

    The server owns both signals from before the URL is given out: a signal that came before uvicorn
    set up its own handlers would otherwise raise inside the event loop's start, where it can be
    lost (the server then runs on, deaf to it) or skip the cleanup of the upload folder. After a
    graceful stop the signal is raised again, so that the caller's own handling (the exit status of
    `superres serve`) still sees it.
    """
    sock = bind(host, port)
    app = create_app(allowed_hosts=hosts_for(host), **app_options)
    server = _uvicorn_server(app)
    received: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        received.append(signum)
        server.handle_exit(signum, frame)

    own_signals = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS} if own_signals else {}
    try:
        on_ready(url_of(sock))
        server.run(sockets=[sock])
    finally:
        app.state.server.close()  # again after a graceful stop: closing twice is harmless
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for signum in dict.fromkeys(reversed(received)):
        signal.raise_signal(signum)
