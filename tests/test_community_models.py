"""Community model files: spandrel's architectures built small at test time, saved as the community
saves them, and run through superres' loader, CLI, API, tiling, batches and video.

Each model is a random-weight instance of one of spandrel's own architecture classes (no downloads).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from superres.cli import main
from superres.errors import ConfigError, ModelError
from superres.images import read_image, write_image
from superres.inference.backends import make_backend
from superres.inference.pipeline import upscale_image
from superres.inference.tiling import tiled_forward
from superres.zoo import community

try:
    spandrel = community.import_spandrel()
except ModelError as missing:
    # `make install` installs it, so CI (CI=true) must run these tests rather than skip them.
    if os.environ.get("CI"):
        raise
    pytest.skip(str(missing), allow_module_level=True)


def _architectures() -> dict[str, tuple[Callable[[], torch.nn.Module], str, int]]:
    """name -> (a tiny random network, spandrel's architecture name, scale)."""
    from spandrel.architectures import DAT, ESRGAN, HAT, SPAN, Compact, DRUNet, SwinIR

    return {
        "esrgan": (lambda: ESRGAN.ESRGAN(num_filters=8, num_blocks=1, scale=2), "ESRGAN", 2),
        "compact": (lambda: Compact.Compact(num_feat=8, num_conv=2, upscale=2), "RealESRGAN Compact", 2),
        "swinir": (
            lambda: SwinIR.SwinIR(
                img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=4, upscale=2,
                upsampler="pixelshuffledirect",
            ),
            "SwinIR", 2,
        ),
        "span": (lambda: SPAN.SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2), "SPAN", 2),
        "dat": (
            lambda: DAT.DAT(
                img_size=16, embed_dim=16, depth=[2], num_heads=[2], split_size=[2, 4], upscale=2
            ),
            "DAT", 2,
        ),
        "hat": (
            lambda: HAT.HAT(
                img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=4, compress_ratio=3,
                squeeze_factor=4, num_feat=8, upscale=2, upsampler="pixelshuffle",
            ),
            "HAT", 2,
        ),
        # x1 restoration: a U-Net (grid of 8) fed a generated noise-level plane by spandrel's call.
        "drunet": (lambda: DRUNet.DRUNet(in_nc=4, out_nc=3, nc=[8, 16, 32, 64], nb=2), "DRUNet", 1),
    }


ARCHITECTURES = ["esrgan", "compact", "swinir", "span", "dat", "drunet"]  # "hat": the one-size export only


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measurements go to a folder of this test session, not the user's cache."""
    monkeypatch.setenv("SUPERRES_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "superres-cache"))


def state_dict_of(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    network = _architectures()[name][0]().eval()
    return {key: value.detach().clone().contiguous() for key, value in network.state_dict().items()}


def save_model_file(folder: Path, name: str, form: str = "pth") -> Path:
    """`name`'s tiny network as the community ships it: a flat `.pth`, a `.pth` with the weights
    under "params_ema" (BasicSR's training output), or a `.safetensors`."""
    state = state_dict_of(name)
    if form == "safetensors":
        from safetensors.torch import save_file

        path = folder / f"{name}.safetensors"
        save_file(state, str(path))
    elif form == "nested":
        path = folder / f"{name}-ema.pth"
        torch.save({"params_ema": state, "iter": 1000}, path)
    else:
        path = folder / f"{name}.pth"
        torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("community")
    return {name: save_model_file(folder, name) for name in ARCHITECTURES}


def smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random walks along the rows: texture without the noise a random-weight network amplifies."""
    steps = np.random.default_rng(seed).normal(0, 6, (height, width, 3))
    return np.clip(np.cumsum(steps, axis=1) + 128, 0, 255).astype(np.uint8)


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


def test_spandrel_and_all_its_architectures_import_with_the_cpu_torch() -> None:
    module = community.import_spandrel()
    names = {support.architecture.name for support in module.MAIN_REGISTRY.architectures()}
    assert len(names) >= 40 and {"ESRGAN", "SwinIR", "SPAN", "DAT", "DRUNet", "HAT"} <= names
    # Where torchvision is absent, its stand-in served the import and was taken away again.
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        assert "torchvision" not in sys.modules


@pytest.mark.parametrize("form", ["pth", "nested", "safetensors"])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_the_architecture_scale_and_channels_are_detected(tmp_path: Path, name: str, form: str) -> None:
    path = save_model_file(tmp_path, name, form)
    assert community.is_community_file(path)
    model = community.load_community_model(path, measured=False)
    _, architecture, scale = _architectures()[name]
    assert model.info.name == architecture and model.scale == scale and model.info.scales == (scale,)
    assert model.info.channels == "RGB" and model.model_kwargs == {}
    lr = torch.rand(1, 3, 20, 24)
    with torch.inference_mode():
        assert model(lr).shape == (1, 3, 20 * scale, 24 * scale)


# The measured ones cost 5-10 s each on a loaded 2-core machine; compact and swinir stay in test-fast.
_HEAVY = {"esrgan", "span", "dat", "drunet"}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.slow) if name in _HEAVY else name for name in ARCHITECTURES]
)
def test_the_output_is_spandrels_and_tiles_equal_the_whole_image(
    model_files: dict[str, Path], name: str
) -> None:
    path = model_files[name]
    model = community.load_community_model(path)
    reference = spandrel.ModelLoader().load_from_file(path)
    overlap, align = model.info.receptive_field_for(model.scale), model.info.tile_alignment
    assert 0 < overlap <= community.REACH_LIMIT
    assert align == {"swinir": 4, "dat": 4, "drunet": 8}.get(name, 1)
    # An image two tiles plus their context across, so that the tiles' windows really cut it.
    tile = 16 if overlap < 24 else 24
    side = 2 * tile + 2 * overlap + align
    assert tile + 2 * overlap + align - 1 < side
    lr = as_tensor(smooth_image(side + 3, side))
    with torch.inference_mode():
        expected = reference(lr.clone())
        ours = model(lr)
    assert (ours - expected).abs().max() <= 1e-4
    fast = make_backend(model, "torch", "cpu").forward(lr).clamp(0, 1)  # the fast CPU path's copy
    assert (fast - expected).abs().max() <= 1e-4
    # Tiles with the measured context, on the measured grid, as the pipeline runs them.
    with torch.inference_mode():
        tiled = tiled_forward(model, lr, model.scale, tile=tile, overlap=overlap, align=align)
    assert (tiled - ours).abs().max() <= 1e-4  # (the pipeline's uint8 files: the CLI test below)


def test_a_window_attention_network_needs_the_aligned_tiles(model_files: dict[str, Path]) -> None:
    """Without the card's alignment, SwinIR's tiles see another window grid and differ."""
    model = community.load_community_model(model_files["swinir"])
    lr = as_tensor(smooth_image(44, 40))
    overlap = model.info.receptive_field_for(model.scale)
    with torch.inference_mode():
        whole = model(lr)
        unaligned = tiled_forward(model, lr, model.scale, tile=13, overlap=overlap, align=1)
    assert (unaligned - whole).abs().max() > 1e-3


def test_the_measurement_is_cached_by_the_files_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERRES_CACHE_DIR", str(tmp_path / "cache"))
    path = save_model_file(tmp_path, "compact")
    first = community.load_community_model(path)
    assert community.cache_path().is_file()
    monkeypatch.setattr(community, "measure", lambda *args: pytest.fail("measured twice"))
    again = community.load_community_model(path)
    assert again.info.receptive_field_for(2) == first.info.receptive_field_for(2) == 4  # 2 convs + 2


def test_upscale_from_the_command_line_tiled_and_untiled(
    tmp_path: Path, model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "photo.png"
    write_image(source, smooth_image(40, 50))
    for name in ("compact", "swinir"):
        whole, tiled = tmp_path / f"{name}-whole.png", tmp_path / f"{name}-tiled.png"
        assert main(["upscale", str(source), "--model", str(model_files[name]), "-o", str(whole)]) == 0
        assert main(["upscale", str(source), "--model", str(model_files[name]), "--tile", "16",
                     "-o", str(tiled)]) == 0
        a, b = read_image(whole).pixels.astype(int), read_image(tiled).pixels.astype(int)
        assert a.shape == (80, 100, 3) and np.abs(a - b).max() <= 1
    # A batch of two images and a folder of outputs.
    second = tmp_path / "second.png"
    write_image(second, smooth_image(40, 50, seed=3))
    out = tmp_path / "batch"
    assert main(["upscale", str(source), str(second), "--model", str(model_files["compact"]),
                 "--batch-size", "2", "-o", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["photo_x2.png", "second_x2.png"]


def test_a_video_runs_through_a_community_model(tmp_path: Path, model_files: dict[str, Path]) -> None:
    av = pytest.importorskip("av", reason="the video extra (PyAV)")
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for index in range(3):
            frame = av.VideoFrame.from_ndarray(smooth_image(24, 32, seed=index), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert main(["upscale", str(clip), "--model", str(model_files["compact"]), "--device", "cpu"]) == 0
    with av.open(str(tmp_path / "clip_x2.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)


def test_the_python_api_takes_a_model_file(model_files: dict[str, Path]) -> None:
    import superres

    path = str(model_files["compact"])
    network = superres.load_model(path)
    assert isinstance(network, community.CommunityModel) and network.scale == 2
    pixels = smooth_image(24, 20)
    result = superres.upscale(pixels, model=path)
    assert result.shape == (48, 40, 3)
    assert np.array_equal(result, upscale_image(pixels, network))
    with pytest.raises(ModelError, match="x2 model, not x4"):
        superres.load_model(path, scale=4)


def test_inspect_prints_what_was_detected(
    model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["models", "--inspect", str(model_files["swinir"])]) == 0
    out = capsys.readouterr().out
    for expected in ("architecture", "SwinIR", "scale", "channels", "3 -> 3", "size requirements",
                     "receptive field", "tile alignment", "4 pixels", "parameters"):
        assert expected in out


def test_a_superres_checkpoint_still_goes_to_its_own_loader(tmp_path: Path) -> None:
    from superres.models import create_model
    from superres.zoo.checkpoint import save_checkpoint
    from superres.zoo.names import resolve_model

    path = tmp_path / "espcn.safetensors"
    model = create_model("espcn", 2)
    save_checkpoint(path, model, {"model": "espcn", "scale": 2, "model_kwargs": {}, "channels": "Y"})
    assert not community.is_community_file(path)
    assert not isinstance(resolve_model(str(path), None), community.CommunityModel)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


class _RunsCode:
    """Pickles as a call of os.system: what a malicious model file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "4x-Evil.pth"
    torch.save({"params_ema": {"conv_first.weight": _RunsCode(marker)}}, evil)
    source = tmp_path / "photo.png"
    write_image(source, smooth_image(16, 16))
    assert main(["upscale", str(source), "--model", str(evil), "-o", str(tmp_path / "out.png")]) == 2
    line = one_error_line(capsys)
    assert "refers to" in line and "system" in line and "refused without running it" in line
    assert not marker.exists() and not (tmp_path / "out.png").exists()
    with pytest.raises(ModelError, match="refused without running it"):
        community.read_weights(evil)
    assert not marker.exists()


def test_a_torchscript_archive_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 3)), str(path))
    with pytest.raises(ModelError, match="TorchScript archive"):
        community.load_community_model(path)


def test_a_file_spandrel_does_not_recognise_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = tmp_path / "odd.pth"
    torch.save({"encoder.weight": torch.zeros(4, 3, 3, 3), "encoder.bias": torch.zeros(4)}, odd)
    assert main(["models", "--inspect", str(odd)]) == 2
    assert "no architecture spandrel" in one_error_line(capsys)
    damaged = tmp_path / "cut.safetensors"
    damaged.write_bytes(save_model_file(tmp_path, "compact", "safetensors").read_bytes()[:-100])
    with pytest.raises(ModelError, match="does not fit the file"):
        community.read_weights(damaged)


def test_without_spandrel_one_line_says_what_to_install(
    model_files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setitem(sys.modules, "spandrel", None)  # `import spandrel` now fails as if absent
    source = tmp_path / "photo.png"
    write_image(source, smooth_image(16, 16))
    output = tmp_path / "o.png"
    assert main(["upscale", str(source), "--model", str(model_files["compact"]), "-o", str(output)]) == 2
    line = one_error_line(capsys)
    assert "pip install --no-deps spandrel" in line and "superres[community]" in line


def test_tiles_start_on_the_grid_when_asked() -> None:
    """A grid-anchored function (4x4 block means) tiles exactly only with aligned windows."""

    def blocks(lr: torch.Tensor) -> torch.Tensor:
        height, width = lr.shape[-2:]
        padded = torch.nn.functional.pad(lr, (0, -width % 4, 0, -height % 4), mode="replicate")
        means = torch.nn.functional.avg_pool2d(padded, 4)
        return torch.nn.functional.interpolate(means, scale_factor=4)[..., :height, :width]

    lr = torch.rand(1, 1, 37, 30)
    whole = blocks(lr)  # each output pixel reads at most 3 pixels away, within its block
    assert torch.allclose(tiled_forward(blocks, lr, 1, tile=9, overlap=3, align=4), whole)
    assert not torch.allclose(tiled_forward(blocks, lr, 1, tile=9, overlap=3, align=1), whole)


def test_the_page_offers_the_files_of_models_dir(tmp_path: Path, model_files: dict[str, Path]) -> None:
    pytest.importorskip("starlette", reason="the serve extra")
    pytest.importorskip("uvicorn", reason="the serve extra")
    import json
    import time
    import urllib.error
    import urllib.request
    from urllib.parse import urlencode

    from superres.serve.app import start_in_thread

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "2x-Tiny.pth").write_bytes(model_files["compact"].read_bytes())
    (folder / "notes.pth").write_bytes(b"not a model")  # left out, logged
    running = start_in_thread(device="cpu", models_dir=folder)

    def call(path: str, body: bytes | None = None) -> tuple[int, dict]:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        request = urllib.request.Request(running.url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    try:
        _, catalogue = call("api/models")
        offered = {card["name"]: card["scales"] for card in catalogue["models"]}
        assert set(offered["2x-Tiny.pth"]) == {"2"} and "notes.pth" not in offered
        assert offered["2x-Tiny.pth"]["2"]["purpose"] == "community"
        source = tmp_path / "photo.png"
        write_image(source, smooth_image(20, 24))
        body = source.read_bytes()
        status, answer = call("api/jobs?" + urlencode({"model": "2x-Tiny.pth", "scale": 4}), body)
        assert status == 400 and "x2 model" in answer["error"]
        status, job = call("api/jobs?" + urlencode({"model": "2x-Tiny.pth", "scale": 2}), body)
        assert status in (200, 201), job
        deadline = time.monotonic() + 60
        while job["state"] not in ("done", "error", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.05)
            job = call(f"api/jobs/{job['id']}")[1]
        assert job["state"] == "done", job
    finally:
        running.stop()


def test_evaluate_scores_a_model_file_as_the_protocol_scores_its_saved_outputs(
    shared_data: Path, tmp_path: Path, model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """An RGB community model on Set5 by the paper protocol (Y, scale px shaved): the reported mean is
    the mean PSNR of the SR files it saved against the modcropped HR."""
    import json

    from superres.evaluation.protocol import Protocol, evaluation_plane
    from superres.ops.metrics import psnr
    from superres.ops.resize import modcrop

    set5 = shared_data / "benchmark" / "Set5" / "HR"
    saved = tmp_path / "sr"
    assert main(["evaluate", str(set5), "--model", str(model_files["compact"]), "--scale", "2",
                 "--save-dir", str(saved), "--format", "json"]) == 0
    reported = json.loads(capsys.readouterr().out)["results"][0]["psnr"]
    scores = []
    for hr_path in sorted(set5.iterdir()):
        hr = modcrop(read_image(hr_path).pixels, 2)
        (sr_path,) = saved.rglob(f"{hr_path.stem}_x2_*.png")
        sr = read_image(sr_path).pixels
        scores.append(psnr(evaluation_plane(sr, Protocol()), evaluation_plane(hr, Protocol()), shave=2))
    assert len(scores) == 5 and reported == pytest.approx(float(np.mean(scores)), abs=1e-3)


def test_onnx_export_where_torch_can_and_one_line_where_it_cannot(
    tmp_path: Path, model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime", reason="the onnx extra")
    from superres.inference.export import onnx_session

    output = tmp_path / "compact.onnx"
    assert main(["export", "--model", str(model_files["compact"]), "-o", str(output)]) == 0
    model = community.load_community_model(model_files["compact"])
    lr = as_tensor(smooth_image(21, 18))
    (sr,) = onnx_session(output.read_bytes()).run(None, {"lr": lr.numpy()})
    with torch.inference_mode():
        assert np.abs(sr - model(lr).numpy()).max() <= 1e-4
    capsys.readouterr()
    # SwinIR computes its window partition sizes in Python: the traced graph runs at one size only.
    assert main(["export", "--model", str(model_files["swinir"]), "-o", str(tmp_path / "s.onnx")]) == 2
    line = one_error_line(capsys)
    assert "does not run on another image size" in line and "--size WxH" in line


@pytest.mark.parametrize("name", ["swinir", pytest.param("hat", marks=pytest.mark.slow)])
def test_a_window_attention_network_exports_for_one_size(
    tmp_path: Path, model_files: dict[str, Path], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """SwinIR and HAT at a fixed LR size (a multiple of the window), batch 1: ONNX Runtime equals
    torch; DAT's graph does not run at all."""
    pytest.importorskip("onnxruntime", reason="the onnx extra")
    from superres.inference.export import onnx_session, read_onnx_metadata

    path = model_files[name] if name in model_files else save_model_file(tmp_path, name)
    output = tmp_path / f"{name}-24x16.onnx"
    assert main(["export", "--model", str(path), "--size", "24x16", "-o", str(output)]) == 0
    assert "for 24x16 LR input only (batch 1)" in capsys.readouterr().out
    assert read_onnx_metadata(output)["fixed_size"] == "16x24"
    model = community.load_community_model(path)
    session = onnx_session(output.read_bytes())
    assert session.get_inputs()[0].shape == [1, 3, 16, 24]
    lr = as_tensor(smooth_image(16, 24, seed=5))
    (sr,) = session.run(None, {"lr": lr.numpy()})
    with torch.inference_mode():
        assert np.abs(sr - model(lr).numpy()).max() <= 1e-4
    if name != "swinir":
        return
    # DAT's graph does not run in ONNX Runtime even at the size it was traced at: one line.
    assert main(["export", "--model", str(model_files["dat"]), "--size", "16x16",
                 "-o", str(tmp_path / "dat.onnx")]) == 2
    assert "ONNX Runtime cannot run the graph torch exported" in one_error_line(capsys)
    assert not (tmp_path / "dat.onnx").exists()


def test_half_is_refused_where_spandrel_says_fp16_is_not_safe(
    tmp_path: Path, model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """SwinIR is fp16-unsafe by spandrel's descriptor: the card carries it, and --half is one line
    before the device is looked at (so here too, without CUDA) and before any image is read."""
    from superres.models import get_model_info

    swinir = community.load_community_model(model_files["swinir"], measured=False)
    compact = community.load_community_model(model_files["compact"], measured=False)
    assert swinir.info.half_safe is False and compact.info.half_safe is True
    assert get_model_info("span").half_safe  # superres' own networks: safe by default
    with pytest.raises(ConfigError, match="SwinIR architecture is not safe in float16"):
        make_backend(swinir, "torch", "cpu", half=True)
    with pytest.raises(ConfigError, match="not safe in float16"):
        upscale_image(smooth_image(16, 16), swinir, half=True, device="cpu")
    with pytest.raises(ConfigError, match="needs a CUDA device"):  # a safe one gets to the device
        make_backend(compact, "torch", "cpu", half=True)
    source, output = tmp_path / "photo.png", tmp_path / "out.png"
    write_image(source, smooth_image(16, 16))
    assert main(["upscale", str(source), "--model", str(model_files["swinir"]), "--half",
                 "-o", str(output)]) == 2
    line = one_error_line(capsys)
    assert "not safe in float16" in line and "without --half" in line and not output.exists()


def _aurasr_file(folder: Path) -> Path:
    """A tiny AuraSR (a GAN U-Net upsampler, x4 by its style network's widths): the architecture
    spandrel 0.4.2 marks bf16-unsafe (and fp16-unsafe)."""
    from spandrel.architectures.AuraSR import AuraSR

    torch.manual_seed(0)
    network = AuraSR(
        dim=2, image_size=None, input_image_size=None, style_network={"dim_in": 8, "dim_out": 32, "depth": 2},
        full_attn=(False,) * 5, self_attn_dim_head=2, attn_depths=(1,) * 5, mid_attn_depth=1,
        num_conv_kernels=2,
    )
    path = folder / "4x-TinyAura.pth"
    torch.save(network.state_dict(), path)
    return path


def test_bf16_is_refused_where_spandrel_says_bf16_is_not_safe(
    tmp_path: Path, model_files: dict[str, Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AuraSR is bf16-unsafe by spandrel's descriptor: the card carries it, --precision bf16 is one
    line before the CPU's instructions are looked at (so on any CPU) and before any image is read,
    and --precision auto runs it in fp32, saying why."""
    from superres.inference import precision

    path = _aurasr_file(tmp_path)
    aura = community.load_community_model(path, measured=False)
    compact = community.load_community_model(model_files["compact"], measured=False)
    assert aura.info.name == "AuraSR" and aura.scale == 4
    assert aura.info.bf16_safe is False and compact.info.bf16_safe is True
    monkeypatch.setattr(precision, "has_native_bf16", lambda: True)  # a CPU that would run bf16
    monkeypatch.setattr(precision, "bf16_convolutions_work", lambda: True)
    with pytest.raises(ConfigError, match="AuraSR architecture is not safe in bfloat16"):
        make_backend(aura, "torch", "cpu", precision="bf16")
    with pytest.raises(ConfigError, match="not safe in bfloat16"):
        upscale_image(smooth_image(16, 16), aura, precision="bf16", device="cpu")
    assert precision.resolve_precision("bf16", compact) == "bf16"  # a safe one gets to the CPU's say
    assert make_backend(aura, "torch", "cpu", precision="auto").precision == "fp32"
    assert "AuraSR architecture is not safe in bf16" in precision.describe_choice("auto", aura)
    # The commands load the file measured; its measurement (a U-Net with attention, seconds) is
    # not what this test is about: a stand-in of a network that sees the whole image.
    whole = community.Measurement(None, None, None, 1000.0, 0.0)
    monkeypatch.setattr(community, "measure", lambda model, device="cpu": whole)
    source, output = tmp_path / "photo.png", tmp_path / "out.png"
    write_image(source, smooth_image(16, 16))
    for command in (["upscale", str(source), "-o", str(output)],
                    ["evaluate", str(_tiny_benchmark(tmp_path / "Set5")), "--scale", "4"]):
        assert main([*command, "--model", str(path), "--precision", "bf16"]) == 2
        line = one_error_line(capsys)
        assert "not safe in bfloat16" in line and "--precision fp32 or auto" in line, line
    assert not output.exists()
    assert main(["upscale", str(source), "--model", str(path), "--precision", "auto", "-o", str(output)]) == 0
    assert read_image(output).pixels.shape == (64, 64, 3)


def _tiny_benchmark(folder: Path) -> Path:
    """Two small HR images: a stand-in for Set5 (the protocol's mean over a folder)."""
    folder.mkdir()
    for seed in range(2):
        write_image(folder / f"image{seed}.png", smooth_image(24, 28, seed))
    return folder


def _x4_compact_file(folder: Path) -> Path:
    """A x4 file, to see that a model file runs at its own scale where none is named."""
    from spandrel.architectures import Compact

    torch.manual_seed(0)
    path = folder / "4x-Tiny.pth"
    torch.save(Compact.Compact(num_feat=8, num_conv=2, upscale=4).state_dict(), path)
    return path


# Its inputs are already tiny (12x16 LR, two 24x28 images): the time goes to loading, folding and
# MAC-counting the nine shipped x2 and x4 models and measuring three files (some 3 s of CPU, many
# more on a loaded machine), which smaller inputs do not change.
@pytest.mark.slow
def test_the_frontier_places_a_model_file_beside_the_shipped_models(
    tmp_path: Path, model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from superres.evaluation.protocol import evaluate_model
    from superres.lab.frontier import Timing, measure_frontier

    hr = _tiny_benchmark(tmp_path / "Set5")
    tiny = Timing(lr_size=(12, 16), min_calls=1, min_seconds=0.0, rounds=1)
    points = measure_frontier([2], hr, tiny, models=[str(model_files["compact"])])
    (point,) = [point for point in points if point.name == "compact.pth"]
    assert {"bicubic", "span60"} <= {point.name for point in points}  # timed in the same rounds
    assert point.scale == 2 and point.architecture == "RealESRGAN Compact" and point.set14_psnr is None
    assert point.output_mp_per_s > 0 and point.relative_to_bicubic > 0 and point.macs_per_pixel > 0
    network = community.load_community_model(model_files["compact"])
    assert point.set5_psnr == pytest.approx(evaluate_model(network, hr, 2).psnr)
    # Its own scale, added to those asked for; no Set5 folder: no PSNR (a speed-only point).
    x4 = _x4_compact_file(tmp_path)
    points = measure_frontier([], None, tiny, models=[str(x4)])
    (point,) = [point for point in points if point.name == x4.name]
    assert point.scale == 4 and point.set5_psnr is None
    # The command line takes --model; a x1 restoration model is one line, before any timing.
    code = main(["frontier", "--quick", "--scales", "2", "--model", str(model_files["drunet"]),
                 "-o", str(tmp_path / "f.png")])
    assert code == 2 and "does not upscale" in one_error_line(capsys)


def test_bench_pipeline_runs_a_model_file_at_its_own_scale(tmp_path: Path) -> None:
    from superres.lab.bench_pipeline import measure_pipeline, run_once

    x4 = _x4_compact_file(tmp_path)
    result = measure_pipeline(20, 16, model=str(x4), scale=None, precisions=("fp32",), runner=run_once)
    assert result["model"] == str(x4) and result["scale"] == 4 and result["output_size"] == [64, 80]
    assert [run["computed_in"] for run in result["runs"]] == ["fp32", "fp32"]  # tiled and one pass


@pytest.mark.slow  # a fresh Python per run, as the command measures
def test_bench_pipeline_command_takes_a_model_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    x4 = _x4_compact_file(tmp_path)
    assert main(["bench", "--pipeline", "20x16", "--model", str(x4), "--precisions", "fp32",
                 "--no-one-pass", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scale"] == 4 and result["runs"][0]["computed_in"] == "fp32"

