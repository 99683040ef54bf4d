"""The ways to compute a shipped model in lower precision on the CPU, side by side: speed (interleaved
in one run, as ratios to fp32) and Set5 PSNR by the paper protocol. What decided `--precision`'s
design (docs/precision.md):

    python tools/probe_lower_precision.py span60 2
    python tools/probe_lower_precision.py espcn 2 --size 200

Variants, all of the folded fast-path network (`superres.inference.fast.optimize_for_inference`):

- `fp32`: as shipped;
- `autocast`: torch's CPU bf16 autocast around it (the image and the bicubic skip are cast too);
- `bf16-all`: every convolution in bf16, the input and the skip float32;
- `bf16-inner`: `precision="bf16"`, what `--precision bf16` runs: the convolutions that read or
  write the image stay float32 (`superres.inference.fast.to_lower_precision`);
- `int8`: post-training static quantisation, torch's FX graph mode with the x86 backend's default
  qconfig (per-channel int8 weights, histogram-observed uint8 activations), calibrated on 16 LR
  images of T91 (training images, never the benchmark): the whole network, skip and all;
- `int8-inner`: the same, but only the convolutions between the first and the last (everything
  else float32, each quantised convolution between a quantise and a dequantise).
"""

from __future__ import annotations

import argparse
import copy
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from superres.evaluation.protocol import Protocol, evaluate_model, model_channels, model_input
from superres.images import list_images, read_image
from superres.inference.backends import Backend
from superres.inference.fast import CastInputs, _conv_channels, optimize_for_inference
from superres.ops import resize
from superres.zoo.names import resolve_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def all_convs_bf16(model: nn.Module) -> nn.Module:
    fast = optimize_for_inference(model)
    for parent in list(fast.modules()):
        if isinstance(parent, CastInputs):
            continue
        for name, child in list(parent.named_children()):
            if _conv_channels(child) is not None:
                setattr(parent, name, CastInputs(child, torch.bfloat16))
    return fast


def int8_network(
    model: nn.Module, scale: int, channels: str, calibration: int = 16, inner_only: bool = False
) -> nn.Module:
    from torch.ao.quantization import QConfigMapping, get_default_qconfig, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from superres.models.reparam import fuse_reparameterizable

    plain = copy.deepcopy(model).eval()
    fuse_reparameterizable(plain)
    tracer = torch.fx.Tracer(autowrap_functions=(resize.imresize_tensor, resize.upscale_integer_tensor))
    graph = torch.fx.GraphModule(plain, tracer.trace(plain))
    paths = list_images(DATA / "train" / "T91")
    random.Random(0).shuffle(paths)
    protocol = Protocol()
    pixels = [read_image(path).pixels for path in paths[:calibration]]
    inputs = [_tensor(model_input(image, scale, channels, protocol)) for image in pixels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapping = get_default_qconfig_mapping("x86")
        if inner_only:
            convs = [name for name, module in graph.named_modules() if isinstance(module, nn.Conv2d)]
            mapping = QConfigMapping()
            for name in convs[1:-1]:
                mapping.set_module_name(name, get_default_qconfig("x86"))
        prepared = prepare_fx(graph, mapping, (inputs[0],))
        with torch.no_grad():
            for lr in inputs:
                prepared(lr)
        return convert_fx(prepared)


def _tensor(lr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1))).float()[None]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("scale", type=int)
    parser.add_argument("--size", type=int, default=160, help="LR side of the timed input (default 160)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = resolve_model(args.model, args.scale, "cpu")
    channels = model_channels(model)
    fast = optimize_for_inference(model)
    inner = optimize_for_inference(model, precision="bf16")
    every = all_convs_bf16(model)
    quantised = int8_network(model, args.scale, channels)
    quantised_inner = int8_network(model, args.scale, channels, inner_only=True)

    def autocast(lr: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fast(lr).float()

    def run(network: nn.Module):
        def forward(lr: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return network(lr).float()

        return forward

    variants = {
        "fp32": run(fast), "autocast": autocast, "bf16-all": run(every), "bf16-inner": run(inner),
        "int8": run(quantised), "int8-inner": run(quantised_inner),
    }
    generator = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 1 if channels == "Y" else 3, args.size, args.size, generator=generator)
    seconds = dict.fromkeys(variants, 0.0)
    for forward in variants.values():
        forward(lr)
    for repeat in range(args.repeats):
        for name in variants if repeat % 2 == 0 else reversed(list(variants)):
            start = time.perf_counter()
            variants[name](lr)
            seconds[name] += time.perf_counter() - start
    print(f"{args.model} x{args.scale}, LR {args.size}x{args.size}, {args.repeats} interleaved repeats")
    print(f"{'variant':<12}{'time / fp32':>12}{'Set5 PSNR':>11}{'change dB':>11}")
    reference = None
    for name, forward in variants.items():
        backend = Backend(forward, torch.device("cpu"))
        result = evaluate_model(model, DATA / "benchmark" / "Set5" / "HR", args.scale, backend=backend)
        reference = result.psnr if reference is None else reference
        ratio = seconds[name] / seconds["fp32"]
        print(f"{name:<12}{ratio:>12.3f}{result.psnr:>11.4f}{result.psnr - reference:>+11.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
