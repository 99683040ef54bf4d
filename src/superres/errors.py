"""The exceptions superres raises for user mistakes and bad input.

The CLI turns every `SuperresError` into one line on stderr and a non-zero exit code; anything else
is a bug and keeps its traceback. `require_optional` turns a missing optional package into one.
"""

import importlib
from types import ModuleType


class SuperresError(Exception):
    """Base class: a problem with the user's input, not a bug in superres."""


class ImageReadError(SuperresError):
    """An image file could not be read (missing, empty, truncated, not an image, too large...)."""


class ImageWriteError(SuperresError):
    """An image could not be written (unsupported extension, mode the format cannot hold...)."""


class ModelError(SuperresError):
    """Unknown model, unsupported scale, or a checkpoint that does not match the model."""


class CheckpointError(SuperresError):
    """A checkpoint file is missing, corrupt, or not a superres checkpoint."""


class ConfigError(SuperresError):
    """A training or evaluation configuration is invalid (unknown key, bad value, empty folder...)."""


class TrainingDiverged(SuperresError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def require_optional(package: str, needed_by: str) -> ModuleType:
    """Import an optional package (the `onnx` extra), or raise ModelError saying how to install it."""
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError:
        raise ModelError(
            f"{needed_by} needs the '{package}' package: pip install 'superres[onnx]'"
        ) from None
