"""The model registry: every network superres knows, by name, with its `ModelInfo` card.

`create_model(name, scale, **kwargs)` builds one; `list_models()` and `get_model_info(name)`
describe them. The registry is a literal dict, not a scan of files, so what exists is visible
here and a typo cannot register a model.

Model contract: a model maps LR `(N, C, h, w)` float32 in [0, 1] to SR `(N, C, scale*h, scale*w)`
(not clipped) and carries `.scale`, `.info` (its `ModelInfo`) and `.model_kwargs` (the effective
constructor kwargs, enough to rebuild it with `create_model(info.name, scale, **model_kwargs)`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from superres.errors import ModelError
from superres.models.bicubic import BICUBIC_INFO, Bicubic
from superres.models.blocks import ModelInfo
from superres.models.edsr import EDSR, EDSR_INFO
from superres.models.espcn import ESPCN, ESPCN_INFO
from superres.models.fsrcnn import FSRCNN, FSRCNN_INFO, FSRCNN_S_INFO, FSRCNNSmall
from superres.models.rednet import REDNET_INFO, REDNet
from superres.models.span import SPAN, SPAN_INFO
from superres.models.srcnn import SRCNN, SRCNN_INFO, SRCNN_TUTORIAL_INFO, SRCNNTutorial
from superres.models.srresnet import SRRESNET_INFO, SRResNet

__all__ = [
    "ModelInfo",
    "Bicubic",
    "SRCNN",
    "SRCNNTutorial",
    "REDNet",
    "FSRCNN",
    "FSRCNNSmall",
    "ESPCN",
    "EDSR",
    "SRResNet",
    "SPAN",
    "create_model",
    "get_model_info",
    "list_models",
]

# Name -> (card, constructor). The order is the order `list_models()` reports: simplest first.
_REGISTRY: dict[str, tuple[ModelInfo, Callable[..., nn.Module]]] = {
    "bicubic": (BICUBIC_INFO, Bicubic),
    "srcnn": (SRCNN_INFO, SRCNN),
    "srcnn-tutorial": (SRCNN_TUTORIAL_INFO, SRCNNTutorial),
    "rednet": (REDNET_INFO, REDNet),
    "fsrcnn-s": (FSRCNN_S_INFO, FSRCNNSmall),
    "fsrcnn": (FSRCNN_INFO, FSRCNN),
    "espcn": (ESPCN_INFO, ESPCN),
    "span": (SPAN_INFO, SPAN),
    "edsr": (EDSR_INFO, EDSR),
    "srresnet": (SRRESNET_INFO, SRResNet),
}


def list_models() -> list[str]:
    """Registered model names, simplest first."""
    return list(_REGISTRY)


def _lookup(name: str) -> tuple[ModelInfo, Callable[..., nn.Module]]:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name such as a list
        raise ModelError(
            f"unknown model {name!r}; available: {', '.join(_REGISTRY)}"
        ) from None


def get_model_info(name: str) -> ModelInfo:
    """The `ModelInfo` card of a registered model; `ModelError` for an unknown name."""
    return _lookup(name)[0]


def create_model(name: str, scale: int, **kwargs: Any) -> nn.Module:
    """A freshly initialised model `name` for `scale`, with `kwargs` overriding its defaults.

    Raises `ModelError` for an unknown name, an unsupported scale, an unknown kwarg or a bad
    kwarg value, each naming the offending value.
    """
    info, constructor = _lookup(name)
    info.check_scale(scale)
    effective = info.effective_kwargs(kwargs)
    return constructor(int(scale), **effective)
