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
steps), where losses are checked for NaN, logged and written.

Distributed: under `torchrun` (RANK, WORLD_SIZE, LOCAL_RANK set) the same code runs on every
rank with DistributedDataParallel; each rank draws its own `batch_size` pairs from its own random
stream (global batch = batch_size * world_size), only rank 0 validates, writes files and logs.
Stop decisions (time limit, Ctrl-C, NaN) are agreed at sync points with one all-reduce.

What a checkpoint carries and how it is restored lives in `superres.train_state`; the history
file and plots in `superres.runlog`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from superres.checkpoint import save_checkpoint
from superres.config import TrainConfig, resolve_config, save_config
from superres.data import DeviceBatches, open_patch_source
from superres.ema import WeightAverage
from superres.errors import CheckpointError, ConfigError, TrainingDiverged
from superres.fast import retain_freed_memory
from superres.runlock import hold_run_lock
from superres.runlog import HISTORY_COLUMNS, append_history, write_history, write_plots
from superres.train_state import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    RunState,
    checkpoint_metadata,
    load_initial_weights,
    restore_training_state,
    save_training_checkpoint,
)

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


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


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
    from superres.models import create_model

    check_run_dir(run_dir, resume)
    source = open_patch_source(
        config.train_data,
        scale=config.scale,
        patch_size=config.patch_size,
        degradation=config.degradation,
        channels=config.channels,
        augment=config.augment,
    )
    val_dir = check_val_dir(config.val_data)
    global_batch = config.batch_size * dist.world_size
    steps_per_epoch = source.steps_per_epoch(global_batch)
    total_steps = config.iterations or math.ceil(config.epochs * steps_per_epoch)
    hr_pixels_per_step = global_batch * (config.scale * config.patch_size) ** 2

    torch.manual_seed(config.seed)  # the one place torch is seeded: it decides the initial weights
    if device.type == "cpu":
        # Keep freed activation buffers in the heap: otherwise every step page-faults them again.
        retain_freed_memory()
    model = create_model(config.model, config.scale, **config.model_kwargs).to(device)
    channels_last = use_channels_last(config, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = DeviceBatches(source, device, channels_last=channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch shapes: autotuning pays off at once
    optimizer = torch.optim.Adam(
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
    if resume:
        state = restore_training_state(run_dir, config, model, optimizer, scaler, device, average)
    # What validation scores and best.safetensors holds: the weight average when there is one.
    released = average.average if average is not None else model
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir)
        write_history(run_dir, state.history)
    net: nn.Module = model
    if dist.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile != "off":
        # Fewer, fused kernels for the training forward/backward; validation and checkpoints use
        # the plain module, whose weights the compiled one shares.
        net = torch.compile(net, mode=None if config.compile == "default" else config.compile)
    loss_function = F.mse_loss if config.loss == "mse" else F.l1_loss
    autocast = torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)
    log_training_start(config, dist, device, amp_dtype, channels_last, source, total_steps, state.step)

    last_path = run_dir / LAST_CHECKPOINT
    best_path = run_dir / BEST_CHECKPOINT
    pending_losses: list[torch.Tensor] = []
    window_started, window_steps = time.monotonic(), 0
    loop_started, train_s = time.monotonic(), 0.0
    steps_this_call = 0
    stop_reason = "completed"
    if state.step >= total_steps and dist.is_main:
        logger.info("nothing to do: the run already reached step %d of %d", state.step, total_steps)
    progress = make_progress_bar(total_steps, state.step, dist)
    with stop_requests(config.max_minutes, call_started) as stop_requested, progress_logging(progress):
        model.train()
        for step in range(state.step + 1, total_steps + 1):
            learning_rate = learning_rate_at(config, step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            rng = np.random.default_rng([config.seed, dist.rank, step])
            lr, hr = batches.sample(config.batch_size, rng)
            with autocast:
                sr = net(lr)
            loss = loss_function(sr.float(), hr)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if average is not None:
                average.update(model, step)
            pending_losses.append(loss.detach())
            state.step, steps_this_call, window_steps = step, steps_this_call + 1, window_steps + 1
            progress.update(1)

            is_last = step == total_steps
            due_validation = val_dir is not None and (step % config.val_every == 0 or is_last)
            due_checkpoint = step % config.checkpoint_every == 0 or is_last
            due_log = step % config.log_every == 0 or is_last
            local_stop = stop_requested()
            # One process decides alone; several agree at scheduled sync points only.
            if not (due_log or due_validation or due_checkpoint or (local_stop and dist.world_size == 1)):
                if stop_after == step:
                    stop_reason = "stop_after"
                    break
                continue

            # --- sync point: the host waits for the device here, and only here ---
            mean_loss, first_bad, stop_everywhere = agree_at_sync_point(
                pending_losses, step, model, local_stop, dist, scaler.is_enabled()
            )
            pending_losses.clear()
            window_s = time.monotonic() - window_started  # measured after the wait: device time counts
            train_s += window_s
            if first_bad is not None:
                good = last_path if last_path.is_file() else "none"
                raise TrainingDiverged(f"loss became nan at step {first_bad}; last good checkpoint: {good}")
            if stop_everywhere:
                due_validation, due_checkpoint = val_dir is not None, True
                stop_reason = stop_requested.reason or "time_limit"
            row = {
                "step": step,
                "epoch": round(step / steps_per_epoch, 4),
                "loss": mean_loss,
                "learning_rate": learning_rate,
                "val_psnr": None,
                "val_ssim": None,
                "elapsed_s": round(state.elapsed_before_s + time.monotonic() - loop_started, 2),
                "hr_pixels_per_s": round(window_steps * hr_pixels_per_step / max(window_s, 1e-9), 1),
            }
            if due_validation and dist.is_main:
                validate_into(row, state, released, val_dir, config, device)
            if dist.is_main:
                append_history(run_dir, row)
                state.history.append(row)
                if due_validation:
                    if state.best_step == step:
                        save_checkpoint(best_path, released, checkpoint_metadata(config, model, state, step))
                    write_plots(run_dir, state.history)
                if due_checkpoint:
                    save_training_checkpoint(last_path, config, model, optimizer, scaler, state, step, row, average)
                seconds = time.monotonic() - loop_started
                log_progress(row, total_steps, state, progress, steps_this_call, seconds)
            window_started, window_steps = time.monotonic(), 0
            if stop_after == step:
                stop_reason = "stop_after"
                break
            if stop_everywhere:
                break
        progress.close()
    if dist.is_main and stop_reason != "stop_after" and steps_this_call > 0:
        write_plots(run_dir, state.history)
    if stop_reason == "stop_after":
        train_s += time.monotonic() - window_started
    summary = TrainSummary(
        run_dir=run_dir,
        steps=state.step,
        total_steps=total_steps,
        stop_reason=stop_reason,
        best_psnr=state.best_psnr,
        best_ssim=state.best_ssim,
        best_step=state.best_step,
        elapsed_s=time.monotonic() - call_started,
        train_s=train_s,
        hr_pixels_per_s=steps_this_call * hr_pixels_per_step / train_s if train_s > 0 else 0.0,
        last_checkpoint=last_path if last_path.is_file() else None,
        best_checkpoint=best_path if best_path.is_file() else None,
    )
    if dist.is_main:
        best = "-"
        if summary.best_psnr is not None:
            best = f"{summary.best_psnr:.3f} dB (step {summary.best_step})"
        logger.info(
            "%s at step %d/%d: best PSNR %s, %.0f HR px/s, %.1f s",
            stop_reason, summary.steps, total_steps, best, summary.hr_pixels_per_s, summary.elapsed_s,
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
    """bf16 where the GPU has it, else fp16 (with a GradScaler); full float32 on CPU by default."""
    if config.amp == "off" or (config.amp == "auto" and device.type != "cuda"):
        return None
    if config.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp 'fp16' needs a CUDA device; use 'bf16' or 'off' on CPU")
    if config.amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if config.amp == "bf16" else torch.float16


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    # "auto" is on everywhere: cuDNN's NHWC kernels on GPUs, and on CPUs oneDNN's (measured by
    # `superres bench`: 1.1x for RED20, 1.6-2.6x for SRCNN training steps on a 2-core machine).
    return True if config.channels_last == "auto" else bool(config.channels_last)


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    import torch.distributed as torch_dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    started_here = False
    if not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, rank=rank, world_size=world_size)
        started_here = True
    return Distributed(rank, world_size, local_rank, started_here)


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
    from superres.io import list_images

    val_dir = Path(val_data)
    if not val_dir.is_dir():
        from superres.config import missing_path_message

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
    totals = np.array(
        [losses[finite].sum(), finite.sum(), -1 if bad_step is None else bad_step, float(local_stop)],
        dtype=np.float64,
    )
    if dist.world_size > 1:
        import torch.distributed as torch_dist

        summed = torch.tensor(totals[:2], dtype=torch.float64)
        flags = torch.tensor(totals[2:], dtype=torch.float64)
        torch_dist.all_reduce(summed, op=torch_dist.ReduceOp.SUM)
        torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
        totals = np.concatenate([summed.numpy(), flags.numpy()])
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
    from superres.evaluate import Protocol, evaluate_model

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


# --- progress, logging and stopping ---------------------------------------------------------


class _NoProgress:
    def update(self, count: int) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress_bar(total_steps: int, start_step: int, dist: Distributed) -> Any:
    """A tqdm bar on an interactive terminal (rank 0 only); the log lines are enough elsewhere."""
    if not (dist.is_main and sys.stderr.isatty()):
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, smoothing=0.05)


@contextmanager
def progress_logging(progress: Any) -> Iterator[None]:
    """Route log records through tqdm while a bar is shown, so lines do not tear the bar."""
    if isinstance(progress, _NoProgress):
        yield
        return
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        yield


def log_training_start(
    config: TrainConfig,
    dist: Distributed,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    source: Any,
    total_steps: int,
    start_step: int,
) -> None:
    if not dist.is_main:
        return
    logger.info(
        "training %s x%d on %s (%s%s%s): %d pairs of %d px LR patches per step%s, steps %d..%d",
        config.model, config.scale, device,
        "amp " + str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
        ", channels-last" if channels_last else "",
        f", {dist.world_size} processes" if dist.world_size > 1 else "",
        config.batch_size * dist.world_size, config.patch_size,
        f" from {type(source).__name__}", start_step + 1, total_steps,
    )


def log_progress(
    row: dict[str, Any],
    total_steps: int,
    state: RunState,
    progress: Any,
    steps_this_call: int,
    seconds_this_call: float,
) -> None:
    remaining = total_steps - row["step"]
    eta_s = remaining * seconds_this_call / max(steps_this_call, 1)
    psnr = ""
    if row["val_psnr"] is not None:
        psnr = f" | val PSNR {state.last_psnr:.3f} dB (best {state.best_psnr:.3f})"
    text = (
        f"step {row['step']}/{total_steps} (epoch {row['epoch']:.2f}) loss {row['loss']:.6g} "
        f"lr {row['learning_rate']:.3g}{psnr} | {row['hr_pixels_per_s'] / 1e6:.2f} M HR px/s "
        f"| ETA {_format_duration(eta_s)}"
    )
    logger.info("%s", text)
    last_psnr = f" psnr={state.last_psnr:.2f}" if state.last_psnr is not None else ""
    speed = row["hr_pixels_per_s"] / 1e6
    progress.set_postfix_str(f"loss={row['loss']:.4g}{last_psnr} {speed:.1f}Mpx/s", refresh=False)


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class _StopRequests:
    """Callable: has the time limit passed or Ctrl-C been pressed? `.reason` says which."""

    def __init__(self, max_minutes: float | None, started: float) -> None:
        self.deadline = None if max_minutes is None else started + 60.0 * max_minutes
        self.interrupted = False
        self.reason: str | None = None

    def __call__(self) -> bool:
        if self.interrupted:
            self.reason = "interrupted"
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.reason = "time_limit"
            return True
        return False


@contextmanager
def stop_requests(max_minutes: float | None, started: float) -> Iterator[_StopRequests]:
    """A stop flag set by the time limit or by the first Ctrl-C (a second one stops at once).

    The first Ctrl-C lets the current step finish, then the run validates, saves last.safetensors
    and returns; raising KeyboardInterrupt in the middle of an optimizer step could not do that.
    """
    requests = _StopRequests(max_minutes, started)
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return

    def on_interrupt(signum: int, frame: Any) -> None:
        if requests.interrupted:
            raise KeyboardInterrupt
        requests.interrupted = True
        logger.warning("interrupted: finishing this step and saving a checkpoint (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield requests
    finally:
        signal.signal(signal.SIGINT, previous)
