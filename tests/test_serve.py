"""`superres serve`: the JSON API over a real loopback socket, its limits and errors, and the page
driven in headless Chromium (the model menu per scale, upload, progress and its ETA, the before/after
divider dragged on the image, fit and zoom, download, download all, run again, output format, a bad
file, no request leaving the machine). The browser tests skip, saying why, where Chromium or
selenium is missing; they write screenshots (SUPERRES_SCREENSHOT_DIR, else the test's tmp folder).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
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
    # Admitted by its header: its size is known, its mode once the worker has decoded it.
    assert status == 201 and job["name"] == "deep.png" and job["input"]["width"] == 22
    job = wait_for(server, job["id"])
    assert job["state"] == "done", job
    assert job["input"] == {"width": 22, "height": 18, "mode": "RGBA, 16-bit", "icc": True}
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


def test_models_are_offered_by_purpose_and_only_at_their_scales(server: str) -> None:
    from superres.api import parse_model

    catalogue = json.loads(request(f"{server}api/models")[2])
    cards = {card["name"]: card["scales"] for card in catalogue["models"]}
    purposes = {
        name: {scale: card["purpose"] for scale, card in scales.items()} for name, scales in cards.items()
    }
    assert purposes["default"] == {"2": "default", "3": "default", "4": "default"}
    assert set(purposes["fast"].values()) == {"fast"}
    assert set(purposes["bicubic"].values()) == {"interpolation"}
    assert purposes["real"] == {"2": "real-world", "4": "real-world"}  # no x3 real-world model ships
    assert purposes["span-gan"] == {"4": "perceptual"}
    assert set(purposes["srcnn"].values()) == set(purposes["red20"].values()) == {"seed"}
    assert {purpose for scales in purposes.values() for purpose in scales.values()} <= {
        "default", "fast", "real-world", "perceptual", "other", "seed", "interpolation"
    }
    for name, scales in cards.items():  # listed at a scale: it runs there
        for scale, card in scales.items():
            assert parse_model(name, int(scale)).name == card["resolves_to"]
    # A model the scale lacks is refused by the server too (the page never offers it).
    status, answer = submit(server, b"", model="span-gan", scale=2)
    assert status == 400 and "ships for x4, not x2" in answer["error"]
    formats_offered = {fmt["value"]: fmt for fmt in catalogue["output_formats"]}
    assert {"png", "jpg", "webp"} <= set(formats_offered) and "gif" not in formats_offered
    assert formats_offered["jpg"]["quality"] and not formats_offered["png"]["quality"]


def test_before_is_the_bicubic_enlargement_and_the_output_format_is_the_one_asked(
    server: str, tmp_path: Path
) -> None:
    pixels = smooth_image(20, 26, 4)
    pixels[:, :8, 3] = 0  # a transparent band: JPEG has no alpha
    body = png_bytes(tmp_path, pixels)
    _, job = submit(server, body, model="fast", scale=3, name="band.png")
    job = wait_for(server, job["id"])
    status, headers, before = request(f"{server}api/jobs/{job['id']}/before")
    assert status == 200 and headers["content-type"] == "image/png"
    (tmp_path / "before.png").write_bytes(before)
    shown = read_image(tmp_path / "before.png").pixels
    bicubic = upscale_pixels(pixels, "bicubic", scale=3, device="cpu")
    nearest = pixels.repeat(3, axis=0).repeat(3, axis=1)
    np.testing.assert_array_equal(shown, bicubic)  # what users compare an upscaler against
    assert not np.array_equal(shown, nearest)
    # JPEG at quality 60: the result, its name, its type and the note on the alpha it lost.
    _, job = submit(server, body, model="fast", scale=3, name="band.png", format="jpg", quality=60)
    job = wait_for(server, job["id"])
    assert job["state"] == "done" and job["format"] == "JPEG", job
    out = job["output"]
    assert out["download_name"] == "band_x3.jpg" and out["mode"] == "RGB, 8-bit" and out["format"] == "JPEG"
    assert out["notes"] == ["JPEG has no transparency: transparent areas composited on white"]
    status, headers, result = request(f"{server}api/jobs/{job['id']}/result")
    assert headers["content-type"] == "image/jpeg" and result[:3] == b"\xff\xd8\xff"
    assert 'filename="band_x3.jpg"' in headers["content-disposition"]
    (tmp_path / "r.jpg").write_bytes(result)
    flattened = read_image(tmp_path / "r.jpg").pixels
    assert flattened.shape == (60, 78, 3) and flattened[:, :20].min() > 235  # white where it was clear
    # Both sides of the comparison go through the same format.
    assert request(f"{server}api/jobs/{job['id']}/before")[1]["content-type"] == "image/jpeg"
    # WebP; a 16-bit image into it is rounded to 8 bits, and says so.
    deep = png_bytes(tmp_path, smooth_image(12, 12, 3, np.uint16))
    _, job = submit(server, deep, model="bicubic", format="webp")
    job = wait_for(server, job["id"])
    assert job["output"]["download_name"].endswith("_x2.webp") and job["output"]["mode"] == "RGB, 8-bit"
    assert "16-bit result rounded to 8" in job["output"]["notes"][0]
    assert request(f"{server}api/jobs/{job['id']}/result")[2][8:12] == b"WEBP"


def test_an_output_width_downscales_the_result_and_the_before_side(server: str, tmp_path: Path) -> None:
    body = png_bytes(tmp_path, smooth_image(20, 26, 3))
    _, job = submit(server, body, model="bicubic", scale=3, width=60)
    job = wait_for(server, job["id"])
    assert job["state"] == "done" and (job["output"]["width"], job["output"]["height"]) == (60, 46), job
    (tmp_path / "before.png").write_bytes(request(f"{server}api/jobs/{job['id']}/before")[2])
    assert read_image(tmp_path / "before.png").pixels.shape == (46, 60, 3)  # the same size, to compare
    _, job = submit(server, body, model="bicubic", scale=2, width=200)  # beyond x2: one line
    job = wait_for(server, job["id"])
    assert job["state"] == "error" and "more than the model's x2" in job["error"]
    assert submit(server, body, model="bicubic", width="wide")[0] == 400


def test_download_all_is_one_zip_of_finished_results(server: str, tmp_path: Path) -> None:
    body = png_bytes(tmp_path, smooth_image(10, 14, 3))
    ids = []
    for options in ({}, {}, {"format": "webp"}):
        _, job = submit(server, body, model="bicubic", name="../../z.png", **options)
        assert wait_for(server, job["id"])["state"] == "done"
        ids.append(job["id"])
    status, headers, answer = request(f"{server}api/jobs/zip?ids={','.join(ids)}")
    assert status == 200 and headers["content-type"] == "application/zip"
    assert 'filename="superres-results.zip"' in headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(answer)) as archive:
        # Each under its download name (numbered where two share one), no folders.
        assert archive.namelist() == ["z_x2.png", "z_x2-2.png", "z_x2.webp"]
        for member, job_id in zip(archive.namelist(), ids):
            assert archive.read(member) == request(f"{server}api/jobs/{job_id}/result")[2]
    # Only finished jobs, only known ones; the zip itself does not stay on the server.
    _, slow = submit(server, png_bytes(tmp_path, smooth_image(200, 200, 3)), model="red20", tile=16)
    for query, code, message in (
        ("", 400, "name the finished jobs"),
        (f"{ids[0]},nonsense", 404, "no such job"),
        (f"{ids[0]},{slow['id']}", 409, "the result is not ready"),
    ):
        status, _, answer = request(f"{server}api/jobs/zip?ids={query}")
        assert status == code and message in json.loads(answer)["error"], (query, answer)
    request(f"{server}api/jobs/{slow['id']}/cancel", b"")
    wait_for(server, slow["id"])
    folders = list(Path(tempfile.gettempdir()).glob(f"superres-serve-{os.getpid()}-*"))
    wait_until(lambda: not [path for folder in folders for path in folder.glob("*.zip")], 5, "zip removal")


def test_progress_has_an_eta(tmp_path: Path) -> None:
    from superres.serve.jobs import Job, JobQueue

    jobs = JobQueue("cpu")
    try:
        job = Job("a.png", "PNG", ".png", tmp_path, "bicubic", 2, False, "auto", {})
        jobs.submit(job)  # the worker fails it at once (no upload); the state below is set by hand
        wait_until(lambda: job.state == "error", 10, "the worker")
        job.state, job.progress, job.started = "running", 0.25, time.monotonic() - 3.0
        snapshot = jobs.snapshot(job)
        assert 8.5 <= snapshot["eta_s"] <= 9.5 and 2.9 <= snapshot["elapsed_s"] <= 3.5  # 3 s for 25%
        # Before the first tile: from the speed this server measured, less the time taken.
        job.progress, job.estimate_s = 0.0, 10.0
        assert 6.5 <= jobs.snapshot(job)["eta_s"] <= 7.1
        job.estimate_s = None
        assert jobs.snapshot(job)["eta_s"] is None
        job.state = "done"
        assert jobs.snapshot(job)["eta_s"] is None and jobs.snapshot(job)["elapsed_s"] is None
    finally:
        jobs.close()


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
        ({"format": "gif"}, None, 400, "format must be one of keep, png, jpg"),
        ({"format": "../../etc/x"}, None, 400, "format must be one of keep, png, jpg"),
        ({"format": "jpg", "quality": "101"}, None, 400, "quality must be a whole number from 1 to 100"),
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


def model_menu(driver) -> dict[str, str]:
    """The page's model menu: {model name: the label of its group}."""
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#model option')]"
        ".map((option) => [option.value, option.parentElement.label]))"
    )


def split_percent(driver) -> float:
    """Where the before/after divider is: the after image's left clip, in percent."""
    clip = driver.find_element("id", "after-clip").value_of_css_property("clip-path")
    return float(re.search(r"([\d.]+)%\)$", clip).group(1))


def screenshot(element, name: str, tmp_path: Path) -> Path:
    shot = Path(os.environ.get("SUPERRES_SCREENSHOT_DIR", tmp_path)) / name
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert element.screenshot(str(shot)) and shot.stat().st_size > 0
    print(f"screenshot: {shot}")
    return shot


def test_page_in_a_real_browser(browser, server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    driver, downloads = browser
    driver.get(server)
    wait_until(lambda: len(Select(driver.find_element(By.ID, "model")).options) > 2, what="the models")
    # The file picker and its hint offer what the server's format table accepts.
    assert driver.find_element(By.ID, "files").get_attribute("accept") == accept_list()
    assert driver.find_element(By.ID, "limits").text.startswith("PNG, JPEG, BMP, TIFF or WebP; up to")

    # The model menu: by purpose, and at each scale exactly the models that exist there.
    catalogue = json.loads(request(f"{server}api/models")[2])
    scale, model = Select(driver.find_element(By.ID, "scale")), Select(driver.find_element(By.ID, "model"))
    for chosen in ("2", "3", "4"):
        scale.select_by_value(chosen)
        menu = model_menu(driver)
        assert set(menu) == {card["name"] for card in catalogue["models"] if chosen in card["scales"]}
        assert menu["default"] == menu["fast"] == "Recommended" and menu["bicubic"] == "No model"
        assert menu["srcnn"] == menu["red20"] == "Seed models (the SRCNN and RED-Net papers)"
    assert menu["real"] == "Photos with JPEG artefacts or noise"
    assert menu["span-gan"] == "Perceptual: sharper detail, less faithful"
    model.select_by_value("span-gan")
    assert model.first_selected_option.text == "Perceptual: sharper textures, invented detail (span-gan)"
    scale.select_by_value("3")  # no span-gan, no real-world model at x3: the menu falls back to default
    assert "span-gan" not in model_menu(driver) and "real" not in model_menu(driver)
    assert model.first_selected_option.get_attribute("value") == "default"
    assert model.first_selected_option.text == "Best quality, automatic (default: span64)"
    # A real-world model shows its denoise slider; a benchmark model does not.
    denoise = driver.find_element(By.ID, "denoise-control")
    scale.select_by_value("4")
    model.select_by_value("real")
    assert denoise.is_displayed()
    scale.select_by_value("2")
    assert model.first_selected_option.get_attribute("value") == "real"  # kept: it exists at x2 too
    model.select_by_value("fast")
    assert "Set5" in driver.find_element(By.ID, "card").text
    assert not denoise.is_displayed()
    assert not driver.find_element(By.ID, "quality-control").is_displayed()  # "same as input"

    # A gray+alpha image: the download must stay gray+alpha, at twice the size.
    source = tmp_path / "leaf.png"
    write_image(source, np.concatenate([smooth_image(30, 40, 1), smooth_image(30, 40, 1)[::-1]], axis=2))
    row = upload(driver, source, 1)
    assert "done" in row.get_attribute("class"), row.text
    assert "fast (espcn), x2: 80x60, gray+alpha, 8-bit, PNG" in row.find_element(By.CLASS_NAME, "status").text
    assert not row.find_element(By.CLASS_NAME, "cancel").is_displayed()
    # The card now knows this server's speed, and estimates the time for the image given.
    wait_until(lambda: "estimate for leaf.png" in driver.find_element(By.ID, "card").text, what="estimate")

    # "Before" is the bicubic enlargement, and says so.
    assert driver.find_element(By.ID, "before-label").text == "bicubic x2"
    assert "bicubic" in driver.find_element(By.ID, "before").get_attribute("alt")
    assert driver.find_element(By.ID, "after-label").text == "fast (espcn)"
    natural_width = "return document.getElementById(arguments[0]).naturalWidth"
    for image in ("before", "after"):
        wait_until(
            lambda image=image: driver.execute_script(natural_width, image) == 80,
            what=f"the {image} image at the output's size",
        )

    # Fit: the whole image in the view, width and height, its shape kept.
    stage, view = driver.find_element(By.ID, "stage"), driver.find_element(By.ID, "stage-scroll")
    room_w, room_h = driver.execute_script(
        "return [arguments[0].clientWidth, arguments[0].clientHeight]", view
    )
    width, height = stage.size["width"], stage.size["height"]
    assert width <= room_w and height <= room_h and (room_w - width <= 1 or room_h - height <= 1)
    assert abs(width / height - 80 / 60) < 0.02 and room_w - width > 20  # not "fit the width"

    # The divider follows a click or a drag on the image itself (one chain: chromedriver forgets a
    # held button between two), and stays where it was let go; then it moves by keys.
    ActionChains(driver).move_to_element_with_offset(stage, -width // 4, 0).click().perform()
    assert abs(split_percent(driver) - 25) < 0.6
    ActionChains(driver).move_to_element_with_offset(stage, -width // 3, 0).click_and_hold().move_by_offset(
        width // 3 + width // 4, 0
    ).release().move_by_offset(-width // 8, 0).perform()
    assert abs(split_percent(driver) - 75) < 0.6
    driver.execute_script("arguments[0].scrollIntoView()", driver.find_element(By.ID, "viewer"))
    screenshot(driver.find_element(By.ID, "viewer"), "superres-serve-compare.png", tmp_path)
    divider = driver.find_element(By.ID, "divider")
    divider.send_keys(Keys.HOME)
    assert split_percent(driver) == 0
    divider.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT)
    assert split_percent(driver) == 2 and divider.get_attribute("aria-valuenow") == "2"
    divider.send_keys(Keys.END)
    assert split_percent(driver) == 100

    # 100%: the image's actual pixels; 400%: four screen pixels each, kept square.
    zoom = Select(driver.find_element(By.ID, "zoom"))
    zoom.select_by_value("1")
    assert (stage.size["width"], stage.size["height"]) == (80, 60)
    zoom.select_by_value("4")
    assert (stage.size["width"], stage.size["height"]) == (320, 240)
    assert driver.find_element(By.ID, "after").value_of_css_property("image-rendering") == "pixelated"

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
    assert not row.find_element(By.CLASS_NAME, "again").is_displayed()
    assert "not a PNG, JPEG, BMP, TIFF or WebP image" in driver.find_element(By.ID, "notice").text
    row = upload(driver, source, 3)
    assert "done" in row.get_attribute("class")
    assert driver.find_element(By.ID, "download-all").text == "download all 2 (zip)"

    # Run again with another model and an output format, without picking the file again.
    model.select_by_value("bicubic")
    Select(driver.find_element(By.ID, "format")).select_by_value("jpg")
    quality = driver.find_element(By.ID, "quality")
    assert quality.is_displayed()
    quality.clear()
    quality.send_keys("70")
    first = driver.find_elements(By.CSS_SELECTOR, "#jobs .job")[0]
    first.find_element(By.CLASS_NAME, "again").click()
    wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#jobs .job")) == 4, what="the rerun's row")
    again = driver.find_elements(By.CSS_SELECTOR, "#jobs .job")[-1]
    wait_until(lambda: again.get_attribute("class").split()[-1] in ("done", "error"), what="the rerun")
    status = again.find_element(By.CLASS_NAME, "status").text
    assert status.startswith("bicubic, x2: 80x60, gray, 8-bit, JPEG"), status
    assert "JPEG has no transparency: transparent areas composited on white" in status
    assert again.find_element(By.CLASS_NAME, "download").get_attribute("download") == "leaf_x2.jpg"

    # Download all: the three finished results in one zip.
    download_all = driver.find_element(By.ID, "download-all")
    assert download_all.is_displayed() and download_all.text == "download all 3 (zip)"
    download_all.click()
    archive_path = wait_until(lambda: list(downloads.glob("superres-results.zip")), what="the zip")[0]
    wait_until(lambda: not list(downloads.glob("*.crdownload")), what="zip download end")
    with zipfile.ZipFile(archive_path) as archive:
        assert archive.namelist() == ["leaf_x2.png", "leaf_x2-2.png", "leaf_x2.jpg"]
        with Image.open(io.BytesIO(archive.read("leaf_x2.jpg"))) as image:
            assert image.format == "JPEG" and image.size == (80, 60)

    # Progress with an ETA, on a slow job; cancelled from its row, it can be run again.
    Select(driver.find_element(By.ID, "format")).select_by_value("keep")
    scale.select_by_value("2")
    model.select_by_value("red20")
    Select(driver.find_element(By.ID, "tile")).select_by_visible_text("128")
    slow = tmp_path / "slow.png"
    write_image(slow, smooth_image(400, 400, 3))
    driver.find_element(By.ID, "files").send_keys(str(slow))
    wait_until(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#jobs .job")) == 5, what="its row")
    row = driver.find_elements(By.CSS_SELECTOR, "#jobs .job")[-1]
    text = wait_until(
        lambda: "left" in (status := row.find_element(By.CLASS_NAME, "status").text) and status,
        timeout=60, what="an ETA",
    )
    assert re.fullmatch(r"red20, x2: \d+%, (under a second|about \d+ s|about \d+ min \d+ s) left", text), text
    row.find_element(By.CLASS_NAME, "cancel").click()
    wait_until(lambda: "cancelled" in row.get_attribute("class"), what="the cancel")
    assert row.find_element(By.CLASS_NAME, "again").is_displayed()
    assert driver.execute_script(
        "return describe({state: 'running', model: 'span60', scale: 2, progress: 0.5, eta_s: 125})"
    ) == "span60, x2: 50%, about 2 min 5 s left"

    # A resolution chart at x4 with the default model: the comparison to look at in the screenshot.
    from superres.images.sample_photo import resolution_chart
    from superres.ops.resize import imresize

    chart = tmp_path / "chart.png"
    write_image(chart, imresize(resolution_chart(384), size=(96, 96)))
    scale.select_by_value("4")
    model.select_by_value("default")
    Select(driver.find_element(By.ID, "tile")).select_by_visible_text("auto")
    row = upload(driver, chart, 6)
    assert "done" in row.get_attribute("class"), row.text
    zoom.select_by_value("fit")
    driver.find_element(By.ID, "divider").send_keys(Keys.HOME, Keys.PAGE_UP * 5)
    assert split_percent(driver) == 50
    viewer = driver.find_element(By.ID, "viewer")
    driver.execute_script("arguments[0].scrollIntoView()", viewer)
    screenshot(viewer, "superres-serve-compare-chart.png", tmp_path)
    driver.execute_script("window.scrollTo(0, 0)")
    screenshot(driver.find_element(By.TAG_NAME, "body"), "superres-serve.png", tmp_path)


def test_a_file_damaged_past_its_header_fails_on_the_page(browser, server: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver, _ = browser
    driver.get(server)
    wait_until(
        lambda: driver.execute_script("return document.getElementById('model').options.length"), what="models"
    )
    # Admitted by its intact header; the worker, the only place it is decoded, finds it cut short.
    cut = tmp_path / "cut.png"
    write_image(cut, np.random.default_rng(0).integers(0, 255, (90, 100, 3), dtype=np.uint8))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    row = upload(driver, cut, 1)
    assert "error" in row.get_attribute("class")
    status = row.find_element(By.CLASS_NAME, "status").text
    assert status.startswith("cut.png: truncated") and "superres-serve-" not in status, status
    assert driver.find_element(By.ID, "notice").text == status  # said once, named once
    assert not row.find_element(By.CLASS_NAME, "download").is_displayed()
    assert not row.find_element(By.CLASS_NAME, "again").is_displayed()


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
