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
for torch. Three of them, `upscale`, `evaluate` and `train`, are also the names of submodules;
on the package they always mean the functions: import the modules with `from superres.upscale
import ...` (not `import superres.upscale as m`, which would give the function).
"""

from __future__ import annotations

import importlib
import sys
import types
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


class _Facade(types.ModuleType):
    """The package module, refusing to let a submodule shadow the facade function of its name.

    Importing `superres.upscale` makes the import system set `superres.upscale = <module>`;
    without this the function `superres.upscale` would turn into a module the moment any code
    imported the upscale pipeline.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API_NAMES and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Facade
