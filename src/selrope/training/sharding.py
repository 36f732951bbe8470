"""Sharded data parallelism: FSDP2 (``torch.distributed.fsdp.fully_shard``) beside DDP.

``--parallel fsdp`` shards every block of the model, then the model itself, over the processes
torchrun started (gloo on CPU, nccl on CUDA): each rank keeps 1/N of the weights, gradients and
AdamW moments, and gathers a block's weights only while it runs. A world of one process (a
plain ``selrope train``) gets a process group of its own, so that the same sharded checkpoints
load there. Checkpoints are sharded too (``sharded_checkpoint.py``); the model a run exports is
gathered whole (``full_state_dict``) and saved like any other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

PARALLEL_MODES = ("ddp", "fsdp")


def ensure_process_group(device: torch.device) -> None:
    """A process group of one when none exists (FSDP needs one even alone)."""
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def shard_model(model: nn.Module, device: torch.device, bf16: bool) -> nn.Module:
    """``fully_shard`` each of ``model.blocks`` (or each child when there are none), then the
    model; in place. With ``bf16`` the blocks compute in bfloat16 and reduce gradients in
    float32 (FSDP's mixed precision; angles still accumulate in float32 inside the rotary)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    ensure_process_group(device)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    units = list(getattr(model, "blocks", None) or model.children())
    for unit in units:
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are FSDP shards (DTensors)."""
    return any(isinstance(p, DTensor) for p in model.parameters())


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Synchronise gradients in this backward (``enabled``) or accumulate them locally: DDP's
    ``no_sync`` and FSDP2's ``set_requires_gradient_sync``, one switch for both."""
    if enabled or not dist.is_initialized() or dist.get_world_size() == 1:
        yield
    elif hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        with model.no_sync():
            yield


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``tensor`` (itself unless it is a DTensor)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_value(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of ``tensor`` (a DTensor is gathered; a plain tensor is itself)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on the CPU (every rank must call it; each gets the whole dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)
