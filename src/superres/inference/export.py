"""ONNX export of superres models: dynamic batch and size, the pre-upsampling inside the graph.

`export_onnx(model, path)` writes one `.onnx` file atomically; `export_onnx_bytes(model)` returns
the same model as bytes, and `onnx_session(bytes)` opens it in ONNX Runtime (what the
"onnxruntime" runtime of `superres.inference.backends` runs). `frozen_copy(model)` is the network that is
exported and run for inference everywhere: an eval-mode copy with re-parameterisable branches
folded (`superres.models.reparam`), never the caller's model.

The graph has one input `lr` (N, C, h, w) float32 in [0, 1] and one output `sr`
(N, C, scale*h, scale*w), with N, h and w dynamic, through pixel shuffles (DepthToSpace) and
strided transposed convolutions too; the tests run every registered model on sizes other than
the traced one. Pre-upsampling networks keep their MATLAB bicubic/bilinear upscale in the graph:
`superres.ops.resize` computes integer upscales as replicate-pad + conv2d + reshape, which traces to
plain ONNX operators. Stride-1 transposed convolutions are exported as ordinary convolutions
(`superres.inference.fast.ConvTransposeAsConv2d`, same weights, same outputs), which ONNX Runtime runs
faster; strided ones that PyTorch computes in LR space (FSRCNN's `LRSpaceConvTranspose2d`) go
back to one ConvTranspose node, the paper's layer.

`metadata_props` of the ONNX model hold (all strings): `model` (registered architecture name),
`scale`, `channels` ("Y" or "RGB"), `num_channels`, `model_kwargs` (JSON), `receptive_field`
(LR pixels of context each side, the exact tile overlap), `input_range` ("0..1"), `producer`,
and `name` (the release or file name the model came from) when the caller gives one.

`rgb=True` writes a Y network as a 3-channel RGB graph, the colour handling of `superres upscale`
inside it (`superres.models.colour.upscale_rgb_with_y`: BT.601 YCbCr, the network on Y, Cb and Cr by
MATLAB's bicubic, back to RGB; not clipped, as every graph here): `channels` "RGB", and
`network_channels` "Y" and `colour` say what the graph does; `receptive_field` counts the chroma's
bicubic taps too.

`size=(h, w)` writes a graph for that one LR size and batch 1, with no dynamic axes: the form for a
network that computes sizes in Python (SwinIR's and HAT's window partitions), whose dynamic graph
the tracer freezes at the traced size (the default export checks another size and refuses such a
graph with one line). Batch is fixed too: such a graph run on a batch of 2 gives wrong numbers, not
an error. The size is in the `fixed_size` metadata entry ("HxW", LR pixels, batch 1).

Exporter: PyTorch's TorchScript-based exporter (`dynamo=False`). It is deprecated but still
ships in torch 2.13 and needs only the `onnx` package; the torch.export-based exporter needs
`onnxscript`, which superres does not depend on. The TorchScript exporter writes opsets up to
`MAX_OPSET` (20).
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from superres import __version__ as superres_version
from superres.atomic import atomic_write_bytes
from superres.errors import ModelError, require_optional
from superres.inference.fast import cpu_count, replace_transposed_convs, restore_plain_transposed_convs
from superres.models.colour import CHROMA_CONTEXT, YNetworkOnRgb
from superres.models.reparam import fuse_reparameterizable

logger = logging.getLogger(__name__)

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
#: The newest opset torch's TorchScript exporter writes; ONNX Runtime 1.17+ runs it.
MAX_OPSET = 20
DEFAULT_OPSET = MAX_OPSET
#: Oldest opset with everything the graphs use (Pad with edge mode as an input-driven op).
MIN_OPSET = 13
#: LR size traced at export. Non-square and > 3 pixels so that every shape-dependent branch in
#: `superres.ops.resize` takes the general (polyphase convolution) path and H and W stay distinct.
_TRACE_SIZE = (20, 24)
#: Max abs difference between ONNX Runtime and PyTorch accepted by the post-export check.
VERIFY_TOLERANCE = 1e-4
#: The `colour` metadata entry of an `rgb` graph.
COLOUR_NOTE = "BT.601 YCbCr of the input; the network on Y; Cb and Cr by MATLAB bicubic; back to RGB"


def _model_card(model: nn.Module) -> tuple[str, int, str]:
    """(architecture name, scale, channels) of a superres model; `ModelError` otherwise.

    Channels come from the card for the model's own kwargs: some networks (EDSR, SRResNet,
    SPAN) take the colour space as a constructor argument.
    """
    info = getattr(model, "info", None)
    scale = getattr(model, "scale", None)
    if info is None or scale is None:
        raise ModelError(
            f"cannot export {type(model).__name__}: not a superres model (needs .info and .scale)"
        )
    return info.name, int(scale), info.channels_for(getattr(model, "model_kwargs", None))


def num_channels_of(model: nn.Module) -> int:
    """Image channels a superres model eats: 1 for Y models, 3 for RGB ones."""
    _, _, channels = _model_card(model)
    return 1 if channels == "Y" else 3


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` without gradients, re-parameterisable branches folded.

    The caller's model is never changed (it may be mid-training, branches and all). Folding is
    exact (`superres.models.reparam`), so the copy computes what `model` computes.
    """
    frozen = copy.deepcopy(model).eval()
    frozen.requires_grad_(False)
    return fuse_reparameterizable(frozen)


def _metadata(model: nn.Module, release_name: str | None, rgb: bool = False) -> dict[str, str]:
    architecture, scale, channels = _model_card(model)
    model_kwargs = getattr(model, "model_kwargs", {}) or {}
    try:
        receptive_field = model.info.receptive_field_for(scale, **model_kwargs)
    except (AttributeError, TypeError, ValueError, ModelError):  # an odd hand-made card: skip it
        receptive_field = None
    colour: dict[str, str] = {}
    if rgb:
        if channels != "Y":
            raise ModelError(
                f"--rgb wraps a Y network in colour conversion; {architecture} already works on RGB"
            )
        channels = "RGB"
        colour = {"network_channels": "Y", "colour": COLOUR_NOTE}
        if receptive_field is not None:
            receptive_field = max(receptive_field, CHROMA_CONTEXT)  # the chroma's bicubic taps
    metadata = {
        "model": architecture,
        "scale": str(scale),
        "channels": channels,
        "num_channels": str(1 if channels == "Y" else 3),
        "model_kwargs": json.dumps(model_kwargs, sort_keys=True, default=list),
        "input_range": "0..1",
        "producer": f"superres {superres_version}",
    }
    if receptive_field is not None:
        metadata["receptive_field"] = str(receptive_field)
    if release_name is not None:
        metadata["name"] = release_name
    return {**metadata, **colour}


def _check_opset(opset: int) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(f"ONNX opset {opset!r} is not supported; use {MIN_OPSET}..{MAX_OPSET}")
    return opset


def _exportable_copy(model: nn.Module) -> nn.Module:
    """The frozen float32 CPU copy with stride-1 transposed convs as plain convs and strided
    ones as ONNX ConvTranspose (FSRCNN computes its deconvolution in LR space in PyTorch)."""
    exportable = frozen_copy(model).cpu().float()
    restore_plain_transposed_convs(exportable)
    replace_transposed_convs(exportable)
    return exportable


def _graph_module(model: nn.Module, rgb: bool) -> nn.Module:
    """What is traced: the exportable copy, wrapped in the colour conversion with `rgb`."""
    exportable = _exportable_copy(model)
    return YNetworkOnRgb(exportable) if rgb else exportable


def _trace_to_onnx(
    model: nn.Module, opset: int, channels: int, size: tuple[int, int] | None = None
) -> bytes:
    """The traced graph: dynamic batch and size, or, with `size`, that size and batch 1 only."""
    sample = torch.rand(1, channels, *(size or _TRACE_SIZE))
    dynamic_axes = None if size else {
        INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
        OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"},
    }
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter warns that it is deprecated, and the tracer that shape checks
        # in superres.ops.resize become constants: both expected (the traced branch is the general
        # one for every input of 1 pixel or more, see _TRACE_SIZE).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (sample,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def export_onnx_bytes(
    model: nn.Module,
    *,
    opset: int = DEFAULT_OPSET,
    name: str | None = None,
    rgb: bool = False,
    size: tuple[int, int] | None = None,
) -> bytes:
    """The serialized ONNX model of a superres `model` (see the module docstring for its form).

    `name`, when given, is stored as the `name` metadata entry (e.g. the release name `red20`).
    `rgb`: a Y network as an RGB graph, colour conversion inside (`ModelError` for an RGB network).
    `size`: (height, width) of the one LR input the graph takes, batch 1 (`fixed_size` metadata).
    """
    onnx = require_optional("onnx", "ONNX export")
    _check_opset(opset)
    size = _check_size(size)
    metadata = _metadata(model, name, rgb)
    if size is not None:
        metadata["fixed_size"] = f"{size[0]}x{size[1]}"
    try:
        traced = _trace_to_onnx(_graph_module(model, rgb), opset, int(metadata["num_channels"]), size)
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ModelError(f"torch cannot export {metadata['model']} to ONNX: {first[:300]}") from None
    proto = onnx.load_from_string(traced)
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    batch, height, width = ("1", *(str(side) for side in size)) if size else ("N", "h", "w")
    proto.doc_string = (
        f"superres {metadata['model']} x{metadata['scale']} on {metadata['channels']}: "
        f"{INPUT_NAME} ({batch}, {metadata['num_channels']}, {height}, {width}) in [0, 1] -> "
        f"{OUTPUT_NAME} ({batch}, {metadata['num_channels']}, {metadata['scale']}*{height}, "
        f"{metadata['scale']}*{width})"
    )
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    _check_runs(data, int(metadata["num_channels"]), size)
    return data


def _check_size(size: Any) -> tuple[int, int] | None:
    """`size` as (height, width) of positive ints, or None; `ModelError` otherwise."""
    if size is None:
        return None
    try:
        height, width = (int(side) for side in size)
    except (TypeError, ValueError):
        height = width = 0
    if height < 1 or width < 1:
        raise ModelError(f"a fixed ONNX input size is (height, width) in pixels, got {size!r}")
    return height, width


def _check_runs(onnx_bytes: bytes, channels: int, size: tuple[int, int] | None = None) -> None:
    """`ModelError` (one line) if ONNX Runtime cannot run the graph: a dynamic one on a size other
    than the traced one (a network that computes sizes in Python, such as window attention's
    partitions, had them frozen as constants by the tracer), a fixed-size one at its size. Skipped
    where ONNX Runtime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return
    session = onnx_session(onnx_bytes, num_threads=1)
    lr = torch.rand(1, channels, *(size or (13, 17)), generator=torch.Generator().manual_seed(0))
    _run_session(session, lr, fixed=size is not None)


def _run_session(session: Any, lr: torch.Tensor, *, fixed: bool = False) -> Any:
    """The session's output for `lr` (a dynamic graph's: at a size other than the traced one; a
    `fixed` one's: at its size), or one `ModelError` line."""
    try:
        return session.run([OUTPUT_NAME], {INPUT_NAME: lr.numpy()})[0]
    except Exception as error:  # noqa: BLE001 - ONNX Runtime's own error types; one line for the user
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if fixed:
            raise ModelError(f"ONNX Runtime cannot run the graph torch exported: {first[:200]}") from None
        raise ModelError(
            "the exported graph does not run on another image size (sizes computed in Python were "
            "frozen when torch traced the network); use the torch backend, or export a graph for one "
            f"size (superres export --size WxH): {first[:200]}"
        ) from None


def onnx_session(onnx_bytes: bytes, *, num_threads: int | None = None) -> Any:
    """An ONNX Runtime CPU `InferenceSession` for a serialized model, all graph optimizations on."""
    onnxruntime = require_optional("onnxruntime", "backend 'onnxruntime'")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads or cpu_count()
    options.inter_op_num_threads = 1  # one chain of convolutions: nothing to run side by side
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initializers are noise
    return onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def verify_onnx(
    model: nn.Module,
    onnx_bytes: bytes,
    *,
    tolerance: float = VERIFY_TOLERANCE,
    rgb: bool = False,
    size: tuple[int, int] | None = None,
) -> float:
    """Max abs difference between ONNX Runtime and PyTorch on an odd-sized batch of 2.

    Raises `ModelError` above `tolerance`. The size differs from the traced one on purpose, so
    that a graph with a size frozen in by mistake fails here instead of in a user's hands. The
    reference is the model as given (branches and all), so the check covers the folding too;
    with `rgb`, that model on RGB as the upscale pipeline runs it. A graph for one `size` is
    checked on a fresh random image of that size (batch 1: the only input it takes).
    """
    session = onnx_session(onnx_bytes)
    generator = torch.Generator().manual_seed(0)
    reference = copy.deepcopy(model).cpu().float().eval()
    if rgb:
        reference = YNetworkOnRgb(reference)
    batch, height, width = (1, *size) if size else (2, 13, 17)
    lr = torch.rand(batch, 3 if rgb else num_channels_of(model), height, width, generator=generator)
    with torch.inference_mode():
        expected = reference(lr).numpy()
    actual = _run_session(session, lr, fixed=size is not None)
    if actual.shape != expected.shape:
        raise ModelError(f"ONNX output shape {actual.shape} differs from PyTorch's {expected.shape}")
    difference = float(abs(actual - expected).max())
    if difference > tolerance:
        raise ModelError(f"ONNX output differs from PyTorch by {difference:.3g} (> {tolerance:g})")
    return difference


def _write_atomically(path: Path, data: bytes) -> None:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {path.parent}")
    atomic_write_bytes(path, data)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    name: str | None = None,
    rgb: bool = False,
    size: tuple[int, int] | None = None,
) -> Path:
    """Write `model` as an ONNX file at `path` (atomically) and return the path.

    With `verify`, the written graph is run once in ONNX Runtime (when installed) on a batch
    of a size other than the traced one and compared with PyTorch (`verify_onnx`). `rgb`: a Y
    network as an RGB graph; `size`: a graph for that one LR size (`export_onnx_bytes`).
    """
    path = Path(path)
    data = export_onnx_bytes(model, opset=opset, name=name, rgb=rgb, size=size)
    if verify:
        try:
            import onnxruntime  # noqa: F401  (only to know whether the check can run)
        except ModuleNotFoundError:
            logger.warning("onnxruntime is not installed: %s was not checked against PyTorch", path)
        else:
            difference = verify_onnx(model, data, rgb=rgb, size=_check_size(size))
            logger.debug("ONNX Runtime matches PyTorch within %.2g", difference)
    _write_atomically(path, data)
    return path


def read_onnx_metadata(source: str | os.PathLike[str] | bytes) -> dict[str, str]:
    """The `metadata_props` of an ONNX file (path) or serialized model (bytes), as a dict."""
    onnx = require_optional("onnx", "ONNX export")
    if isinstance(source, bytes):
        proto = onnx.load_from_string(source)
    else:
        proto = onnx.load(os.fspath(source), load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}
