"""`superres serve`: the JSON API over a real loopback socket, its limits and errors, and the page
driven in headless Chromium (upload, progress, slider, zoom, download, a bad file, no request
leaving the machine). The browser tests skip, saying why, where Chromium or selenium is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import numpy as np
import pytest
from PIL import Image, ImageCms

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install '.[serve]'")

from superres.api import upscale_pixels  # noqa: E402
from superres.images import read_image, write_image  # noqa: E402
from superres.serve.app import Limits, accept_list, start_in_thread  # noqa: E402

STATIC = Path(__file__).resolve().parents[1] / "src" / "superres" / "serve" / "static"


def smooth_image(height: int, width: int, channels: int, dtype: type = np.uint8) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = [np.sin(0.2 * (c + 1) * y + 0.13 * x + c) for c in range(channels)]
    unit = (np.stack(planes, axis=2) + 1) / 2
    return np.round(unit * np.iinfo(dtype).max).astype(dtype)


def request(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request to the local server; errors are answers too."""
    # As the page sends an upload; a test of other types passes its own Content-Type.
    defaults = {"Content-Type": "application/octet-stream"} if data is not None else {}
    req = urllib.request.Request(
        url, data=data, headers={**defaults, **(headers or {})}, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def submit(base: str, body: bytes, **options: object) -> tuple[int, dict]:
    status, _, answer = request(f"{base}api/jobs?{urlencode(options)}", body)
    return status, json.loads(answer)


def wait_for(base: str, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = json.loads(request(f"{base}api/jobs/{job_id}")[2])
        if job["state"] in ("done", "error", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    running = start_in_thread(
        device="cpu",
        limits=Limits(max_upload_bytes=2_000_000, max_pixels=200_000, max_output_pixels=1_000_000),
    )
    yield running.url
    running.stop()


def png_bytes(tmp_path: Path, pixels: np.ndarray, name: str = "x.png", **options: object) -> bytes:
    write_image(tmp_path / name, pixels, **options)
    return (tmp_path / name).read_bytes()


# --------------------------------------------------------------------------- the API


def test_round_trip_keeps_16_bit_alpha_and_icc(server: str, tmp_path: Path) -> None:
    pixels = smooth_image(18, 22, 4, np.uint16)
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    status, job = submit(
        server, png_bytes(tmp_path, pixels, icc_profile=profile), model="fast", scale=2, name="a/b/deep.png"
    )
    assert status == 201 and job["name"] == "deep.png" and job["input"]["mode"] == "RGBA, 16-bit"
    job = wait_for(server, job["id"])
    assert job["state"] == "done", job
    assert job["output"]["download_name"] == "deep_x2.png" and job["progress"] == 1.0
    status, headers, body = request(f"{server}api/jobs/{job['id']}/result")
    assert status == 200 and 'filename="deep_x2.png"' in headers["content-disposition"]
    (tmp_path / "down.png").write_bytes(body)
    result = read_image(tmp_path / "down.png")
    np.testing.assert_array_equal(result.pixels, upscale_pixels(pixels, "fast", device="cpu"))
    assert result.icc_profile == profile
    # A TIFF is not shown by browsers: its previews are PNG, its download stays TIFF.
    write_image(tmp_path / "gray.tif", smooth_image(10, 12, 1, np.uint16))
    _, job = submit(server, (tmp_path / "gray.tif").read_bytes(), model="bicubic", scale=3)
    job = wait_for(server, job["id"])
    assert job["output"]["mode"] == "gray, 16-bit" and job["output"]["download_name"].endswith(".tif")
    assert request(f"{server}api/jobs/{job['id']}/after")[1]["content-type"] == "image/png"
    # The model card now has a speed measured on this server.
    cards = json.loads(request(f"{server}api/models")[2])["models"]
    bicubic = next(card for card in cards if card["name"] == "bicubic")
    assert bicubic["scales"]["3"]["speed_mp_s"]["false"] > 0


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge canvas, with (too little) data: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("options", "body", "status", "message"),
    [
        ({}, b"GIF89a not accepted", 415, "not a PNG, JPEG, BMP, TIFF or WebP image"),
        ({}, b"", 400, "the file is empty"),
        ({"model": "../weights/red20_x2.safetensors"}, None, 400, "unknown model"),
        ({"model": "srcnn-tutorial"}, None, 400, "unknown model"),
        ({"scale": 5}, None, 400, "scale must be one of 2, 3, 4"),
        ({"tile": "-3"}, None, 400, "tile must be 'auto'"),
        ({"self_ensemble": "maybe"}, None, 400, "self_ensemble must be true or false"),
        ({"model": "bicubic", "denoise": "0.5"}, None, 400, "has no denoise strength"),
        ({"denoise": "2"}, None, 400, "denoise must be a number from 0 to 1"),
        ({}, bomb_png(30000, 30000), 400, "raise it with --max-megapixels"),
        ({}, b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 400, "bad.png"),
        ({}, b"\x89PNG" + b"\0" * 2_000_000, 413, "larger than the limit of 1 MiB"),
        ({"scale": 4}, "big", 413, "exceeds the output limit"),
    ],
)
def test_bad_requests_get_one_line_errors_and_the_server_goes_on(
    server: str, tmp_path: Path, options: dict, body: bytes | None, status: int, message: str
) -> None:
    if body is None:
        body = png_bytes(tmp_path, smooth_image(8, 8, 3))
    elif body == "big":
        body = png_bytes(tmp_path, smooth_image(400, 400, 1))
    got, answer = submit(server, body, name="bad.png", **options)
    assert got == status and message in answer["error"] and "\n" not in answer["error"]
    assert "superres-serve-" not in answer["error"]  # never the server's own file names
    got, job = submit(server, png_bytes(tmp_path, smooth_image(8, 8, 3)), model="bicubic")
    assert got == 201 and wait_for(server, job["id"])["state"] == "done"


def test_jobs_queue_and_cancel(server: str, tmp_path: Path) -> None:
    slow = png_bytes(tmp_path, smooth_image(200, 200, 3))
    _, running = submit(server, slow, model="red20", tile=16, self_ensemble="true")
    _, waiting = submit(server, slow, model="bicubic")
    assert waiting["state"] == "queued" and waiting["queue_position"] >= 1
    request(f"{server}api/jobs/{waiting['id']}/cancel", b"")
    deadline = time.monotonic() + 20
    while json.loads(request(f"{server}api/jobs/{running['id']}")[2])["state"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    request(f"{server}api/jobs/{running['id']}/cancel", b"")
    first, second = wait_for(server, running["id"]), wait_for(server, waiting["id"])
    assert first["state"] == "cancelled" and first["progress"] < 1
    assert second["state"] == "cancelled"
    assert request(f"{server}api/jobs/{running['id']}/result")[0] == 409
    assert request(f"{server}api/jobs/nonsense")[0] == 404
    assert request(f"{server}api/jobs/{running['id']}/anything")[0] == 404  # only before/after/result


def test_a_full_queue_answers_503(tmp_path: Path) -> None:
    from superres.serve.jobs import Job, JobQueue, QueueFull

    jobs = JobQueue("cpu", max_waiting=0)  # its worker is never started: nothing runs
    job = Job("a.png", "PNG", ".png", tmp_path, "bicubic", 2, False, "auto", {})
    with pytest.raises(QueueFull, match="already waiting; try again later") as full:
        jobs.submit(job)
    assert full.value.status == 503


def test_serve_default_pixel_limit_takes_a_4096_square() -> None:
    from superres.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert round(args.max_megapixels * 1e6) >= 4096 * 4096


def test_page_is_self_contained_and_host_checked(server: str) -> None:
    status, headers, page = request(server)
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    assert len(list(STATIC.iterdir())) == 3
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, flags=re.I), path.name
        assert request(f"{server}static/{path.name}")[0] == 200
    assert "image-rendering: pixelated" in (STATIC / "app.css").read_text()
    # A page on another origin that rebinds its name to 127.0.0.1 is refused.
    assert request(server, headers={"Host": "attacker.example"})[0] == 400


def test_cli_registers_serve() -> None:
    from superres.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "0"])
    assert (args.host, args.port) == ("127.0.0.1", 0)


# --------------------------------------------------------------------------- the browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, Path]]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("no Chromium or chromedriver on PATH (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
        # Chromium's own background traffic (updates, sync) is not the page's, but stays off too.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-default-apps",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver path: selenium never looks for (or downloads) one itself.
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(options=options, service=service)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield driver, downloads
    finally:
        driver.quit()


def wait_until(condition, timeout: float = 30, what: str = "condition"):
    """The first truthy value of `condition()`, polled; AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def upload(driver, path: Path, expected_rows: int):
    """Pick `path` in the page's file input; the finished row (done or error) of the upload."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "files").send_keys(str(path))
    wait_until(
        lambda: len(driver.find_elements(By.CSS_SELECTOR, "#jobs .job")) == expected_rows, what="its row"
    )
    row = driver.find_elements(By.CSS_SELECTOR, "#jobs .job")[-1]
    wait_until(
        lambda: row.get_attribute("class").split()[-1] in ("done", "error"), what=f"{path.name} to finish"
    )
    return row


def test_page_in_a_real_browser(browser, server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver, downloads = browser
    driver.get(server)
    wait_until(lambda: len(Select(driver.find_element(By.ID, "model")).options) > 2, what="the models")
    # The file picker and its hint offer what the server's format table accepts.
    assert driver.find_element(By.ID, "files").get_attribute("accept") == accept_list()
    assert driver.find_element(By.ID, "limits").text.startswith("PNG, JPEG, BMP, TIFF or WebP; up to")
    # A real-world model shows its denoise slider; a benchmark model does not.
    denoise = driver.find_element(By.ID, "denoise-control")
    Select(driver.find_element(By.ID, "model")).select_by_value("real")
    Select(driver.find_element(By.ID, "scale")).select_by_value("4")
    assert denoise.is_displayed()
    Select(driver.find_element(By.ID, "scale")).select_by_value("2")
    Select(driver.find_element(By.ID, "model")).select_by_value("fast")
    assert "Set5" in driver.find_element(By.ID, "card").text
    assert not denoise.is_displayed()

    # A gray+alpha image: the download must stay gray+alpha, at twice the size.
    source = tmp_path / "leaf.png"
    write_image(source, np.concatenate([smooth_image(30, 40, 1), smooth_image(30, 40, 1)[::-1]], axis=2))
    row = upload(driver, source, 1)
    assert "done" in row.get_attribute("class"), row.text
    assert "80x60, gray+alpha, 8-bit" in row.find_element(By.CLASS_NAME, "status").text
    assert not row.find_element(By.CLASS_NAME, "cancel").is_displayed()

    slider = driver.find_element(By.ID, "slider")
    clip = driver.find_element(By.ID, "after-clip")
    before = clip.value_of_css_property("clip-path")
    slider.send_keys(Keys.HOME)
    assert clip.value_of_css_property("clip-path") != before and "0%" in clip.value_of_css_property(
        "clip-path"
    )
    Select(driver.find_element(By.ID, "zoom")).select_by_value("4")
    stage = driver.find_element(By.ID, "stage")
    assert stage.size["width"] == 320
    assert driver.find_element(By.ID, "after").value_of_css_property("image-rendering") == "pixelated"
    wait_until(
        lambda: driver.execute_script("return document.getElementById('after').naturalWidth") == 80,
        what="after image",
    )

    row.find_element(By.CLASS_NAME, "download").click()
    saved = wait_until(lambda: [p for p in downloads.glob("leaf_x2.png")], what="the download")[0]
    wait_until(
        lambda: saved.stat().st_size > 0 and not list(downloads.glob("*.crdownload")), what="download end"
    )
    with Image.open(saved) as image:
        assert image.size == (80, 60) and image.mode == "LA"

    # A bad file: a clear error on the page; the next upload still works.
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    row = upload(driver, bad, 2)
    assert "error" in row.get_attribute("class")
    assert not row.find_element(By.CLASS_NAME, "download").is_displayed()
    assert "not a PNG, JPEG, BMP, TIFF or WebP image" in driver.find_element(By.ID, "notice").text
    row = upload(driver, source, 3)
    assert "done" in row.get_attribute("class")

    shot = Path(os.environ.get("SUPERRES_SCREENSHOT_DIR", tmp_path)) / "superres-serve.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 0
    print(f"screenshot: {shot}")


def test_no_request_leaves_the_machine(browser, server: str, tmp_path: Path) -> None:
    driver, _ = browser
    driver.get_log("performance")  # start from an empty log
    driver.get(server)
    write_image(tmp_path / "p.png", smooth_image(16, 16, 3))
    wait_until(
        lambda: driver.execute_script("return document.getElementById('model').options.length"), what="models"
    )
    row = upload(driver, tmp_path / "p.png", 1)
    assert "done" in row.get_attribute("class")
    wait_until(
        lambda: driver.execute_script("return document.getElementById('after').complete"), what="after image"
    )
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            urls.append(message["params"].get("request", message["params"]).get("url"))
    local = urlsplit(server).netloc
    assert len(urls) >= 5  # the page, its script and style, the API calls, the images
    outside = [
        url for url in urls if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).netloc != local
    ]
    assert outside == []
