"""Several training processes under `torchrun`: joining the process group and agreeing at sync points.

Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) every rank runs the same trainer with
DistributedDataParallel; rank 0 alone validates, writes files and logs. The ranks exchange
nothing but gradients between sync points; at a sync point they sum their loss totals and take
the maximum of their flags (first diverged step, stop request) with `all_reduce_totals`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist


@dataclass
class Distributed:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False  # this call joined the process group, so it leaves it too

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    started_here = False
    if not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend, rank=rank, world_size=world_size)
        started_here = True
    return Distributed(rank, world_size, local_rank, started_here)


def all_reduce_totals(sums: np.ndarray, maxima: np.ndarray, dist: Distributed) -> np.ndarray:
    """`sums` summed and `maxima` maximised over all ranks, concatenated (float64)."""
    if dist.world_size == 1:
        return np.concatenate([sums, maxima])
    summed = torch.tensor(sums, dtype=torch.float64)
    flags = torch.tensor(maxima, dtype=torch.float64)
    torch_dist.all_reduce(summed, op=torch_dist.ReduceOp.SUM)
    torch_dist.all_reduce(flags, op=torch_dist.ReduceOp.MAX)
    return np.concatenate([summed.numpy(), flags.numpy()])
