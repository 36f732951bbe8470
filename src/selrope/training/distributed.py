"""Data-parallel training on torch.distributed, launched by ``torchrun``.

``torchrun --nproc_per_node N -m selrope train ...`` starts N processes with RANK, LOCAL_RANK
and WORLD_SIZE in their environment (and MASTER_ADDR / MASTER_PORT, or a rendezvous endpoint for
several machines). ``init_distributed`` joins them into one process group (gloo on CPU, nccl on
CUDA); a plain ``selrope train`` sees no such variables and runs as a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """Where this process sits among the training processes.

    rank: 0..size-1 (rank 0 logs and writes checkpoints); size: number of processes;
    device: this process's device (``cuda:LOCAL_RANK`` for CUDA runs).
    """

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over all processes (``value`` itself in a world of one)."""
        if self.size == 1:
            return value
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process launch (WORLD_SIZE > 1)."""
    return world_size_from_environment() > 1


def world_size_from_environment() -> int:
    """The number of processes a launcher such as torchrun announced (WORLD_SIZE), else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process is rank 0 of its launch (True outside torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: torch.device) -> World:
    """Join the process group torchrun describes, or return a world of one.

    Args:
        device: the device the run asked for; for CUDA each process takes ``cuda:LOCAL_RANK``.

    Returns:
        This process's :class:`World`.
    """
    if not launched_by_torchrun():
        return World(device=device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size(), device=device)


def close_distributed() -> None:
    """Leave the process group (no-op outside a torchrun launch)."""
    if dist.is_initialized():
        dist.destroy_process_group()
