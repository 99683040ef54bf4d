"""Tests for ONNX export, the CPU fast path (`superres.inference.fast`) and the inference backends."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from superres.cli import main
from superres.errors import ConfigError, ModelError
from superres.inference import backends, fast
from superres.inference.backends import Backend, make_backend
from superres.inference.export import (
    INPUT_NAME,
    MAX_OPSET,
    OUTPUT_NAME,
    export_onnx,
    export_onnx_bytes,
    read_onnx_metadata,
)
from superres.models import create_model, get_model_info, list_models
from superres.models.reparam import has_branches

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4
#: Every registered model at the scales it supports among these: (name, scale) pairs.
MODEL_SCALES = [
    (name, scale) for name in list_models() for scale in (2, 3, 4) if scale in get_model_info(name).scales
]


@pytest.fixture(autouse=True)
def _leave_the_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # retain_freed_memory is process-wide and permanent: keep it out of the shared pytest process.
    monkeypatch.setattr(backends, "retain_freed_memory", lambda: False)


def small_model(name: str, scale: int, **kwargs) -> nn.Module:
    """The card's small test configuration (or `kwargs`), with randomised weights."""
    torch.manual_seed(0)
    model = create_model(name, scale, **(kwargs or get_model_info(name).test_kwargs)).eval()
    # Untrained output layers are near zero; larger weights make the comparison meaningful.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def channels_of(model: nn.Module) -> int:
    return 1 if model.info.channels_for(model.model_kwargs) == "Y" else 3


def run_onnx(data: bytes, lr: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: lr.numpy()})[0]


def reference(model: nn.Module, lr: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(lr).numpy()


# --------------------------------------------------------------------------- export


@pytest.mark.parametrize("name, scale", MODEL_SCALES)
def test_onnx_matches_pytorch_on_odd_sizes_and_batches(name: str, scale: int) -> None:
    # One export (traced at another size), run at several: batch, height and width stay dynamic
    # through pixel shuffles and strided transposed convolutions.
    model = small_model(name, scale)
    data = export_onnx_bytes(model)
    channels = channels_of(model)
    generator = torch.Generator().manual_seed(1)
    for shape in [(1, channels, 13, 17), (2, channels, 20, 11), (1, channels, 2, 5)]:
        lr = torch.rand(*shape, generator=generator)
        actual = run_onnx(data, lr)
        expected = reference(model, lr)
        assert actual.shape == (shape[0], channels, shape[2] * scale, shape[3] * scale)
        assert np.abs(actual - expected).max() <= TOLERANCE, shape


def test_export_writes_a_checked_file_with_metadata_and_dynamic_axes(tmp_path) -> None:
    model = small_model("rednet", 3, num_layers=2, num_features=8)
    path = export_onnx(model, tmp_path / "rednet.onnx")
    assert path == tmp_path / "rednet.onnx"
    assert [item.name for item in tmp_path.iterdir()] == ["rednet.onnx"]  # no temporary left over
    metadata = read_onnx_metadata(path)
    assert metadata["model"] == "rednet"
    assert metadata["scale"] == "3"
    assert metadata["channels"] == "Y"
    assert metadata["num_channels"] == "1"
    assert metadata["model_kwargs"] == '{"num_features": 8, "num_layers": 2}'
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == MAX_OPSET
    input_dims = [dim.dim_param for dim in proto.graph.input[0].type.tensor_type.shape.dim]
    assert input_dims[0] and input_dims[2] and input_dims[3]  # batch, height, width are symbolic
    assert proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 1


def test_transposed_convs_are_exported_as_convs() -> None:
    proto = onnx.load_from_string(export_onnx_bytes(small_model("rednet", 2)))
    operators = {node.op_type for node in proto.graph.node}
    assert "Conv" in operators and "ConvTranspose" not in operators


def test_channels_in_the_metadata_come_from_the_models_own_kwargs() -> None:
    for channels in ("Y", "RGB"):
        model = small_model("edsr", 2, num_blocks=1, num_features=4, channels=channels)
        metadata = read_onnx_metadata(export_onnx_bytes(model))
        assert metadata["channels"] == channels
        assert metadata["num_channels"] == ("1" if channels == "Y" else "3")


def test_re_parameterisable_branches_are_folded_in_the_export() -> None:
    model = small_model("span", 2)
    assert has_branches(model)
    folded = onnx.load_from_string(export_onnx_bytes(model))
    # One Conv per 3x3 convolution of the folded network, not four per branch set.
    convs = sum(node.op_type == "Conv" for node in folded.graph.node)
    plain = small_model("span", 2, **{**get_model_info("span").test_kwargs, "reparam_gain": 0})
    plain_graph = onnx.load_from_string(export_onnx_bytes(plain))
    assert convs == sum(node.op_type == "Conv" for node in plain_graph.graph.node)
    assert has_branches(model)  # the caller's model keeps its training form


def test_export_leaves_the_model_untouched() -> None:
    model = small_model("rednet", 2, num_layers=2, num_features=8)
    before = copy.deepcopy(model.state_dict())
    export_onnx_bytes(model)
    assert all(isinstance(module, nn.ConvTranspose2d) for module in model.decoder)
    assert not any(isinstance(module, fast.ConvTransposeAsConv2d) for module in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("opset", [12, MAX_OPSET + 1, "20"])
def test_unsupported_opsets_are_refused(opset) -> None:
    with pytest.raises(ModelError, match="opset"):
        export_onnx_bytes(small_model("bicubic", 2), opset=opset)


def test_a_module_that_is_not_a_superres_model_is_refused() -> None:
    with pytest.raises(ModelError, match="not a superres model"):
        export_onnx_bytes(nn.Conv2d(1, 1, 3))


def test_export_into_a_missing_folder_fails_cleanly(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(small_model("bicubic", 2), tmp_path / "missing" / "model.onnx")


# --------------------------------------------------------------------------- fast path


@pytest.mark.parametrize(
    "kernel, padding, dilation", [(3, 1, 1), (3, 0, 1), (5, 2, 1), (3, 2, 2), (1, 0, 1)]
)
def test_stride_one_transposed_conv_equals_its_conv_form(kernel: int, padding: int, dilation: int) -> None:
    torch.manual_seed(0)
    deconv = nn.ConvTranspose2d(4, 6, kernel, padding=padding, dilation=dilation)
    replacement = fast.ConvTransposeAsConv2d.sharing_parameters(deconv)
    x = torch.randn(2, 4, 11, 9)
    expected = deconv(x)
    assert torch.allclose(replacement(x), expected, atol=1e-5)
    assert torch.allclose(replacement(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-5)
    assert replacement.weight is deconv.weight and replacement.bias is deconv.bias


def test_strided_transposed_convs_are_not_replaced() -> None:
    model = nn.Sequential(nn.ConvTranspose2d(2, 2, 3, stride=2), nn.ConvTranspose2d(2, 2, 3, padding=1))
    assert fast.replace_transposed_convs(model) == 1
    assert type(model[0]) is nn.ConvTranspose2d
    assert isinstance(model[1], fast.ConvTransposeAsConv2d)


@pytest.mark.parametrize("name", list_models())
def test_fast_inference_model_gives_the_same_outputs(name: str) -> None:
    model = small_model(name, 2)
    lr = torch.rand(2, channels_of(model), 11, 14)
    fast_model = fast.optimize_for_inference(model)
    actual = fast_model(lr)
    assert actual.is_contiguous()
    assert np.abs(actual.numpy() - reference(model, lr)).max() <= 1e-5
    assert fast_model.scale == 2 and fast_model.info == model.info


@pytest.mark.parametrize(
    "name, kwargs, fused_count",
    [("rednet", {"num_layers": 2, "num_features": 8}, 4), ("srcnn", {}, 2), ("srcnn-tutorial", {}, 3)],
)
def test_conv_relu_and_skip_chains_are_fused(name: str, kwargs: dict, fused_count: int) -> None:
    fast_model = fast.optimize_for_inference(small_model(name, 2, **kwargs))
    fused = [m for m in fast_model.model.modules() if isinstance(m, fast.FusedConv2d)]
    if not fast.pointwise_convolutions_work():
        pytest.skip("this torch build has no oneDNN pointwise convolutions")
    assert len(fused) == fused_count
    plain_convs = [m for m in fast_model.model.modules() if type(m) in (nn.Conv2d, nn.ConvTranspose2d)]
    assert not plain_convs or name == "srcnn"


def test_fusion_leaves_untraceable_models_alone() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(self.conv(x)) if x.sum() > 0 else x  # control flow on values

    model = DataDependent()
    assert fast.fuse_conv_activations(model) is model
    bicubic = create_model("bicubic", 2)
    assert fast.fuse_conv_activations(bicubic) is bicubic  # nothing to fuse


def test_training_preparation_keeps_parameters_names_and_gradients() -> None:
    plain = small_model("rednet", 2).train()
    prepared = copy.deepcopy(plain)
    parameters_before = list(prepared.parameters())
    keys_before = list(prepared.state_dict())
    fast.prepare_for_training(prepared)
    assert list(prepared.parameters()) == parameters_before  # same Parameter objects
    assert list(prepared.state_dict()) == keys_before
    lr, hr = torch.rand(2, 1, 9, 10), torch.rand(2, 1, 18, 20)
    F.mse_loss(plain(lr), hr).backward()
    F.mse_loss(prepared(fast.to_channels_last(lr)), fast.to_channels_last(hr)).backward()
    for expected, actual in zip(plain.parameters(), prepared.parameters()):
        assert torch.allclose(actual.grad, expected.grad, atol=1e-6, rtol=1e-4)


def test_retain_freed_memory_reports_a_bool() -> None:
    # Only the query: actually applying it would change the shared pytest process for good.
    assert isinstance(fast.has_native_bf16(), bool)
    assert fast.cpu_count() >= 1
    assert callable(fast.retain_freed_memory)


# --------------------------------------------------------------------------- backends


@pytest.mark.parametrize("name", list_models())
def test_both_runtimes_agree_with_the_model(name: str) -> None:
    model = small_model(name, 3)
    lr = torch.rand(2, channels_of(model), 10, 7)
    expected = reference(model, lr)
    outputs = {}
    for runtime in backends.RUNTIMES:
        backend = make_backend(model, runtime)
        outputs[runtime] = backend(lr)
        assert isinstance(backend, Backend) and backend.name == runtime
        assert backend.device == torch.device("cpu")
        assert outputs[runtime].shape == (2, channels_of(model), 30, 21)
        assert outputs[runtime].dtype == torch.float32
        assert np.abs(outputs[runtime].numpy() - expected).max() <= TOLERANCE
    assert (outputs["torch"] - outputs["onnxruntime"]).abs().max() <= TOLERANCE


def test_the_torch_runtime_folds_branches_on_a_copy() -> None:
    model = small_model("span", 2).train()  # mid-training: branches, train mode
    lr = torch.rand(1, 1, 9, 12)
    sr = make_backend(model, "torch")(lr)
    assert has_branches(model) and model.training
    assert np.abs(sr.numpy() - reference(model.eval(), lr)).max() <= TOLERANCE


def test_the_self_ensemble_option_averages_the_eight_symmetries() -> None:
    from superres.ops.ensemble import ensemble_average

    model = small_model("rednet", 2)
    lr = torch.rand(1, 1, 8, 11)
    ensembled = make_backend(model, "torch", self_ensemble=True)(lr)
    with torch.no_grad():
        expected = ensemble_average(model, lr)
    torch.testing.assert_close(ensembled, expected, atol=1e-5, rtol=0)
    assert (ensembled - make_backend(model, "torch")(lr)).abs().max() > 1e-4  # it did something


def test_onnx_export_is_cached_until_the_weights_change(monkeypatch: pytest.MonkeyPatch) -> None:
    import superres.inference.export

    model = small_model("srcnn-tutorial", 2)
    exports = []
    original = superres.inference.export.export_onnx_bytes

    def counting_export(*args, **kwargs):
        exports.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(superres.inference.export, "export_onnx_bytes", counting_export)
    lr = torch.rand(1, 3, 8, 8)
    first = make_backend(model, "onnxruntime")(lr)
    make_backend(model, "onnxruntime")
    assert len(exports) == 1
    with torch.no_grad():
        model.layers[0].bias.add_(0.5)  # an in-place change, as an optimizer step makes
    second = make_backend(model, "onnxruntime")(lr)
    assert len(exports) == 2
    assert not torch.allclose(first, second)


def test_unknown_runtime_and_unsupported_device_raise_config_errors() -> None:
    model = small_model("bicubic", 2)
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'; available: onnxruntime, torch"):
        make_backend(model, "tensorrt")
    with pytest.raises(ConfigError, match="CPU only"):
        make_backend(model, "onnxruntime", device=torch.device("cuda"))
    with pytest.raises(ConfigError, match="--half needs a CUDA device"):
        make_backend(model, "torch", half=True)


def test_make_backend_does_not_change_the_callers_model() -> None:
    model = small_model("rednet", 2)
    make_backend(model, "torch")
    assert all(type(module) is nn.ConvTranspose2d for module in model.decoder)
    assert model.decoder[0].weight.is_contiguous()


# --------------------------------------------------------------------------- CLI


def test_cli_exports_a_weight_free_model(tmp_path, capsys) -> None:
    output = tmp_path / "bicubic.onnx"
    assert main(["export", "--model", "bicubic", "--scale", "3", "-o", str(output)]) == 0
    assert read_onnx_metadata(output)["scale"] == "3"
    assert "wrote" in capsys.readouterr().out


def test_cli_exports_an_untrained_architecture_with_model_args(tmp_path) -> None:
    output = tmp_path / "red.onnx"
    arguments = ["export", "--model", "rednet", "--scale", "2", "-o", str(output), "--untrained"]
    arguments += ["--model-arg", "num_layers=2", "--model-arg", "num_features=4"]
    assert main(arguments) == 0
    assert read_onnx_metadata(output)["model_kwargs"] == '{"num_features": 4, "num_layers": 2}'


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model", "no-such-model", "--scale", "2"], "no-such-model"),
        (["--model", "no-such-model", "--scale", "2", "--untrained"], "no-such-model"),
        (["--model", "bicubic", "--scale", "2", "--opset", "99"], "opset 99"),
        (["--model", "real", "--scale", "2", "--rgb"], "already works on RGB"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, arguments: list[str], message: str) -> None:
    output = tmp_path / "model.onnx"
    assert main(["export", *arguments, "-o", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("superres export: error:") and message in error
    assert "\n" not in error
    assert not output.exists()


def test_cli_exports_a_checkpoint_file_with_its_name(tmp_path) -> None:
    checkpoint = pytest.importorskip("superres.zoo.checkpoint")
    model = small_model("rednet", 2)
    weights = tmp_path / "my-red.safetensors"
    metadata = {"model": "rednet", "scale": 2, "model_kwargs": model.model_kwargs, "channels": "Y"}
    checkpoint.save_checkpoint(weights, model, metadata)
    output = tmp_path / "my-red.onnx"
    assert main(["export", "--model", str(weights), "-o", str(output)]) == 0
    exported = read_onnx_metadata(output)
    assert exported["name"] == "my-red.safetensors" and exported["scale"] == "2"
    lr = torch.rand(1, 1, 11, 9)
    assert np.abs(run_onnx(output.read_bytes(), lr) - reference(model, lr)).max() <= TOLERANCE


def test_cli_exports_a_shipped_pretrained_model(tmp_path) -> None:
    from superres.zoo.pretrained import list_pretrained

    entries = list_pretrained()
    if not entries:
        pytest.skip("no pretrained weights ship with this checkout")
    entry = entries[0]
    output = tmp_path / "shipped.onnx"
    assert main(["export", "--model", entry.name, "--scale", str(entry.scale), "-o", str(output)]) == 0
    assert read_onnx_metadata(output)["name"] == entry.name


@pytest.mark.parametrize("name", ["span60", "espcn"])
def test_a_y_model_exports_as_an_rgb_graph_that_upscales_as_the_command_does(tmp_path, name: str) -> None:
    """`--rgb`: YCbCr, the Y network and bicubic chroma inside one 3-channel graph; ONNX Runtime's
    output, clipped and rounded, is `superres upscale`'s file on an RGB image within one level."""
    from superres.images import read_image, write_image
    from superres.inference.export import onnx_session

    steps = np.random.default_rng(0).normal(0, 8, (30, 34, 3))  # colourful texture, not noise
    pixels = np.clip(np.cumsum(steps, axis=1) + [90, 130, 170], 0, 255).astype(np.uint8)
    source, upscaled, graph = tmp_path / "photo.png", tmp_path / "photo_x2.png", tmp_path / f"{name}.onnx"
    write_image(source, pixels)
    assert main(["export", "--model", name, "--scale", "2", "--rgb", "-o", str(graph)]) == 0
    metadata = read_onnx_metadata(graph)
    assert metadata["channels"] == "RGB" and metadata["num_channels"] == "3"
    assert metadata["network_channels"] == "Y" and "bicubic" in metadata["colour"]
    assert main(["upscale", str(source), "--model", name, "--scale", "2", "--precision", "fp32",
                 "-o", str(upscaled)]) == 0
    lr = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
    (sr,) = onnx_session(graph.read_bytes()).run(None, {INPUT_NAME: lr.numpy()})
    ours = np.floor(np.clip(sr[0].transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(int)
    expected = read_image(upscaled).pixels.astype(int)
    assert ours.shape == expected.shape == (60, 68, 3) and np.abs(ours - expected).max() <= 1


def test_relu_modules_and_commuted_sums_are_fused_too() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Conv2d(2, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.second = nn.Conv2d(4, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = self.act(self.first(x))
            return torch.relu(x + self.second(hidden))  # skip on the left of the sum

    if not fast.pointwise_convolutions_work():
        pytest.skip("this torch build has no oneDNN pointwise convolutions")
    torch.manual_seed(0)
    model = Block().eval()
    fused = fast.fuse_conv_activations(copy.deepcopy(model))
    assert sum(isinstance(m, fast.FusedConv2d) for m in fused.modules()) == 2
    x = torch.randn(2, 2, 7, 9).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        assert torch.allclose(fused(x), model(x), atol=1e-5)
