"""A strided transposed conv computed in LR space trains and runs as the deconv it replaces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from superres.models.subpixel import LRSpaceConvTranspose2d, computes_in_lr_space


def twin_deconvs(scale: int, kernel: int, padding: int) -> tuple[nn.ConvTranspose2d, LRSpaceConvTranspose2d]:
    torch.manual_seed(scale * 10 + kernel)
    lr_space = LRSpaceConvTranspose2d(5, 2, kernel, stride=scale, padding=padding)
    nn.init.normal_(lr_space.bias)
    plain = nn.ConvTranspose2d(
        5, 2, kernel, stride=scale, padding=padding, output_padding=lr_space.output_padding
    )
    plain.load_state_dict(lr_space.state_dict())
    return plain, lr_space


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("kernel, padding", [(9, 4), (5, 2), (4, 1)])
def test_outputs_and_gradients_are_the_plain_deconvs(scale: int, kernel: int, padding: int) -> None:
    if not 0 <= scale - (kernel - 2 * padding) < scale:
        pytest.skip("no output padding makes this deconv's output exactly scale x its input")
    plain, lr_space = twin_deconvs(scale, kernel, padding)
    x = torch.randn(2, 5, 7, 10)
    target = torch.randn(2, 2, 7 * scale, 10 * scale)
    outputs = []
    for deconv in (plain, lr_space):
        out = deconv(x)
        ((out - target) ** 2).mean().backward()
        outputs.append(out.detach())
    assert outputs[1].shape == (2, 2, 7 * scale, 10 * scale)
    assert (outputs[0] - outputs[1]).abs().max().item() <= 1e-5
    assert torch.allclose(plain.weight.grad, lr_space.weight.grad, atol=1e-6)
    assert torch.allclose(plain.bias.grad, lr_space.bias.grad, atol=1e-6)


def test_it_is_a_transposed_conv_with_the_same_state_dict() -> None:
    plain, lr_space = twin_deconvs(3, 9, 4)
    assert isinstance(lr_space, nn.ConvTranspose2d)  # MAC counts and initialisers treat it as one
    assert lr_space.state_dict().keys() == plain.state_dict().keys()
    assert computes_in_lr_space(lr_space) and computes_in_lr_space(plain)


def test_a_geometry_it_cannot_compute_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot give exactly stride x its input"):
        LRSpaceConvTranspose2d(4, 1, 3, stride=2, padding=0)  # output 2n + 1
    assert not computes_in_lr_space(nn.ConvTranspose2d(2, 2, 3, stride=2))


def test_onnx_export_writes_fsrcnns_deconvolution_as_one_conv_transpose_node() -> None:
    onnx = pytest.importorskip("onnx")
    from superres.inference.export import export_onnx_bytes
    from superres.models import create_model

    model = create_model("fsrcnn", 3)
    assert isinstance(model.deconv, LRSpaceConvTranspose2d)
    graph = onnx.load_from_string(export_onnx_bytes(model)).graph
    operators = [node.op_type for node in graph.node]
    assert operators.count("ConvTranspose") == 1  # the layer of OpenCV's dnn_superres FSRCNN files
    assert "Gather" not in operators and "DepthToSpace" not in operators
    assert isinstance(model.deconv, LRSpaceConvTranspose2d)  # the caller's model is left as it was
