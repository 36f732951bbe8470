"""AdamW with decay / no-decay parameter groups, and the learning-rate schedule (linear warmup,
then a cosine or linear fall)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig

NO_DECAY_NAME_PARTS = ("bias", "norm")


def wants_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Whether a parameter is decayed: matrices are, everything else is not.

    Not decayed: parameters with ndim < 2 (norm gains, biases, per-head scalars, frequencies),
    names containing "bias" or "norm", and parameters marked `param._no_weight_decay = True`.
    """
    if param.ndim < 2 or getattr(param, "_no_weight_decay", False):
        return False
    lowered = name.lower()
    return not any(part in lowered for part in NO_DECAY_NAME_PARTS)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split the trainable parameters of `model` into a decay and a no-decay group.

    Returns:
        Up to two AdamW parameter-group dicts (empty groups are left out), each with
        "params", "param_names" and "weight_decay". Tied parameters appear once.
    """
    decay: dict[str, nn.Parameter] = {}
    no_decay: dict[str, nn.Parameter] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if wants_weight_decay(name, param) else no_decay)[name] = param
    groups = []
    for params, wd in ((decay, weight_decay), (no_decay, 0.0)):
        if params:
            groups.append(
                {"params": list(params.values()), "param_names": list(params), "weight_decay": wd}
            )
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters with `cfg.weight_decay` on the decay group only."""
    groups = parameter_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError("model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def lr_schedule(step: int, cfg: TrainConfig) -> float:
    """Learning rate for the update with 0-based index `step`.

    Linear warmup from lr / warmup to lr over the first `warmup` updates, then a cosine (or, with
    ``cfg.lr_decay == "linear"``, a straight line) from lr at step == warmup down to
    lr * min_lr_ratio, reached at step == cfg.steps and held after.
    """
    warmup = cfg.resolved_warmup_steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if step >= cfg.steps:
        return min_lr
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    remaining = (
        1.0 - progress if cfg.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    )
    return min_lr + remaining * (cfg.lr - min_lr)
