"""superres: single-image super-resolution on PyTorch.

Paper-faithful evaluation (MATLAB bicubic, BT.601 Y, shaved border), the SRCNN and RED-Net
families, pretrained weights shipped in the package and a tiled upscaler for real images.

The Python API (`superres.api`, documented there and in the README's "Python API"):

    import superres
    superres.upscale("photo.jpg")                       # -> Path("photo_x2.jpg")
    sr = superres.upscale(pixels, model="fast", scale=3)
    model = superres.load_model("red20", scale=2)
    result = superres.evaluate("default", "Set5/HR", scale=2)

The names are imported on first use, so `import superres` (and `superres --help`) does not pay
for torch. The package's layers, bottom to top (docs/architecture.md; tests/test_layering.py
keeps each to importing only from those below it): `errors` and `atomic`, `ops`, `images`,
`models`, `zoo`, `inference`, `evaluation`, `batch`, `training`, `lab`, and the front ends `api`,
`serve` and `cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: The facade: every name here is `superres.api.<name>`.
_API_NAMES = (
    "evaluate",
    "list_models",
    "list_pretrained",
    "load_model",
    "parse_model",
    "read_image",
    "train",
    "upscale",
    "upscale_files",
    "write_image",
)
__all__ = ["__version__", *_API_NAMES]


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        return getattr(importlib.import_module("superres.api"), name)
    raise AttributeError(f"module 'superres' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API_NAMES})

