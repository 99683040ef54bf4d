"""The exceptions superres raises for user mistakes and bad input.

The CLI turns every `SuperresError` into one line on stderr and a non-zero exit code; anything else
is a bug and keeps its traceback.
"""


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
