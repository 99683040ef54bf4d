"""What a training run shows and when it stops early: the progress bar, log lines, stop requests.

Rank 0 alone speaks: a tqdm bar on an interactive terminal (log lines are routed through it so
they do not tear it), one log line per sync point. A run stops early at the time limit or at the
first Ctrl-C, which lets the current step finish so that the run can validate and save a
checkpoint; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from superres.training.config import TrainConfig
from superres.training.distributed import Distributed
from superres.training.state import RunState

# The trainer's records: these lines are the training log, whichever module formats them.
logger = logging.getLogger("superres.training.loop")


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
    return tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, smoothing=0.05)


@contextmanager
def progress_logging(progress: Any) -> Iterator[None]:
    """Route log records through tqdm while a bar is shown, so lines do not tear the bar."""
    if isinstance(progress, _NoProgress):
        yield
        return
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
    if start_step >= total_steps:
        logger.info("nothing to do: the run already reached step %d of %d", start_step, total_steps)


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
    # A GAN run's `loss` is the generator's; the discriminator's is worth seeing beside it.
    critic = f" D {row['loss_discriminator']:.4g}" if row.get("loss_discriminator") is not None else ""
    text = (
        f"step {row['step']}/{total_steps} (epoch {row['epoch']:.2f}) loss {row['loss']:.6g}{critic} "
        f"lr {row['learning_rate']:.3g}{psnr} | {row['hr_pixels_per_s'] / 1e6:.2f} M HR px/s "
        f"| ETA {_format_duration(eta_s)}"
    )
    if row.get("degrade_s_per_step") is not None:
        text += f" | degrading {row['degrade_s_per_step']:.3f} s/step"
    logger.info("%s", text)
    last_psnr = f" psnr={state.last_psnr:.2f}" if state.last_psnr is not None else ""
    speed = row["hr_pixels_per_s"] / 1e6
    progress.set_postfix_str(f"loss={row['loss']:.4g}{last_psnr} {speed:.1f}Mpx/s", refresh=False)


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class StopRequests:
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
def stop_requests(max_minutes: float | None, started: float) -> Iterator[StopRequests]:
    """A stop flag set by the time limit or by the first Ctrl-C (a second one stops at once).

    The first Ctrl-C lets the current step finish, then the run validates, saves last.safetensors
    and returns; raising KeyboardInterrupt in the middle of an optimizer step could not do that.
    """
    requests = StopRequests(max_minutes, started)
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
