"""TrainConfig: every knob of a training run, one plain dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """Settings of one training run.

    Steps count optimizer updates; an "epoch" is one pass over the training set in a fresh
    permutation (the last incomplete batch of each permutation is dropped).
    """

    steps: int = 1000
    batch_size: int = (
        64  # the global batch: rows per optimizer step, over processes and micro-steps
    )
    micro_batch_size: int | None = None  # rows per forward pass and process; None: one pass
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int | None = None  # None: 10% of `steps`
    min_lr_ratio: float = 0.1  # the cosine ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0  # max global grad norm; None: no clipping
    eval_every: int = 100
    eval_batch_size: int = 256
    log_every: int = 10
    seed: int = 0
    device: str = "auto"  # "auto": cuda when available, else cpu
    precision: str = "auto"  # "auto": bf16 autocast on cuda, fp32 on cpu; or "fp32" / "bf16"
    compile: bool = False  # torch.compile the model for training
    early_stop_accuracy: float | None = None  # stop once the main test sequence accuracy reaches it
    checkpoint_every: int | None = None  # None: checkpoint only at the end
    keep_checkpoints: int = 2  # how many most recent checkpoints to keep on disk
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # JSON gives a list back
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "eval_batch_size": self.eval_batch_size,
            "log_every": self.log_every,
            "keep_checkpoints": self.keep_checkpoints,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be positive and finite; got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1); got {self.betas!r}")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(
                f"warmup_steps must be in [0, {self.steps}] or None; got {self.warmup_steps!r}"
            )
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None; got {self.grad_clip!r}")
        if self.micro_batch_size is not None and (
            not isinstance(self.micro_batch_size, int) or self.micro_batch_size < 1
        ):
            raise ValueError(
                "micro_batch_size must be a positive integer or None; "
                f"got {self.micro_batch_size!r}"
            )
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false; got {self.compile!r}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(
                f"checkpoint_every must be a positive int or None; got {self.checkpoint_every!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.early_stop_accuracy is not None and not 0 < self.early_stop_accuracy <= 1:
            raise ValueError(
                f"early_stop_accuracy must be in (0, 1] or None; got {self.early_stop_accuracy!r}"
            )

    @property
    def resolved_warmup_steps(self) -> int:
        """Warmup length in steps (10% of `steps` when `warmup_steps` is None)."""
        if self.warmup_steps is None:
            return round(0.1 * self.steps)
        return self.warmup_steps

    def micro_steps(self, world_size: int) -> int:
        """Forward/backward passes per optimizer step and process (gradient accumulation).

        Raises:
            ValueError: batch_size is not world_size x micro_batch_size x an integer.
        """
        per_process, rest = divmod(self.batch_size, world_size)
        micro = self.micro_batch_size or per_process
        if rest or per_process == 0 or per_process % micro:
            raise ValueError(
                f"batch_size must be a multiple of processes x micro_batch_size "
                f"({world_size} x {micro}); got {self.batch_size}"
            )
        return per_process // micro

    def resolved_device(self) -> torch.device:
        """The device to train on: `device`, with "auto" meaning cuda when available."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype for `device`, or None for plain fp32."""
        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.bfloat16
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from `to_dict` output; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**d)
