"""Multi-process helpers for ``torchrun`` (DistributedDataParallel on gloo or nccl)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "shard", "cleanup_distributed", "is_main_process", "unwrap",
           "wait_for_all_ranks"]


class DistInfo:
    """Rank and world size of this process (rank 0 of 1 when not launched by torchrun)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0) -> None:
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank

    @property
    def enabled(self) -> bool:
        """True when running under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, logs and outputs."""
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group that ``torchrun`` set up (env ``WORLD_SIZE`` > 1); no-op otherwise.

    Uses nccl for CUDA devices and gloo for the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world_size, local_rank)


def shard(items: Sequence[Any], info: DistInfo, even: bool = False) -> list[Any]:
    """This rank's share of ``items`` (round robin), so no item is done twice.

    With ``even=True`` the shares are padded by repeating items so every rank gets the same
    count (needed when ranks must run the same number of steps, as in DDP training).
    """
    items = list(items)
    if not info.enabled:
        return items
    if even and items:
        per_rank = -(-len(items) // info.world_size)
        items = (items * (per_rank * info.world_size // len(items) + 1))[: per_rank * info.world_size]
    return items[info.rank :: info.world_size]


def is_main_process() -> bool:
    """True when not distributed, or on rank 0 (also before/after the process group exists)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_all_ranks() -> None:
    """Block until every process of the group gets here (a no-op outside one).

    Called once training has finished on every rank, before the group is left: a rank that destroyed the
    gloo group while another still saved or validated was seen to abort at exit ("terminate called without
    an active exception") in a loaded CI run.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel/DataParallel wrapper."""
    return getattr(model, "module", model)
