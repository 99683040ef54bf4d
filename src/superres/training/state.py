"""What a training run carries from one call to the next, and how it is saved and restored.

`RunState` holds the counters (step, best score, history); `save_training_checkpoint` writes them
with the weights, optimizer, scaler and RNG states into last.safetensors, and
`restore_training_state` loads all of it back for `superres train --resume`. A new run can instead
start from trained weights alone (`load_initial_weights`, the `init_weights` setting).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from superres.atomic import describe_os_error
from superres.errors import CheckpointError, ConfigError
from superres.images.limits import memory_bytes
from superres.models import create_model
from superres.models.reparam import copy_between_forms, has_branches
from superres.training.config import TrainConfig
from superres.training.ema import WeightAverage
from superres.training.runlog import read_history
from superres.zoo.checkpoint import (
    OPTIMIZER_PREFIX,
    load_checkpoint,
    load_state_strictly,
    optimizer_state_from_storage,
    optimizer_state_to_storage,
    save_checkpoint,
)
from superres.zoo.names import resolve_model
from superres.zoo.pretrained import shipped_scales

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.safetensors"
#: The checkpoint before `last`, kept until the next one is written and verified: what a run
#: resumes from when `last` is found damaged or missing.
PREVIOUS_CHECKPOINT = "last-previous.safetensors"
BEST_CHECKPOINT = "best.safetensors"
# Optimizer implementation switches that belong to this process, not to the saved state: a run
# saved on CPU and resumed on CUDA must get the fused CUDA kernel, and the other way round.
OPTIMIZER_IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")
#: Factor on the default initialisation of the layers a cross-scale warm start leaves fresh.
FRESH_LAYER_SCALE = 0.01


class TrainingCompanion(Protocol):
    """More state a run carries beside the model's (a GAN's discriminator and its optimizer)."""

    def state_tensors(self) -> dict[str, torch.Tensor]: ...

    def training_metadata(self) -> dict[str, Any]: ...

    def load_state(self, path: Path, extra: dict[str, torch.Tensor], training: dict[str, Any]) -> None: ...


@dataclass
class RunState:
    """Counters that a checkpoint carries from one call to the next."""

    step: int = 0
    elapsed_before_s: float = 0.0  # training wall time of earlier calls (for history's elapsed_s)
    best_psnr: float | None = None
    best_ssim: float | None = None
    best_step: int | None = None
    last_psnr: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_metadata(config: TrainConfig, model: nn.Module, state: RunState, step: int) -> dict[str, Any]:
    """What every checkpoint of a run says about itself (enough to rebuild and judge the model)."""
    return {
        "model": config.model,
        "scale": config.scale,
        "model_kwargs": getattr(model, "model_kwargs", config.model_kwargs),
        "channels": config.channels,
        "degradation": config.degradation,
        "step": step,
        "config": config.to_dict(),
        "metrics": {
            "val_data": config.val_data,
            "val_psnr": state.last_psnr,
            "best_psnr": state.best_psnr,
            "best_ssim": state.best_ssim,
            "best_step": state.best_step,
        },
    }


def save_training_checkpoint(
    path: Path,
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: RunState,
    step: int,
    row: dict[str, Any],
    average: WeightAverage | None = None,
    companion: TrainingCompanion | None = None,
) -> None:
    """last.safetensors: weights plus everything `restore_training_state` needs."""
    optimizer_tensors, optimizer_json = optimizer_state_to_storage(optimizer)
    extra = dict(optimizer_tensors)
    if average is not None:
        extra.update(average.state_tensors())
    if companion is not None:
        extra.update(companion.state_tensors())
    extra["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            extra[f"rng.cuda.{index}"] = cuda_state
    metadata = checkpoint_metadata(config, model, state, step)
    metadata["training"] = {
        "step": step,
        "elapsed_s": row["elapsed_s"],
        "optimizer": optimizer_json,
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "schedule": {"kind": config.schedule, "learning_rate": row["learning_rate"]},
    }
    if companion is not None:
        metadata["training"].update(companion.training_metadata())
    # Written beside `last`, read back (the content hash) and only then put in its place; the
    # last one before it stays as the previous checkpoint.
    fresh = path.with_name(f".{path.name}.new")
    try:
        save_checkpoint(fresh, model, metadata, extra)
    except CheckpointError as error:
        cause = error.__cause__
        reason = describe_os_error(cause) if isinstance(cause, OSError) else str(error)
        kept = "; the previous checkpoint is kept" if path.is_file() else ""
        raise CheckpointError(f"cannot write checkpoint {path} ({reason}){kept}") from cause
    load_checkpoint(fresh)
    if path.is_file():
        os.replace(path, path.with_name(PREVIOUS_CHECKPOINT))
    os.replace(fresh, path)


#: float32 copies of every parameter a run holds: weights, gradients, Adam's two moments, an EMA.
TRAINING_COPIES_PER_PARAMETER = 5


def check_model_fits(config: TrainConfig) -> None:
    """Refuse, in one line, a network whose training state alone exceeds this machine's memory
    (a typo such as num_features 100000 would otherwise try to allocate a terabyte): it is built
    first on the meta device, which allocates nothing, and its parameters counted."""
    try:
        with torch.device("meta"):
            probe = create_model(config.model, config.scale, **config.model_kwargs)
    except (NotImplementedError, RuntimeError):
        return  # a network that cannot be built without data: the real build says what is wrong
    parameters = sum(parameter.numel() for parameter in probe.parameters())
    needed = parameters * 4 * TRAINING_COPIES_PER_PARAMETER
    memory = memory_bytes()
    if memory is not None and needed > memory:
        raise ConfigError(
            f"model_kwargs {config.model_kwargs} make a {config.model} of {parameters:,} parameters, whose "
            f"training state needs about {needed / 2**30:.1f} GiB; this machine has {memory / 2**30:.1f} GiB"
        )


def match_optimizer_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every per-parameter state tensor its parameter's device, dtype and memory format.

    Checkpoints store contiguous tensors; `load_state_dict` fixes device and dtype but not the
    channels-last strides of a model trained channels-last, and CUDA's fused Adam refuses
    parameters and moments whose strides differ ("must have same dtype, device, and layout").
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param).copy_(value)


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    extra: dict[str, torch.Tensor],
    json_part: dict[str, Any],
    prefix: str = OPTIMIZER_PREFIX,
) -> None:
    """Restore an optimizer saved by `optimizer_state_to_storage(optimizer, prefix)`, keeping this
    process's implementation switches and the parameters' memory layout."""
    optimizer_state = optimizer_state_from_storage(extra, json_part, prefix)
    for saved, current in zip(optimizer_state["param_groups"], optimizer.param_groups):
        for key in OPTIMIZER_IMPLEMENTATION_KEYS:
            if key in current:
                saved[key] = current[key]
    optimizer.load_state_dict(optimizer_state)
    match_optimizer_state_layout(optimizer)


def load_initial_weights(model: nn.Module, config: TrainConfig) -> None:
    """Copy the weights `config.init_weights` names (checkpoint path or shipped name) into `model`.

    Same scale: every tensor, strictly, or a wider network (the card's `widen` hook: the trained
    network's output at step 0, new features to grow into), or a Y network turned RGB (the card's
    `to_rgb` hook: its Y output, bicubic chroma), or the same network with or without
    re-parameterisable branches (`superres.models.reparam.copy_between_forms`: again the trained
    output at step 0). Another scale of the same
    architecture (a x2 run starting a x4 one): the tensors whose names and shapes match (the
    body); the upsampler stays fresh.
    """
    # A shipped name at this run's scale if it ships there; otherwise a checkpoint's own scale,
    # or x2 for a name.
    wanted = config.scale if config.scale in shipped_scales(config.init_weights) else None
    source = resolve_model(config.init_weights, wanted)
    if _is_widening(source, model, config.scale):
        widened = source.info.widen(source, model.model_kwargs["num_features"], config.seed)
        load_state_strictly(model, widened.state_dict(), config.init_weights)
        logger.info(
            "starting from the weights of %s, widened from %d to %d features (same output at step 0)",
            config.init_weights, source.model_kwargs["num_features"], model.model_kwargs["num_features"],
        )
        return
    if _is_colourising(source, model, config.scale):
        load_state_strictly(model, source.info.to_rgb(source).state_dict(), config.init_weights)
        logger.info(
            "starting from the weights of %s, turned from Y into RGB (its Y output, bicubic chroma)",
            config.init_weights,
        )
        return
    if _differs_only_in_branches(source, model, config.scale):
        copy_between_forms(source, model)
        logger.info(
            "starting from the weights of %s, %s training-time branches (same output at step 0)",
            config.init_weights, "with" if has_branches(model) else "folded, without",
        )
        return
    if int(source.scale) == config.scale:
        # Strict: a different architecture or depth is a one-line ModelError, not a partial load.
        load_state_strictly(model, source.state_dict(), config.init_weights)
        logger.info("starting from the weights of %s", config.init_weights)
        return
    load_matching_tensors(model, source, config.init_weights)


def _is_widening(source: nn.Module, model: nn.Module, scale: int) -> bool:
    """Whether `model` is `source` (one whose card can widen it) with more features, nothing else new."""
    if source.info.widen is None or model.info.name != source.info.name or int(source.scale) != scale:
        return False
    old, new = dict(source.model_kwargs), dict(model.model_kwargs)
    if new["num_features"] <= old["num_features"] or new["reparam_gain"] != 0:
        return False
    ignored = ("num_features", "reparam_gain")
    return all(old[key] == new[key] for key in old if key not in ignored)


def _is_colourising(source: nn.Module, model: nn.Module, scale: int) -> bool:
    """Whether `model` is `source` (a Y network its card can colourise) on RGB, plain, nothing else new."""
    if source.info.to_rgb is None or model.info.name != source.info.name or int(source.scale) != scale:
        return False
    old, new = dict(source.model_kwargs), dict(model.model_kwargs)
    if old["channels"] != "Y" or new["channels"] != "RGB" or new["reparam_gain"] != 0:
        return False
    return all(old[key] == new[key] for key in old if key not in ("channels", "reparam_gain"))


def _differs_only_in_branches(source: nn.Module, model: nn.Module, scale: int) -> bool:
    """Whether `model` is `source` at this scale, one with re-parameterisable branches and one not."""
    if source.info.name != model.info.name or int(source.scale) != scale:
        return False
    if has_branches(source) == has_branches(model):
        return False
    old, new = dict(source.model_kwargs), dict(model.model_kwargs)
    return all(old.get(key) == new.get(key) for key in {*old, *new} if key != "reparam_gain")


def load_matching_tensors(model: nn.Module, source: nn.Module, label: str) -> None:
    """Copy into `model` the tensors of `source` (same architecture, other scale) whose shapes match."""
    if source.info.name != model.info.name:
        raise CheckpointError(
            f"{label} holds a '{source.info.name}' model; a '{model.info.name}' run cannot start from it"
        )
    source_kwargs = dict(getattr(source, "model_kwargs", {}))
    if source_kwargs != dict(getattr(model, "model_kwargs", {})):
        raise CheckpointError(
            f"{label} holds a '{source.info.name}' with {source_kwargs}; this run's has "
            f"{model.model_kwargs}: only the scale may differ when starting from another scale"
        )
    target = model.state_dict()
    taken = {
        name: tensor for name, tensor in source.state_dict().items()
        if name in target and target[name].shape == tensor.shape
    }
    if not taken:
        raise CheckpointError(f"{label}: no tensor has the shape of this model's; different kwargs?")
    fresh = sorted(set(target) - set(taken))
    model.load_state_dict(taken, strict=False)
    # The fresh layers start quiet, so that the model starts near what the body and any bicubic
    # skip give rather than at the noise a default-initialised upsampler adds.
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in fresh and tensor.is_floating_point():
                tensor.mul_(0.0 if name.endswith("bias") else FRESH_LAYER_SCALE)
    logger.info(
        "starting from the x%d weights of %s: %d tensors taken, %d fresh (%s)",
        source.scale, label, len(taken), len(fresh), ", ".join(fresh) or "none",
    )


def _load_last_or_previous(run_dir: Path) -> tuple[Path, tuple]:
    """(path, load_checkpoint(path)) of last.safetensors, or of the previous checkpoint when the
    last is damaged or missing (one warning line); the last's error when neither loads."""
    last, previous = run_dir / LAST_CHECKPOINT, run_dir / PREVIOUS_CHECKPOINT
    try:
        return last, load_checkpoint(last)
    except CheckpointError as error:
        if not previous.is_file():
            raise
        logger.warning("%s; resuming from the checkpoint before it, %s", error, previous.name)
        return previous, load_checkpoint(previous)


def restore_training_state(
    run_dir: Path,
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    average: WeightAverage | None = None,
    companion: TrainingCompanion | None = None,
) -> RunState:
    """Load last.safetensors into model, optimizer, scaler, weight average, `companion` and torch
    RNG; return the counters. A run that had no weight average starts one from the restored
    weights."""
    path, (state_dict, metadata, extra) = _load_last_or_previous(run_dir)
    if metadata["model"] != config.model or int(metadata["scale"]) != config.scale:
        raise CheckpointError(
            f"{path} holds a '{metadata['model']}' x{metadata['scale']} model, but the run is "
            f"configured for '{config.model}' x{config.scale}"
        )
    training = metadata.get("training")
    if not training:
        raise CheckpointError(f"{path} holds weights only, no training state to resume from")
    load_state_strictly(model, state_dict, path)
    if average is not None and not average.load_state_tensors(extra, model):
        logger.info("%s has no weight average yet: starting one from its weights", path)
    load_optimizer_state(optimizer, extra, training["optimizer"])
    if companion is not None:
        companion.load_state(path, extra, training)
    if scaler.is_enabled() and training.get("scaler"):
        scaler.load_state_dict(training["scaler"])
    torch.set_rng_state(extra["rng.torch"])
    cuda_names = [name for name in extra if name.startswith("rng.cuda.")]
    cuda_names.sort(key=lambda name: int(name.rsplit(".", 1)[1]))
    cuda_states = [extra[name] for name in cuda_names]
    if device.type == "cuda" and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    step = int(training["step"])
    metrics = metadata.get("metrics", {})
    history = [row for row in read_history(run_dir) if int(row["step"]) <= step]
    logger.info("resuming %s from step %d", run_dir, step)
    return RunState(
        step=step,
        elapsed_before_s=float(training.get("elapsed_s", 0.0)),
        best_psnr=metrics.get("best_psnr"),
        best_ssim=metrics.get("best_ssim"),
        best_step=metrics.get("best_step"),
        last_psnr=metrics.get("val_psnr"),
        history=history,
    )
