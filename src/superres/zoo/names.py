"""The one grammar of model names, parsed here and only here, and the loader that follows it.

A `--model` value (or the `model=` of the Python API, or the web page's menu) is, in this order:

- a path to a model file (`looks_like_path`: a name ending in `.safetensors`, `.pth`, `.pt` or
  `.ckpt`, or one with a folder): a superres checkpoint (safetensors with superres metadata) or a
  community model file of any architecture spandrel recognises (`superres.zoo.community`);
- `NAME@denoise=S`: a real-world model at denoising strength S in [0, 1];
- an alias: `default` (the best shipped PSNR model at the scale) or `fast` (the cheapest that
  still beats bicubic by 1 dB);
- a shipped pretrained name (`red20`, `span96`; a name shipped at one scale implies it);
- a registered architecture that needs no weights (`bicubic`);
- a checkpoint file named without a folder or extension.

`parse_model` turns a name into a `ModelChoice` without loading anything (the web page and
messages need only that); `resolve_model` loads what it names. Every error is one `ModelError`
line saying what is available.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import nn

from superres.errors import ModelError
from superres.models import create_model, get_model_info, list_models
from superres.zoo import ALIASES, pretrained
from superres.zoo.pretrained import PretrainedEntry


@dataclass(frozen=True)
class ModelChoice:
    """What a model name resolves to, before anything is loaded.

    `kind`: "pretrained" (shipped weights `name` at `scale`), "architecture" (a registered
    weight-free network such as bicubic) or "checkpoint" (`name` is a file path; `scale` None
    means the checkpoint's own). `alias`: "default" or "fast" when the name was one.
    """

    spec: str
    kind: Literal["pretrained", "architecture", "checkpoint"]
    name: str
    scale: int | None
    alias: str | None = None

    @property
    def label(self) -> str:
        """How results name the model: `red20`, or `default (red20)` for an alias."""
        return f"{self.alias} ({self.name})" if self.alias else self.name


def looks_like_path(spec: str) -> bool:
    """Whether a model name names a model file rather than a model."""
    from superres.zoo.community import SUFFIXES

    return spec.lower().endswith(SUFFIXES) or "/" in spec or "\\" in spec


def model_names(scale: int | None = None, entries: list[PretrainedEntry] | None = None) -> list[str]:
    """Every name the grammar accepts without a path: the aliases, the shipped models (at `scale`,
    if given) and the weight-free architectures. The web page offers exactly these."""
    entries = pretrained.list_pretrained() if entries is None else entries
    shipped = [entry.name for entry in entries if scale is None or entry.scale == scale]
    weight_free = [name for name in list_models() if not get_model_info(name).needs_weights]
    return list(dict.fromkeys([*ALIASES, *shipped, *weight_free]))


def parse_model(
    spec: str, scale: int | None = None, entries: list[PretrainedEntry] | None = None
) -> ModelChoice:
    """What `spec` names at `scale` (None: the checkpoint's own, or the one scale the name ships
    at, or `DEFAULT_SCALE`), without loading it. `entries`: the shipped listing, when the caller
    keeps one. Raises `ModelError` for an unknown name or a scale the model lacks."""
    if not isinstance(spec, str) or not spec:
        raise ModelError(f"a model is named by a non-empty string, got {spec!r}")
    whole = isinstance(scale, numbers.Integral) and not isinstance(scale, bool)
    if scale is not None and (not whole or scale < 1):
        raise ModelError(f"scale must be a positive integer such as 2, 3 or 4, got {scale!r}")
    entries = pretrained.list_pretrained() if entries is None else entries
    if looks_like_path(spec):
        return ModelChoice(spec, "checkpoint", spec, scale)
    name, at, options = spec.partition("@")
    if at:  # NAME@denoise=S: the strength is checked when loaded, on NAME's card
        if not options.startswith("denoise="):
            raise ModelError(f"unknown option '@{options}' in '{spec}'; the one option is @denoise=S")
        base = parse_model(name, scale, entries)
        if base.kind != "pretrained":
            raise ModelError(f"'{name}' has no denoise strength (only the real-world models have one)")
        return ModelChoice(spec, "pretrained", f"{base.name}@{options}", base.scale, base.alias)
    at_scale = pretrained.implied_scale(spec, scale)
    alias = spec if spec in ALIASES else None
    name = pretrained.alias_target(spec, at_scale)
    shipped = sorted(entry.scale for entry in entries if entry.name == name)
    if at_scale in shipped:
        return ModelChoice(spec, "pretrained", name, at_scale, alias)
    if shipped:
        listed = ", ".join(f"x{s}" for s in shipped)
        raise ModelError(f"pretrained model '{name}' ships for {listed}, not x{at_scale}")
    if name in list_models():
        info = get_model_info(name)
        info.check_scale(at_scale)
        if info.needs_weights:
            raise ModelError(
                f"model '{name}' needs trained weights and none ship for x{at_scale} "
                f"({pretrained.shipped_summary(entries)}); pass a model file path instead"
            )
        return ModelChoice(spec, "architecture", name, at_scale, alias)
    if Path(spec).is_file():
        return ModelChoice(spec, "checkpoint", spec, scale)
    raise ModelError(
        f"unknown model '{spec}'; choose one of: {', '.join(model_names(None, entries))}, "
        "or a model file path (.safetensors, .pth, .pt, .ckpt)"
    )


def resolve_model(spec: str, scale: int | None, device: str = "cpu") -> nn.Module:
    """The network a model name names (see the module docstring), in eval mode on `device`."""
    return load_choice(parse_model(spec, scale), device)


def load_choice(choice: ModelChoice, device: str = "cpu") -> nn.Module:
    """The network of a parsed `ModelChoice`, in eval mode on `device`."""
    if choice.kind == "checkpoint":
        from superres.zoo import community

        path = Path(choice.name)
        if community.is_community_file(path):
            return community.load_community_model(path, choice.scale, device)
        return pretrained.load_checkpoint_file(path, choice.scale, device)
    if choice.kind == "architecture":
        return create_model(choice.name, choice.scale).to(device).eval()
    name, _, options = choice.name.partition("@")
    if options:
        return pretrained.load_denoised_spec(choice.name, choice.scale, device)
    return pretrained.load_pretrained(name, choice.scale, device=device)
