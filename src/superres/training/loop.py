"""The trainer: `train(config, run_dir)` fits one model on LR/HR patch pairs, resumably.

A run folder holds everything about one run:

    config.json        the effective TrainConfig (what `--resume RUN_DIR` reads back)
    last.safetensors   weights + full training state (optimizer, scaler, RNG, step, best so far)
    best.safetensors   weights with the highest validation PSNR (only when val_data is set)
    history.csv        step, epoch, loss, learning_rate, val_psnr, val_ssim, elapsed_s, hr_pixels_per_s
    psnr.png, loss.png curves drawn from history.csv

Exact resumption: the batch of step k is drawn with `np.random.default_rng([seed, rank, k])`,
the learning rate is a pure function of the step, and everything else that changes (weights,
optimizer and scaler state, torch RNG) is in last.safetensors, so a killed run resumed to the end
ends with bit-identical weights on CPU. Because no step depends on a previous step's random
state, the host can sample the next batch while the GPU still works on the last one.

Speed on CUDA: bf16 autocast (fp16 + GradScaler where bf16 is missing), channels-last layout,
cuDNN autotuning, fused Adam, the training set kept on the GPU as uint8 with batches cut there
(`DeviceBatches`: only the crop positions cross from the host, pinned), and no host/device
synchronisation between the "sync points" (every `log_every`, `val_every`, `checkpoint_every`
steps), where losses are checked for NaN, logged and written. On a CPU: channels-last, and bf16
autocast where the CPU has AMX tiles (`superres.inference.fast.has_amx_bf16`; 3.4x per step for SPAN).

Distributed: under `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK set) the same code runs on every
rank with DistributedDataParallel; each rank draws its own `batch_size` pairs from its own random
stream (global batch = batch_size * world_size), only rank 0 validates, writes files and logs.
Stop decisions (time limit, Ctrl-C, NaN) are agreed at sync points with one all-reduce.

The loop in `_train` reads top to bottom: `_set_up` builds everything a run needs (`_Run`),
`_step` is one optimizer step, `_sync_point` is where the host waits for the device, checks,
validates, logs and saves, and `_summary` says what the call did. What a checkpoint carries and
how it is restored lives in `superres.training.state`; the history file and plots in
`superres.training.runlog`; the progress bar, log lines and stop requests in `superres.training.progress`;
the process group in `superres.training.distributed`. Pixel losses are named by the table
`superres.training.losses.PIXEL_LOSSES`, optimizers by `superres.training.config.OPTIMIZERS`.

GAN training (`config.gan`): `superres.training.gan.trainer.GanTraining` holds the discriminator and its
optimizer, runs the step in place of the pixel-loss one, adds its loss terms to the history and
its state to last.safetensors. Without it, nothing of a run (steps, files) changes.

Distillation (`config.teacher`): `superres.training.distill` runs the teacher once over the training
images; each step then cuts the teacher's output where it cuts HR and mixes the two losses.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from superres.errors import CheckpointError, ConfigError, TrainingDiverged
from superres.evaluation.protocol import Protocol, evaluate_model
from superres.images import list_images
from superres.inference.fast import has_amx_bf16, retain_freed_memory
from superres.models import create_model
from superres.training.config import (
    OPTIMIZERS,
    TrainConfig,
    missing_path_message,
    resolve_config,
    save_config,
)
from superres.training.data import DeviceBatches, PairedPatchSampler, open_patch_source
from superres.training.distill import distilled_loss, teacher_images
from superres.training.distributed import Distributed, all_reduce_totals, setup_distributed
from superres.training.ema import WeightAverage
from superres.training.losses import pixel_loss
from superres.training.progress import (
    log_progress,
    log_training_start,
    make_progress_bar,
    progress_logging,
    stop_requests,
)
from superres.training.runlock import hold_run_lock
from superres.training.runlog import append_history, history_columns, write_history, write_plots
from superres.training.state import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    RunState,
    check_model_fits,
    checkpoint_metadata,
    load_initial_weights,
    restore_training_state,
    save_training_checkpoint,
)
from superres.zoo.checkpoint import save_checkpoint

logger = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    """What a call to `train` did."""

    run_dir: Path
    steps: int
    total_steps: int
    stop_reason: str  # completed | time_limit | interrupted | stop_after
    best_psnr: float | None
    best_ssim: float | None
    best_step: int | None
    elapsed_s: float  # wall time of this call
    train_s: float  # time spent in training steps (validation and checkpoints left out)
    hr_pixels_per_s: float
    last_checkpoint: Path | None
    best_checkpoint: Path | None


# --- the trainer ------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
) -> TrainSummary:
    """Train `config.model` into `run_dir`; `resume` continues from RUN_DIR/last.safetensors.

    `stop_after=k` returns right after step k as if the process were killed there (for tests of
    resumption): nothing beyond what step k's regular schedule wrote is saved.
    """
    call_started = time.monotonic()
    run_dir = Path(run_dir)
    config = resolve_config(config)
    device = choose_device(config)
    threads_before = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    dist = setup_distributed(device)
    try:
        if device.type == "cuda":
            index = dist.local_rank if dist.world_size > 1 else (device.index or torch.cuda.current_device())
            device = torch.device("cuda", index)
            torch.cuda.set_device(device)
        # Rank 0 writes the folder, so rank 0 alone holds its lock. The folder is checked before
        # (a bad --resume creates nothing) and again under the lock (a run that started meanwhile).
        check_run_dir(run_dir, resume)
        with hold_run_lock(run_dir) if dist.is_main else contextlib.nullcontext():
            return _train(config, run_dir, device, dist, resume, stop_after, call_started)
    finally:
        torch.set_num_threads(threads_before)  # a library call should not leave the process changed
        if dist.started_here:
            torch.distributed.destroy_process_group()


def _train(
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    dist: Distributed,
    resume: bool,
    stop_after: int | None,
    call_started: float,
) -> TrainSummary:
    run = _set_up(config, run_dir, device, dist, resume)
    clock = _Clock()
    stop_reason = "completed"
    progress = make_progress_bar(run.total_steps, run.state.step, dist)
    with stop_requests(config.max_minutes, call_started) as stop_requested, progress_logging(progress):
        run.model.train()
        for step in range(run.state.step + 1, run.total_steps + 1):
            learning_rate = _step(run, step)
            clock.steps_this_call, clock.window_steps = clock.steps_this_call + 1, clock.window_steps + 1
            progress.update(1)

            is_last = step == run.total_steps
            due_validation = run.val_dir is not None and (step % config.val_every == 0 or is_last)
            due_checkpoint = step % config.checkpoint_every == 0 or is_last
            due_log = step % config.log_every == 0 or is_last
            local_stop = stop_requested()
            stop_everywhere = False
            # One process decides alone; several agree at scheduled sync points only.
            if due_log or due_validation or due_checkpoint or (local_stop and dist.world_size == 1):
                stop_everywhere = _sync_point(
                    run, step, learning_rate, clock, local_stop, due_validation, due_checkpoint, progress
                )
                if stop_everywhere:
                    stop_reason = stop_requested.reason or "time_limit"
            if stop_after == step:
                stop_reason = "stop_after"
                break
            if stop_everywhere:
                break
        progress.close()
    return _summary(run, clock, stop_reason, call_started)


# --- the pieces of the loop -------------------------------------------------------------------


@dataclass
class _Run:
    """Everything `_set_up` builds for one call of `train`, and what the loop changes (`state`)."""

    config: TrainConfig
    run_dir: Path
    device: torch.device
    dist: Distributed
    batches: DeviceBatches
    val_dir: Path | None
    steps_per_epoch: int
    total_steps: int
    hr_pixels_per_step: int
    model: nn.Module  # the plain module: what checkpoints hold
    net: nn.Module  # what the step runs: the model, wrapped by DDP and/or torch.compile
    released: nn.Module  # what validation scores and best.safetensors holds
    average: WeightAverage | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_function: Any  # superres.training.losses.pixel_loss(config.loss)
    autocast: torch.autocast
    state: RunState
    gan: Any = None  # superres.training.gan.trainer.GanTraining when config.gan (imported only then)
    pending_losses: list[torch.Tensor] = field(default_factory=list)  # since the last sync point

    @property
    def last_path(self) -> Path:
        return self.run_dir / LAST_CHECKPOINT

    @property
    def best_path(self) -> Path:
        return self.run_dir / BEST_CHECKPOINT


@dataclass
class _Clock:
    """Steps and seconds of this call: the window since the last sync point, and the totals."""

    loop_started: float = field(default_factory=time.monotonic)
    window_started: float = field(default_factory=time.monotonic)
    window_steps: int = 0
    steps_this_call: int = 0
    train_s: float = 0.0  # time in training steps, validation and checkpoints left out

    def close_window(self) -> float:
        """Seconds of the window, added to `train_s` (measured after the host waited)."""
        window_s = time.monotonic() - self.window_started
        self.train_s += window_s
        return window_s

    def open_window(self) -> None:
        self.window_started, self.window_steps = time.monotonic(), 0


def _set_up(
    config: TrainConfig, run_dir: Path, device: torch.device, dist: Distributed, resume: bool
) -> _Run:
    """Data, model, optimizer and state (restored when resuming); the run folder's config and history."""
    check_run_dir(run_dir, resume)
    source = open_patch_source(
        config.train_data,
        scale=config.scale,
        patch_size=config.patch_size,
        degradation=config.degradation,
        channels=config.channels,
        augment=config.augment,
        degradation_options=config.degradation_options,
    )
    val_dir = check_val_dir(config.val_data)
    global_batch = config.batch_size * dist.world_size
    steps_per_epoch = source.steps_per_epoch(global_batch)
    total_steps = config.iterations or math.ceil(config.epochs * steps_per_epoch)

    check_model_fits(config)
    torch.manual_seed(config.seed)  # the one place torch is seeded: it decides the initial weights
    if device.type == "cpu":
        # Keep freed activation buffers in the heap: otherwise every step page-faults them again.
        retain_freed_memory()
    model = create_model(config.model, config.scale, **config.model_kwargs).to(device)
    channels_last = use_channels_last(config, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    taught = None
    if config.teacher is not None:
        if not isinstance(source, PairedPatchSampler):
            raise ConfigError("a teacher needs HR images sampled on the fly, not a prepared patch file")
        taught = teacher_images(config, source.lr_images, device, dist)
    batches = DeviceBatches(source, device, channels_last=channels_last, teacher_images=taught)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: autotuning pays off at once
    optimizer_class = getattr(torch.optim, OPTIMIZERS[config.optimizer])
    optimizer = optimizer_class(
        model.parameters(),
        lr=config.learning_rate,
        betas=config.betas,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    amp_dtype = choose_amp_dtype(config, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    state = RunState()
    if config.init_weights and not resume:
        load_initial_weights(model, config)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    gan = None
    if config.gan:
        from superres.training.gan.trainer import GanTraining

        gan = GanTraining(config, device, dist, channels_last)
    if resume:
        state = restore_training_state(run_dir, config, model, optimizer, scaler, device, average, gan)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir)
        write_history(run_dir, state.history, history_columns(gan is not None, batches.on_host))
    net: nn.Module = model
    if dist.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile != "off":
        # Fewer, fused kernels for the training forward/backward; validation and checkpoints use
        # the plain module, whose weights the compiled one shares.
        net = torch.compile(net, mode=None if config.compile == "default" else config.compile)
    autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
    log_training_start(config, dist, device, amp_dtype, channels_last, source, total_steps, state.step)
    return _Run(
        config=config,
        run_dir=run_dir,
        device=device,
        dist=dist,
        batches=batches,
        val_dir=val_dir,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        hr_pixels_per_step=global_batch * (config.scale * config.patch_size) ** 2,
        model=model,
        net=net,
        # The weight average when there is one.
        released=average.average if average is not None else model,
        average=average,
        optimizer=optimizer,
        scaler=scaler,
        loss_function=pixel_loss(config.loss),
        autocast=autocast,
        state=state,
        gan=gan,
    )


def _step(run: _Run, step: int) -> float:
    """One optimizer step (1-based `step`); its loss is kept on the device until the sync point.

    The batch depends on (seed, rank, step) alone, so a resumed run draws what the killed one would.
    """
    config, optimizer, scaler = run.config, run.optimizer, run.scaler
    learning_rate = learning_rate_at(config, step, run.total_steps)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    rng = np.random.default_rng([config.seed, run.dist.rank, step])
    if run.batches.has_teacher:
        lr, hr, taught = run.batches.sample_taught(config.batch_size, rng)
    else:
        (lr, hr), taught = run.batches.sample(config.batch_size, rng), None
    if run.gan is not None:
        loss = run.gan.step(run.net, run.model, lr, hr, learning_rate, optimizer, scaler, run.autocast)
        return _after_step(run, step, loss, learning_rate)
    with run.autocast:
        sr = run.net(lr)
    if taught is None:
        loss = run.loss_function(sr.float(), hr)
    else:
        loss = distilled_loss(run.loss_function, sr.float(), hr, taught, config.distill_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if config.grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return _after_step(run, step, loss, learning_rate)


def _after_step(run: _Run, step: int, loss: torch.Tensor, learning_rate: float) -> float:
    """The weight average, the pending loss and the step count, after either kind of step."""
    if run.average is not None:
        run.average.update(run.model, step)
    run.pending_losses.append(loss.detach())
    run.state.step = step
    return learning_rate


def _sync_point(
    run: _Run,
    step: int,
    learning_rate: float,
    clock: _Clock,
    local_stop: bool,
    due_validation: bool,
    due_checkpoint: bool,
    progress: Any,
) -> bool:
    """The host waits for the device here, and only here: check the losses, then (rank 0) log,
    validate and save. Returns whether every process stops now (a stop also validates and saves).
    """
    config, state, dist = run.config, run.state, run.dist
    mean_loss, first_bad, stop_everywhere = agree_at_sync_point(
        run.pending_losses, step, run.model, local_stop, dist, run.scaler.is_enabled()
    )
    run.pending_losses.clear()
    window_s = clock.close_window()
    if first_bad is not None:
        good = run.last_path if run.last_path.is_file() else "none"
        raise TrainingDiverged(f"loss became nan at step {first_bad}; last good checkpoint: {good}")
    if stop_everywhere:
        due_validation, due_checkpoint = run.val_dir is not None, True
    row = {
        "step": step,
        "epoch": round(step / run.steps_per_epoch, 4),
        "loss": mean_loss,
        "learning_rate": learning_rate,
        "val_psnr": None,
        "val_ssim": None,
        "elapsed_s": round(state.elapsed_before_s + time.monotonic() - clock.loop_started, 2),
        "hr_pixels_per_s": round(clock.window_steps * run.hr_pixels_per_step / max(window_s, 1e-9), 1),
    }
    if run.gan is not None:
        row.update(run.gan.window_means())
    if run.batches.on_host:
        row["degrade_s_per_step"] = round(run.batches.take_host_seconds() / max(clock.window_steps, 1), 4)
    if dist.is_main:
        if due_validation:
            validate_into(row, state, run.released, run.val_dir, config, run.device)
        append_history(run.run_dir, row, history_columns(run.gan is not None, run.batches.on_host))
        state.history.append(row)
        if due_validation:
            if state.best_step == step:
                metadata = checkpoint_metadata(config, run.model, state, step)
                save_checkpoint(run.best_path, run.released, metadata)
            write_plots(run.run_dir, state.history)
        if due_checkpoint:
            save_training_checkpoint(
                run.last_path, config, run.model, run.optimizer, run.scaler, state, step, row, run.average,
                run.gan,
            )
        seconds = time.monotonic() - clock.loop_started
        log_progress(row, run.total_steps, state, progress, clock.steps_this_call, seconds)
    clock.open_window()
    return stop_everywhere


def _summary(run: _Run, clock: _Clock, stop_reason: str, call_started: float) -> TrainSummary:
    """Final plots (unless stopped as if killed) and what the call did, logged by rank 0."""
    if run.dist.is_main and stop_reason != "stop_after" and clock.steps_this_call > 0:
        write_plots(run.run_dir, run.state.history)
    if stop_reason == "stop_after":
        clock.close_window()
    train_s = clock.train_s
    summary = TrainSummary(
        run_dir=run.run_dir,
        steps=run.state.step,
        total_steps=run.total_steps,
        stop_reason=stop_reason,
        best_psnr=run.state.best_psnr,
        best_ssim=run.state.best_ssim,
        best_step=run.state.best_step,
        elapsed_s=time.monotonic() - call_started,
        train_s=train_s,
        hr_pixels_per_s=clock.steps_this_call * run.hr_pixels_per_step / train_s if train_s > 0 else 0.0,
        last_checkpoint=run.last_path if run.last_path.is_file() else None,
        best_checkpoint=run.best_path if run.best_path.is_file() else None,
    )
    if run.dist.is_main:
        best = "-"
        if summary.best_psnr is not None:
            best = f"{summary.best_psnr:.3f} dB (step {summary.best_step})"
        logger.info(
            "%s at step %d/%d: best PSNR %s, %.0f HR px/s, %.1f s",
            stop_reason, summary.steps, run.total_steps, best, summary.hr_pixels_per_s, summary.elapsed_s,
        )
    return summary


# --- set-up ---------------------------------------------------------------------------------


def choose_device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but PyTorch sees no CUDA GPU")
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def choose_amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU has it, else fp16 (with a GradScaler); on a CPU, bf16 only with AMX.

    On a Xeon with AMX tiles, oneDNN runs bf16 convolutions on them: a SPAN-32 training step was
    3.4x faster than in float32, and the same 8,000-step run ended 0.015 dB below float32 on Set5,
    within 0.02 dB of it from step 2,000 on (recipes/span-x2-bf16.json against span-x2.json, same
    seed; README "Training"). Without AMX (AVX-512 BF16 alone) bf16 was slower than float32, so
    "auto" keeps float32 there.
    """
    if config.amp == "off":
        return None
    if config.amp == "auto" and device.type != "cuda":
        return torch.bfloat16 if has_amx_bf16() else None
    if config.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp 'fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    if config.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if config.amp == "bf16" else torch.float16


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    # "auto" is on everywhere: cuDNN's NHWC kernels on GPUs, and on CPUs oneDNN's (measured by
    # `superres bench`: 1.1x for RED20, 1.6-2.6x for SRCNN training steps on a 2-core machine).
    return True if config.channels_last == "auto" else bool(config.channels_last)


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """Refuse to start over an existing run (its checkpoints would be overwritten)."""
    if resume:
        if not (run_dir / LAST_CHECKPOINT).is_file():
            raise CheckpointError(f"cannot resume: {run_dir / LAST_CHECKPOINT} not found")
        return
    for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):
        if (run_dir / name).exists():
            raise ConfigError(
                f"{run_dir} already holds a training run ({name}); resume it or choose another run dir"
            )


def check_val_dir(val_data: str | None) -> Path | None:
    if val_data is None:
        return None
    val_dir = Path(val_data)
    if not val_dir.is_dir():
        raise ConfigError(missing_path_message("validation folder", val_dir))
    if not list_images(val_dir):
        raise ConfigError(f"no images found in validation folder {val_dir}")
    return val_dir


def learning_rate_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of 1-based `step`: optional linear warm-up, then the schedule."""
    base = config.learning_rate
    if config.warmup_steps and step <= config.warmup_steps:
        return base * step / config.warmup_steps
    if config.schedule == "step":
        return base * config.gamma ** ((step - 1) // config.step_size)
    if config.schedule == "cosine":
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps - 1) / span)
        floor = config.min_learning_rate
        return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base


# --- sync points ----------------------------------------------------------------------------


def agree_at_sync_point(
    pending_losses: list[torch.Tensor],
    step: int,
    model: nn.Module,
    local_stop: bool,
    dist: Distributed,
    scaler_enabled: bool,
) -> tuple[float | None, int | None, bool]:
    """(mean loss of the window, first step with a non-finite loss or None, stop everywhere).

    Losses and weights are checked here, before anything is written, so that a checkpoint never
    holds diverged weights. With a GradScaler, an inf/nan loss is a skipped fp16 step, not a
    divergence, unless every step of the window was one or the weights themselves broke.
    """
    losses = torch.stack(pending_losses).float().cpu().numpy().astype(np.float64)
    finite = np.isfinite(losses)
    first_step = step - len(losses) + 1
    weights_finite = bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all())
    bad_step: int | None = None
    if not finite.all() and (not (scaler_enabled and weights_finite) or not finite.any()):
        bad_step = first_step + int(np.argmin(finite))
    elif not weights_finite:
        bad_step = step
    totals = all_reduce_totals(
        np.array([losses[finite].sum(), finite.sum()], dtype=np.float64),
        np.array([-1 if bad_step is None else bad_step, float(local_stop)], dtype=np.float64),
        dist,
    )
    mean_loss = float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
    first_bad = int(totals[2]) if totals[2] >= 0 else None
    return mean_loss, first_bad, bool(totals[3] > 0)


def validate_into(
    row: dict[str, Any],
    state: RunState,
    model: nn.Module,
    val_dir: Path,
    config: TrainConfig,
    device: torch.device,
) -> None:
    """Score the model on `val_dir` by the paper protocol; update the row and the best so far."""
    if config.val_preset is not None:
        protocol = Protocol(lr_preset=config.val_preset)
    elif config.degradation == "real":
        # Validation on the training distribution: the chain with a fixed seed per image (the
        # `real` preset of `superres degrade`), not on the clean benchmark LR.
        protocol = Protocol(lr_preset="real")
    else:
        protocol = Protocol(degradation=config.degradation)
    was_training = model.training
    with torch.no_grad():
        result = evaluate_model(
            model, val_dir, config.scale, channels=config.channels, protocol=protocol, device=str(device)
        )
    model.train(was_training)
    row["val_psnr"], row["val_ssim"] = round(result.psnr, 4), round(result.ssim, 5)
    state.last_psnr = result.psnr
    if state.best_psnr is None or result.psnr > state.best_psnr:
        state.best_psnr, state.best_ssim, state.best_step = result.psnr, result.ssim, row["step"]
