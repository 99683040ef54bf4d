"""`superres serve` under hostile use: other origins, stalled and abandoned uploads, shutdown,
a killed server's leftovers, many uploads at once, admission by the header alone with decoding in
the job's worker only (issue 33). Loopback only, bounded."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from superres.images import pillow, tiff, write_image  # noqa: E402
from superres.images import png as png_codec  # noqa: E402
from superres.serve import app as serve_app  # noqa: E402
from superres.serve.app import Limits, start_in_thread  # noqa: E402


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def png(
    tmp_path: Path, height: int = 20, width: int = 24, dtype: type = np.uint8, channels: int = 3
) -> bytes:
    rng = np.random.default_rng(height * width)
    pixels = rng.integers(0, np.iinfo(dtype).max, (height, width, channels), dtype=dtype)
    write_image(tmp_path / "in.png", pixels)
    return (tmp_path / "in.png").read_bytes()


@pytest.fixture
def server():
    running = start_in_thread(device="cpu", limits=Limits(max_upload_bytes=4_000_000, max_pixels=300_000))
    yield running
    running.stop()


OCTETS = {"Content-Type": "application/octet-stream"}


def test_cross_origin_posts_are_refused_and_same_origin_ones_pass(server, tmp_path: Path) -> None:
    url = f"{server.url}api/jobs?model=bicubic&scale=2"
    body = png(tmp_path)
    host = server.url.split("/")[2]
    refused = [
        {**OCTETS, "Origin": "http://evil.example"},
        {**OCTETS, "Sec-Fetch-Site": "cross-site"},
        {**OCTETS, "Origin": "null"},  # a sandboxed frame or a file: page
    ]
    for headers in refused:
        status, answer = post(url, body, headers)
        assert status == 403 and "only this page" in answer["error"], (headers, answer)
    # The no-cors form of the issue: text/plain needs no preflight, so it must be refused too.
    assert post(url, body, {"Content-Type": "text/plain"})[0] == 415
    status, job = post(url, body, {**OCTETS, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"})
    assert status == 201, job
    cancel = f"{server.url}api/jobs/{job['id']}/cancel"
    assert post(cancel, b"", {"Origin": "http://evil.example"})[0] == 403


def test_a_stalled_upload_times_out_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(serve_app, "BODY_READ_TIMEOUT_S", 0.5)
    running = start_in_thread(device="cpu")
    try:
        host, port = running.url.split("/")[2].split(":")
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(
                b"POST /api/jobs?model=bicubic&scale=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n" + b"\x89PNG"
            )
            # The head and the body may come in two packets: read until the body's message is in.
            received = b""
            while b"the upload stalled" not in received and (chunk := client.recv(4096)):
                received += chunk
            answer = received.decode("latin-1")
        assert answer.startswith("HTTP/1.1 408") and "the upload stalled" in answer
        assert not list(running.app.state.server.folder.iterdir())  # its folder went with it
    finally:
        running.stop()


def _start_server(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "superres", "serve", "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    line = process.stdout.readline()
    assert "open http://" in line, line + process.stderr.read()
    return process, line.split("open ", 1)[1].split()[0]


def _folders(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("superres-serve-*"))


def test_sigterm_the_moment_the_url_is_printed_stops_cleanly(tmp_path: Path) -> None:
    # Before the server's own handlers were set up, such a signal skipped the upload folder's
    # cleanup, or was lost inside the event loop's start and left the server running.
    process, _ = _start_server(tmp_path)
    try:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 128 + signal.SIGTERM
        assert _folders(tmp_path) == []
    finally:
        process.kill()

def test_sigterm_with_a_stalled_upload_exits_in_time_and_leaves_nothing(tmp_path: Path) -> None:
    process, url = _start_server(tmp_path)
    try:
        host, port = url.split("/")[2].split(":")
        # The URL is printed only once the socket listens: this connects at once.
        client = socket.create_connection((host, int(port)), timeout=5)
        client.sendall(
            b"POST /api/jobs?model=bicubic&scale=2 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n" + b"\x89PNG\r\n"
        )
        time.sleep(0.5)
        assert len(_folders(tmp_path)) == 1
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        assert time.monotonic() - start < serve_app.SHUTDOWN_DEADLINE_S + 10
        assert _folders(tmp_path) == []
        client.close()
    finally:
        process.kill()


def test_a_killed_servers_folder_is_swept_by_the_next_start(tmp_path: Path) -> None:
    process, _ = _start_server(tmp_path)
    process.kill()
    process.wait()
    (left,) = _folders(tmp_path)
    process, _ = _start_server(tmp_path)
    try:
        assert left not in _folders(tmp_path) and len(_folders(tmp_path)) == 1
    finally:
        process.terminate()
        process.wait(timeout=30)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")
def test_fifty_uploads_at_once_stay_in_a_memory_budget_and_the_page_answers(tmp_path: Path) -> None:
    process, url = _start_server(tmp_path)
    try:
        bombs = png(tmp_path, 700, 700, np.uint16, 4)  # 16-bit RGBA under the pixel limit: 3.9 MB decoded
        small = png(tmp_path, 40, 40)
        answers: list[int] = []

        def one(index: int) -> None:
            body = bombs if index % 3 == 0 else small
            answers.append(post(f"{url}api/jobs?model=bicubic&scale=2", body, OCTETS)[0])

        threads = [threading.Thread(target=one, args=(index,)) for index in range(50)]
        for thread in threads:
            thread.start()
        # The page stays responsive while they arrive.
        start = time.monotonic()
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
        assert time.monotonic() - start < 20
        for thread in threads:
            thread.join(timeout=120)
        assert len(answers) == 50 and set(answers) <= {201, 503}, answers
        budget_mb, peak_mb = 1536, _peak_rss_mb(process.pid)
        print(f"peak RSS of the server: {peak_mb:.0f} MB (budget {budget_mb} MB)")
        assert peak_mb < budget_mb
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_uploads_are_admitted_by_decoded_bytes_read_from_the_header(tmp_path: Path, decodes) -> None:
    # 16-bit RGBA is 8 bytes a pixel: under the pixel limit, it can still be over the byte budget.
    running = start_in_thread(device="cpu", limits=Limits(max_pixels=300_000))  # budget: 1.2 MB
    try:
        url = f"{running.url}api/jobs?model=bicubic&scale=2"
        deep = png(tmp_path, 400, 400, np.uint16, 4)  # 160,000 px (under 300,000) x 8 B = 1.28 MB
        status, answer = post(url, deep, OCTETS)
        assert status == 413 and "8 bytes a pixel" in answer["error"] and "MiB decoded" in answer["error"]
        # A decompression bomb: a header declaring 900 MP over a few bytes of data.
        status, answer = post(url, bomb_png(30000, 30000), OCTETS)
        assert status == 400 and "decompression bomb guard" in answer["error"], answer
        assert decodes == []  # both refused from their headers: nothing was decoded
        assert not list(running.app.state.server.folder.iterdir())
        assert post(url, png(tmp_path, 400, 400), OCTETS)[0] == 201  # the same size in 8-bit RGB
    finally:
        running.stop()


def bomb_png(width: int, height: int) -> bytes:
    """A valid 8-bit gray PNG header declaring `width` x `height`, with a few bytes of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of every decode of an image file's pixels, whichever codec's."""
    threads: list[str] = []
    for decoder in (pillow.PillowDecoder, png_codec.PngDecoder, tiff.TiffDecoder):

        def counted(self, _decode=decoder.decode):
            threads.append(threading.current_thread().name)
            return _decode(self)

        monkeypatch.setattr(decoder, "decode", counted)
    return threads


def wait_for(base: str, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{base}api/jobs/{job_id}", timeout=30) as response:
            job = json.loads(response.read())
        if job["state"] in ("done", "error", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_a_request_decodes_nothing_the_jobs_worker_does(server, tmp_path: Path, decodes) -> None:
    url = f"{server.url}api/jobs?model=bicubic&scale=2"
    write_image(tmp_path / "deep.tif", np.full((12, 14, 3), 40000, np.uint16))
    write_image(tmp_path / "photo.jpg", np.full((16, 18, 3), 90, np.uint8))
    uploads = {
        "8-bit PNG (Pillow)": (png(tmp_path, 20, 24), "RGB, 8-bit", (24, 20)),
        "16-bit RGBA PNG (own codec)": (png(tmp_path, 10, 12, np.uint16, 4), "RGBA, 16-bit", (12, 10)),
        "16-bit TIFF (tifffile)": ((tmp_path / "deep.tif").read_bytes(), "RGB, 16-bit", (14, 12)),
        "JPEG (Pillow)": ((tmp_path / "photo.jpg").read_bytes(), "RGB, 8-bit", (18, 16)),
    }
    for what, (body, mode, (width, height)) in uploads.items():
        status, job = post(url, body, OCTETS)
        # The size from the header; what the pixels are, once the worker has decoded them.
        assert status == 201 and (job["input"]["width"], job["input"]["height"]) == (width, height), what
        job = wait_for(server.url, job["id"])
        assert job["state"] == "done" and job["input"]["mode"] == mode, (what, job)
    assert decodes == ["superres-serve-worker"] * len(uploads), decodes


def test_a_file_damaged_past_its_header_fails_as_its_job_in_one_line(
    server, tmp_path: Path, decodes, caplog: pytest.LogCaptureFixture
) -> None:
    whole = png(tmp_path, 90, 100)  # noise: its data is most of the file
    url = f"{server.url}api/jobs?model=bicubic&scale=2&name=cut.png"
    with caplog.at_level(logging.WARNING):
        status, job = post(url, whole[: len(whole) // 2], OCTETS)
        assert status == 201, job  # the header is intact: admitted
        folder = server.app.state.server.jobs.get(job["id"]).folder
        job = wait_for(server.url, job["id"])
    assert job["state"] == "error" and job["error"].startswith("cut.png: truncated"), job
    assert "\n" not in job["error"] and "superres-serve-" not in job["error"]
    assert decodes == ["superres-serve-worker"]
    assert not folder.exists()  # the upload went with its failure
    logged = [record for record in caplog.records if record.name.startswith("superres")]
    assert len(logged) == 1 and logged[0].exc_info is None and job["error"] in logged[0].getMessage()
    for which in ("before", "after", "result"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}api/jobs/{job['id']}/{which}", timeout=30)
        assert refused.value.code == 409
    status, job = post(url, whole, OCTETS)  # the server goes on
    assert status == 201 and wait_for(server.url, job["id"])["state"] == "done"
