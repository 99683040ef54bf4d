"""The web application of `superres serve`: a Starlette app, its JSON API and the page's files.

Routes:
- `GET /`, `GET /static/...`: the page (one HTML, one JS, one CSS file shipped in the package;
  nothing is fetched from anywhere else, and the Content-Security-Policy forbids it);
- `GET /api/models`: the models the page offers (the aliases, the shipped models and the
  weight-free ones, never a path) with their card: Set5/Set14 scores, MACs per pixel, and the
  speed measured by this server's last run; and the upload formats (the file picker's `accept`);
- `POST /api/jobs?model=&scale=&tile=&self_ensemble=&name=[&denoise=]`: the image file as the raw request
  body (no multipart parser: the body is counted as it streams in and refused past the limit);
- `GET /api/jobs/{id}`, `POST /api/jobs/{id}/cancel`, `GET /api/jobs/{id}/{before,after,result}`.

Safe by default: bound to 127.0.0.1 with a Host check (a DNS-rebinding page cannot reach it),
upload bytes and pixels limited (the decompression-bomb guard of `superres.images`), only content of
a format superres both reads and writes accepted (`superres.images.formats`: the table that also
gives the media types and the page's file picker its `accept` list), files named by the server,
models from the list only. A bad
request gets a 4xx with `{"error": "one line"}`; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from superres.errors import SuperresError
from superres.images import formats
from superres.images.formats import ImageFormat
from superres.serve.jobs import Job, JobQueue, describe_pixels

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


@dataclass(frozen=True)
class Limits:
    """What one upload may be. Pixels beyond `max_pixels` are refused before decoding."""

    max_upload_bytes: int = 64 * 1024**2
    max_pixels: int = 2**24  # 16.7 MP in: a 4896 x 3264 photo
    max_output_pixels: int = 2**27  # 134 MP out: a 16 MP image at x2, 8 MP at x4
    max_tile: int = 4096


class BadRequest(SuperresError):
    """A request the page should explain: carries its HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def upload_formats() -> tuple[ImageFormat, ...]:
    """The formats an upload may be in: those superres reads and writes (the result is written
    in the upload's format)."""
    return tuple(fmt for fmt in formats.readable() if fmt.can_write)


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


def clean_name(name: str | None) -> str:
    """A display name from the client's file name: no folders, tame characters, short."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._ -]+", "_", base).strip(" .")[:80]
    return base or "image"


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


class _Server:
    """The state the routes share: limits, device, the job queue and the upload folder."""

    def __init__(self, limits: Limits, device: str) -> None:
        self.limits = limits
        self.device = device
        self.folder = Path(tempfile.mkdtemp(prefix="superres-serve-"))
        self.jobs = JobQueue(device)

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
        return cards

    # ----------------------------------------------------------------- uploads

    def options(self, request: Request) -> dict[str, Any]:
        """The job's settings from the query string, each checked against what is offered."""
        from superres.api import model_names, parse_model

        query = request.query_params
        model = query.get("model", "default")
        if model not in model_names():
            raise BadRequest(f"unknown model {model!r}; choose one of {', '.join(model_names())}")
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
        choice = parse_model(model, scale)  # a shipped model lacking this scale: a ModelError, said so
        if query.get("denoise"):
            model = self._denoised(model, choice.name, scale, query["denoise"])
        return {
            "model": model, "scale": scale, "tile": tile,
            "self_ensemble": ensemble in ("true", "1"), "name": clean_name(query.get("name")),
        }

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
        limit = self.limits.max_upload_bytes
        declared_header = request.headers.get("content-length")
        declared = int(declared_header) if declared_header is not None and declared_header.isdigit() else 0
        if declared > limit:
            if declared <= DRAINED_OVERSIZE_FACTOR * limit:
                async for _ in request.stream():
                    pass
            raise BadRequest(f"file is larger than the limit of {limit // 1024**2} MiB", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(f"file is larger than the limit of {limit // 1024**2} MiB", 413)
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            raise BadRequest("the file is empty")
        image_format, extension = sniff_format(data[: formats.head_length()])
        path = folder / f"upload{extension}"
        await run_in_threadpool(path.write_bytes, data)
        return image_format, extension, path

    def check_image(self, path: Path, name: str, scale: int) -> dict[str, Any]:
        """Decode the whole file now (a truncated or bomb file fails here, at once) and check
        the output size; the description of the input for the page."""
        from superres.api import read_image

        try:
            loaded = read_image(path, max_pixels=self.limits.max_pixels)
        except SuperresError as error:
            # The reader's words are for the command line: here the limit is the server's
            # --max-megapixels, and formats read but not written (GIF) are refused before decoding.
            message = str(error).replace(str(path), name).replace("--max-pixels", "--max-megapixels")
            message = message.replace(
                formats.in_words(formats.readable()), formats.in_words(upload_formats())
            )
            raise BadRequest(message) from None
        height, width = loaded.pixels.shape[:2]
        if height * width * scale * scale > self.limits.max_output_pixels:
            raise BadRequest(
                f"{name}: {width}x{height} at x{scale} exceeds the output limit of "
                f"{self.limits.max_output_pixels} pixels", 413,
            )
        return {
            "width": width, "height": height, "icc": loaded.icc_profile is not None,
            "mode": describe_pixels(loaded.pixels.shape, loaded.bit_depth),
        }

    async def create_job(self, request: Request) -> Job:
        options = self.options(request)
        folder = Path(tempfile.mkdtemp(dir=self.folder))
        try:
            image_format, extension, path = await self.receive_upload(request, folder)
            info = await run_in_threadpool(self.check_image, path, options["name"], options["scale"])
            job = Job(
                name=options["name"], image_format=image_format, extension=extension,
                folder=folder, model=options["model"], scale=options["scale"],
                self_ensemble=options["self_ensemble"], tile=options["tile"], input_info=info,
            )
            self.jobs.submit(job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return job


def create_app(
    *, limits: Limits = Limits(), device: str = "auto", allowed_hosts: list[str] | None = None
) -> Starlette:
    """The ASGI app. `allowed_hosts`: Host header values accepted (default: loopback names)."""
    from superres.inference.backends import resolve_device

    server = _Server(limits, str(resolve_device(device)))

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
        })

    async def submit(request: Request) -> Response:
        job = await server.create_job(request)
        return JSONResponse(server.jobs.snapshot(job), status_code=201)

    async def status(request: Request) -> Response:
        return JSONResponse(server.jobs.snapshot(job_or_404(request)))

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
        Route("/api/jobs/{job_id:str}", status),
        Route("/api/jobs/{job_id:str}/cancel", cancel, methods=["POST"]),
        Route("/api/jobs/{job_id:str}/{which:str}", image),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]
    hosts = allowed_hosts or hosts_for("127.0.0.1")
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=hosts)],
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


class RunningServer:
    """A server on a background thread (tests, notebooks): `.url`, `.app` and `.stop()`."""

    def __init__(self, app: Starlette, sock: socket.socket) -> None:
        import uvicorn

        self.app = app
        self.url = url_of(sock)
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
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
    """Serve on this thread until Ctrl-C; `on_ready(url)` once the socket listens."""
    import uvicorn

    sock = bind(host, port)
    app = create_app(allowed_hosts=hosts_for(host), **app_options)
    on_ready(url_of(sock))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
