"""Pretrained weights shipped inside the package, and turning a `--model` value into a network.

Shipped weights live in `superres/weights/` as pairs:

- `<name>_x<scale>.safetensors`: written by `superres.zoo.checkpoint.save_checkpoint`; its metadata
  holds `model`, `scale`, `model_kwargs`, `channels`, `metrics`, `recipe`, training time and
  hardware, so `superres.zoo.checkpoint.load_model` rebuilds the network from it alone;
- `<name>_x<scale>.json`: the model card a person reads (`write_model_card` writes one):

      {"name": "rednet", "scale": 2, "architecture": "rednet", "model_kwargs": {"num_layers": 10},
       "recipe": "superres train ...", "training_seconds": 5400, "hardware": "1x H100",
       "date": "2025-01-31",
       "metrics": {"Set5": {"psnr": 37.1, "ssim": 0.957}, "Set14": {"psnr": 32.8, "ssim": 0.910}},
       "protocol": "MATLAB bicubic LR, Y channel (BT.601), `scale` pixels shaved"}

`<name>` is the release name (e.g. `rednet30`), not necessarily the architecture. The folder is
found with `importlib.resources`, so it works from an installed wheel as well as a checkout.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superres.atomic import atomic_write_bytes
from superres.errors import ModelError
from superres.zoo import DEFAULT_ALIAS, DEFAULT_SCALE, FAST_ALIAS

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from torch import nn

# torch is imported where a network is loaded, not here: reading the cards (`superres models`, the
# default and `fast` choices, the web page's menu) must not wait for it.

logger = logging.getLogger(__name__)

#: `<name>_x<scale>.safetensors`; the name may itself hold hyphens and underscores.
_WEIGHTS_NAME = re.compile(r"^(?P<name>.+)_x(?P<scale>[1-9][0-9]*)\.safetensors$")
#: The evaluation protocol the card metrics follow (stated under every table that shows them).
PROTOCOL = (
    "PSNR (dB) / SSIM from `superres evaluate`: LR made with MATLAB bicubic imresize, "
    "Y channel (BT.601), `scale` pixels shaved from each border"
)
#: The model the upscaler falls back to when no pretrained weights ship at all.
FALLBACK_MODEL = "bicubic"
#: `--model fast` (`superres.zoo.FAST_ALIAS`): the least gain over bicubic on Set5 it must keep.
FAST_MIN_GAIN_DB = 1.0
#: Set5 PSNR differences below this are noise for the default choice: the faster model wins.
DEFAULT_TIE_DB = 0.05
#: `NAME@denoise=S`: a real-world model at denoising strength S in [0, 1] (`load_denoised`).
_DENOISE_SPEC = re.compile(r"^(?P<name>[^@]+)@denoise=(?P<strength>[^@]*)$")


@dataclass(frozen=True)
class PretrainedEntry:
    """One shipped model: release name, scale, its model card and its weights file."""

    name: str
    scale: int
    card: Mapping[str, Any] = field(repr=False)
    path: Traversable

    def metric(self, dataset: str, metric: str) -> float | None:
        """A card metric such as ("Set5", "psnr"), or None where the card lacks it."""
        return card_metric(self.card, dataset, metric)

    def gain_over_bicubic(self, dataset: str = "Set5") -> float | None:
        """PSNR gain over bicubic on `dataset` (the card's `bicubic` scores), or None if unknown."""
        psnr = self.metric(dataset, "psnr")
        baseline = card_metric({"metrics": self.card.get("bicubic", {})}, dataset, "psnr")
        return None if psnr is None or baseline is None else psnr - baseline

    @property
    def speed_vs_bicubic(self) -> float | None:
        """Measured output speed as a multiple of bicubic's in the same run (the card's `speed`)."""
        speed = self.card.get("speed")
        if not isinstance(speed, Mapping):
            return None
        value = speed.get("relative_to_bicubic")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def macs_per_pixel(self) -> float | None:
        """Convolution MACs per output pixel, as the card records them (`superres.models.complexity`)."""
        value = self.card.get("macs_per_output_pixel")
        return None if value is None else float(value)

    @property
    def perceptual(self) -> bool:
        """Trained for perceptual quality (a GAN), not PSNR: never the default nor `fast`."""
        return self.card.get("objective") == "perceptual"

    @property
    def real_world(self) -> bool:
        """Trained on the real-world degradation chain (the card's `degradation: real`): made for
        compressed, noisy or blurred inputs; its card's Set5 score is on clean LR, where it is not
        meant to win, so it is chosen by name or by `superres.inference.input_check`, never as the default."""
        return self.card.get("degradation") == "real"

    @property
    def denoise_base_of(self) -> str | None:
        """The real-world model whose `--denoise` slider this network is the 0 end of (the card's
        `denoise_base_of`, as Real-ESRGAN's weak-denoise network is its general model's), or None."""
        value = self.card.get("denoise_base_of")
        return str(value) if value else None

    @property
    def by_name_only(self) -> bool:
        """Not a candidate for `default`, `fast` or the clean-benchmark frontier."""
        return self.perceptual or self.real_world or self.denoise_base_of is not None

    @property
    def architecture(self) -> str:
        """The registered architecture the weights belong to, as the card states it."""
        return str(self.card.get("architecture") or self.card.get("model") or self.name)


def weights_root() -> Traversable:
    """The folder of shipped weights (a function so tests can point it elsewhere)."""
    return resources.files("superres") / "weights"


def card_metric(card: Mapping[str, Any], dataset: str, metric: str) -> float | None:
    """`card["metrics"][dataset][metric]`, matching the dataset name case-insensitively."""
    metrics = card.get("metrics")
    if not isinstance(metrics, Mapping):
        return None
    for key, values in metrics.items():
        if str(key).lower() == dataset.lower() and isinstance(values, Mapping):
            value = values.get(metric.lower(), values.get(metric.upper()))
            return float(value) if isinstance(value, (int, float)) else None
    return None


def list_pretrained() -> list[PretrainedEntry]:
    """The shipped weights, sorted by name then scale; empty when none ship."""
    root = weights_root()
    if not root.is_dir():
        return []
    entries = []
    for item in root.iterdir():
        match = _WEIGHTS_NAME.match(item.name)
        if match is None or not item.is_file():
            continue
        # The card sits beside the weights: same stem, .json.
        card_item = root / (item.name[: -len(".safetensors")] + ".json")
        entries.append(
            PretrainedEntry(
                name=match["name"],
                scale=int(match["scale"]),
                card=_load_card(card_item),
                path=item,
            )
        )
    return sorted(entries, key=lambda entry: (entry.name, entry.scale))


def _load_card(card_item: Traversable) -> dict[str, Any]:
    if not card_item.is_file():
        return {}
    try:
        card = json.loads(card_item.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        # A broken card must not hide the weights: list them without metrics and say why.
        logger.warning("ignoring unreadable model card %s: %s", card_item.name, error)
        return {}
    return card if isinstance(card, dict) else {}


def shipped_summary(entries: list[PretrainedEntry]) -> str:
    if not entries:
        return "no pretrained weights ship with this version"
    return "shipped: " + ", ".join(f"{entry.name} x{entry.scale}" for entry in entries)


def _find_entry(name: str, scale: int) -> PretrainedEntry:
    entries = list_pretrained()
    for entry in entries:
        if entry.name == name and entry.scale == scale:
            return entry
    raise ModelError(f"no pretrained model '{name}' for scale {scale}; {shipped_summary(entries)}")


@contextmanager
def _real_path(item: Traversable) -> Iterator[Path]:
    # A zipped install has no file on disk; `as_file` extracts one only for as long as needed.
    with resources.as_file(item) as path:
        yield Path(path)


def _load_checkpoint_model(path: Path, device: str) -> tuple[nn.Module, dict[str, Any]]:
    from superres.zoo.checkpoint import load_model

    model, metadata = load_model(path, device=device)
    model.eval()
    return model, metadata


def load_pretrained(name: str, scale: int, device: str = "cpu") -> nn.Module:
    """The shipped model `name` at `scale`, in eval mode on `device`.

    Unknown names or scales raise `ModelError` listing what ships. A real-world model whose card
    names a `default_denoise` strength is that blend (`load_denoised`).
    """
    entry = _find_entry(name, scale)
    default = entry.card.get("default_denoise")
    if default is not None:
        return load_denoised(name, scale, float(default), device)
    return attach_card(_load_entry(entry, device), entry.card)


def weights_fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """Changes whenever a parameter or buffer is replaced or modified in place.

    `_version` counts in-place writes (optimizer steps, `load_state_dict`), `data_ptr` catches
    replaced tensors (a copy, a move to another device); together they say whether a network
    still holds the weights something was measured or exported with.
    """
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((tensor.data_ptr(), tensor._version) for tensor in tensors)


def attach_card(model: nn.Module, card: Mapping[str, Any]) -> nn.Module:
    """`model` (the weights of a shipped card, just loaded) marked with that card; returns it.

    What the card measured about these weights (its `precision` entry: the PSNR cost of running
    them in bf16, which `superres.inference.precision` reads for `--precision auto`) holds only
    while the weights are unchanged: `card_of` checks that.
    """
    model.shipped_card = (dict(card), weights_fingerprint(model))
    return model


def card_of(model: nn.Module) -> Mapping[str, Any] | None:
    """The card of the shipped weights `model` was loaded with (`attach_card`), or None: a network
    built or trained here, or shipped weights changed since loading (fine-tuned, blended, copied or
    moved), whose card's measurements no longer describe it."""
    attached = getattr(model, "shipped_card", None)
    if not isinstance(attached, tuple) or len(attached) != 2:
        return None
    card, fingerprint = attached
    return card if fingerprint == weights_fingerprint(model) else None


def _load_entry(entry: PretrainedEntry, device: str = "cpu") -> nn.Module:
    """The weights of a shipped entry as they are in its file."""
    with _real_path(entry.path) as path:
        model, _ = _load_checkpoint_model(path, device)
    return model


def denoise_spec(name: str, strength: float) -> str:
    """The model name that asks for `name` at denoising strength `strength` (see `load_denoised`)."""
    return f"{name}@denoise={strength:g}"


def load_denoised(name: str, scale: int, strength: float, device: str = "cpu") -> nn.Module:
    """The real-world model `name` with its denoising turned to `strength` in [0, 1].

    As Real-ESRGAN's general model does with its two networks (`--denoise_strength`), the weights
    are interpolated: `strength * real + (1 - strength) * base`, where base is the card's
    `denoise_base`: either the clean network the real-world one was fine-tuned from (a Y model, in
    its RGB form of `superres.models.colour`: the same luminance output, no denoising learned), or,
    as Real-ESRGAN's weak-denoise ("wdn") network, an RGB network fine-tuned from the same start on
    lighter degradations. 1 is the trained model (noise and JPEG artefacts removed, some fine
    texture with them), 0 the base, which keeps more of them; both networks descend from the same
    weights, which is what makes the networks in between work. The name alone gives the card's
    `default_denoise` strength, chosen on Set5 (the validation set) where the fully trained network
    smooths too much.
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ModelError(f"a denoise strength lies in [0, 1], got {strength!r}")
    entry = _find_entry(name, scale)
    base_name = entry.card.get("denoise_base")
    if not base_name:
        sliders = sorted({other.name for other in list_pretrained() if other.card.get("denoise_base")})
        raise ModelError(f"'{name}' has no denoise strength (the models with one: {', '.join(sliders)})")
    model = _load_entry(entry)
    start = load_pretrained(str(base_name), scale)
    if start.info.channels_for(start.model_kwargs) != "RGB":  # a clean Y network: its RGB form
        start = start.info.to_rgb(start)
    base = _widened_like(start, model, entry.card).state_dict()
    import torch

    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            tensor.copy_(strength * tensor + (1.0 - strength) * base[key])
    model = model.to(device).eval()
    # The card measured the blend at its default strength; another strength is another network.
    default = entry.card.get("default_denoise")
    return attach_card(model, entry.card) if default is not None and float(default) == strength else model


def _widened_like(base: nn.Module, model: nn.Module, card: Mapping[str, Any]) -> nn.Module:
    """`base` as wide as `model`, where `model` was trained from `base` widened (Net2Net,
    `superres.models.widen`): widening is seeded, and the card's `denoise_base_widen_seed` (the
    training run's seed) rebuilds the very new channels `model` started from, so that the blend
    of the two networks stays between two descendants of the same weights."""
    width = model.model_kwargs.get("num_features")
    if base.model_kwargs.get("num_features") == width:
        return base
    seed = card.get("denoise_base_widen_seed")
    if base.info.widen is None or seed is None:
        raise ModelError(f"'{card.get('name')}': its denoise base has another width and no widening seed")
    return base.info.widen(base, width, int(seed))


def load_denoised_spec(spec: str, scale: int, device: str = "cpu") -> nn.Module:
    """The model a `NAME@denoise=S` name names (`superres.zoo.names` parses the grammar)."""
    match = _DENOISE_SPEC.match(spec)
    if match is None:
        raise ModelError(f"'{spec}' is not of the form NAME@denoise=S")
    try:
        strength = float(match["strength"])
    except ValueError:
        raise ModelError(f"{spec}: the denoise strength must be a number in [0, 1]") from None
    return load_denoised(match["name"], scale, strength, device)


def implied_scale(spec: str, scale: int | None) -> int:
    """`scale`, or when None: `DEFAULT_SCALE`, unless `spec` is a shipped name that ships at
    exactly one other scale (`span-gan` ships at x4 only: naming it asks for x4)."""
    if scale is not None:
        return int(scale)
    shipped = sorted(shipped_scales(spec))
    return shipped[0] if len(shipped) == 1 else DEFAULT_SCALE


def shipped_scales(spec: str) -> set[int]:
    """The scales the shipped model `spec` names ships at (`real@denoise=1`: those of `real`)."""
    name = spec.split("@", 1)[0]
    return {entry.scale for entry in list_pretrained() if entry.name == name}


def alias_target(spec: str, scale: int) -> str:
    """The model an alias (`default`, `fast`) names at `scale`; any other name as it is.

    A scale at which no trained model ships, while some ship at others, is a ModelError naming
    them, not a silent fall back to bicubic (which `--model bicubic` asks for by name)."""
    if spec not in (DEFAULT_ALIAS, FAST_ALIAS):
        return spec
    chosen = default_model_for(scale) if spec == DEFAULT_ALIAS else fastest_model_for(scale)
    trained = sorted({entry.scale for entry in list_pretrained()})
    if chosen == FALLBACK_MODEL and trained and scale not in trained:
        listed = ", ".join(f"x{s}" for s in trained)
        raise ModelError(
            f"no trained model ships for x{scale} (they ship for {listed}); "
            f"--model bicubic upscales x{scale} by interpolation"
        )
    return chosen


def default_model_for(scale: int) -> str:
    """The shipped PSNR-trained model with the best Set5 PSNR at `scale`; `"bicubic"` when none
    ships. Perceptual and real-world models (`PretrainedEntry.by_name_only`) are chosen by name only.

    Models within `DEFAULT_TIE_DB` of the best score are tied (five images cannot tell them
    apart), and the fastest of them wins (`_speed_rank`). Weights whose card lacks a Set5 PSNR
    still beat bicubic (shipping them implies training) but rank below any with a measured score.
    """
    candidates = [entry for entry in list_pretrained() if entry.scale == scale and not entry.by_name_only]
    if not candidates:
        return FALLBACK_MODEL
    scored = [entry for entry in candidates if entry.metric("Set5", "psnr") is not None]
    if not scored:
        return max(candidates, key=lambda entry: entry.name).name
    best = max(entry.metric("Set5", "psnr") for entry in scored)
    tied = [entry for entry in scored if entry.metric("Set5", "psnr") >= best - DEFAULT_TIE_DB]
    def rank(entry: PretrainedEntry) -> tuple[float, float, str]:
        return (_speed_rank(tied, entry), entry.metric("Set5", "psnr"), entry.name)

    return max(tied, key=rank).name


def _speed_rank(entries: list[PretrainedEntry], entry: PretrainedEntry) -> float:
    """Higher is faster: the card's speed relative to bicubic when every entry has one, else
    fewer MACs per output pixel, else 0 (then the score decides)."""
    if all(other.speed_vs_bicubic is not None for other in entries):
        return entry.speed_vs_bicubic
    if all(other.macs_per_pixel is not None for other in entries):
        return -entry.macs_per_pixel
    return 0.0


def fastest_model_for(scale: int) -> str:
    """The fastest shipped PSNR-trained model at `scale` among those that beat bicubic on Set5 by
    at least `FAST_MIN_GAIN_DB`; `"bicubic"` when none does.

    Fastest by the speed each card records as a multiple of bicubic's, measured in one run when the
    weights were published (a ratio, so a busy machine does not decide), when every candidate has
    one; otherwise by fewer MACs per output pixel. MACs alone can mislead on a CPU: ESPCN does more
    of them than FSRCNN but runs faster, its layers being the kind oneDNN fuses.
    """
    candidates = [
        entry for entry in list_pretrained()
        if entry.scale == scale and entry.macs_per_pixel is not None and not entry.by_name_only
        and (entry.gain_over_bicubic() or 0.0) >= FAST_MIN_GAIN_DB
    ]
    if not candidates:
        return FALLBACK_MODEL
    return max(candidates, key=lambda entry: (_speed_rank(candidates, entry), entry.name)).name


def load_checkpoint_file(path: Path, scale: int | None, device: str = "cpu") -> nn.Module:
    """The network a `superres train` checkpoint holds; `scale` None accepts its own."""
    if not path.is_file():
        raise ModelError(f"model checkpoint not found: {path}")
    model, metadata = _load_checkpoint_model(path, device)
    model_scale = int(getattr(model, "scale", metadata.get("scale", 0)))
    if scale is not None and model_scale != scale:
        raise ModelError(
            f"checkpoint {path} is for scale x{model_scale}, not the requested x{scale}"
        )
    return model


def write_model_card(
    folder: Path,
    name: str,
    scale: int,
    *,
    architecture: str,
    model_kwargs: Mapping[str, Any],
    recipe: str,
    training_seconds: float,
    hardware: str,
    date: str,
    metrics: Mapping[str, Mapping[str, float]],
) -> Path:
    """Write `<name>_x<scale>.json` in the layout `list_pretrained` reads; returns its path.

    `metrics` maps a benchmark name to `{"psnr": ..., "ssim": ...}` from `superres evaluate`.
    """
    card = {
        "name": name,
        "scale": int(scale),
        "architecture": architecture,
        "model_kwargs": dict(model_kwargs),
        "recipe": recipe,
        "training_seconds": float(training_seconds),
        "hardware": hardware,
        "date": date,
        "metrics": {dataset: dict(values) for dataset, values in metrics.items()},
        "protocol": PROTOCOL,
    }
    path = Path(folder) / f"{name}_x{scale}.json"
    atomic_write_bytes(path, (json.dumps(card, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    return path
