"""TrainConfig: every knob of a training run, one plain dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


# The fields a resumed run may change: how long it runs, how often it evaluates, logs and saves,
# and where and how fast it computes. Every other field must match the checkpoint's.
RESUMABLE_FIELDS = (
    "steps",
    "eval_every",
    "eval_batch_size",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "device",
    "precision",
    "compile",
    "out_dir",
)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


MAX_LR = 10.0  # AdamW's updates are about lr in size
MAX_EPS = 1.0
MAX_WEIGHT_DECAY = 100.0  # decoupled: each step scales the weights by 1 - lr * weight_decay


@dataclass
class TrainConfig:
    """Settings of one training run.

    Steps count optimizer updates; an "epoch" is one pass over the training set in a fresh
    permutation (the last incomplete batch of each permutation is dropped).

    Attributes:
        steps: optimizer updates in the whole run.
        batch_size: the global batch: rows per optimizer step, over processes and micro-steps.
        micro_batch_size: rows per forward pass and process; None: the whole share in one pass.
        lr: peak learning rate of AdamW, in (0, 10].
        weight_decay: AdamW weight decay in [0, 100] (not applied to norms, biases,
            embeddings' exemptions).
        betas: AdamW (beta1, beta2), each in [0, 1).
        eps: AdamW epsilon, in (0, 1].
        warmup_steps: linear warmup length in steps; None: 10% of steps.
        min_lr_ratio: the cosine schedule ends at lr * min_lr_ratio.
        grad_clip: max global gradient norm; None: no clipping.
        eval_every: evaluate on the test sets every this many steps (and at the end).
        eval_batch_size: rows per forward pass when evaluating.
        log_every: log the training loss every this many steps (and at the end).
        seed: seeds the batch order (the run's seed).
        device: "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:N".
        precision: "auto" (bf16 autocast on cuda, fp32 on cpu), "fp32" or "bf16".
        compile: torch.compile the model for training.
        early_stop_accuracy: stop once the main test sequence accuracy reaches it; None: never.
        checkpoint_every: save a checkpoint every this many steps; None: only at the end.
        keep_checkpoints: how many most recent checkpoints to keep on disk.
        out_dir: the run folder (metrics, checkpoints, final metrics).
    """

    steps: int = 1000
    batch_size: int = 64
    micro_batch_size: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0
    eval_every: int = 100
    eval_batch_size: int = 256
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    early_stop_accuracy: float | None = None
    checkpoint_every: int | None = None
    keep_checkpoints: int = 2
    out_dir: str = "runs/default"

    def __post_init__(self) -> None:
        if isinstance(self.betas, (list, tuple)):
            self.betas = tuple(self.betas)  # JSON gives a list back
        if not (
            isinstance(self.betas, tuple)
            and len(self.betas) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in self.betas)
        ):
            raise ValueError(f"betas must be two numbers in [0, 1); got {self.betas!r}")
        self.betas = tuple(float(b) for b in self.betas)
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "eval_batch_size": self.eval_batch_size,
            "log_every": self.log_every,
            "keep_checkpoints": self.keep_checkpoints,
        }
        for name, value in positive.items():
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        for name in ("micro_batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            # Checked here, before any run folder exists; the split over processes is checked
            # when training starts (micro_steps), once the world size is known.
            raise ValueError(
                f"micro_batch_size must divide batch_size ({self.batch_size}); "
                f"got {self.micro_batch_size}"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        # Bounded so that AdamW's float32 arithmetic cannot overflow (an lr near 3e37 raised
        # inside the optimizer's step): beyond these bounds no setting trains anyway.
        for name, limit in (("lr", MAX_LR), ("eps", MAX_EPS)):
            value = getattr(self, name)
            if not (_is_number(value) and 0 < value <= limit):
                raise ValueError(f"{name} must be a positive float <= {limit:g}; got {value!r}")
        if not (_is_number(self.weight_decay) and 0 <= self.weight_decay <= MAX_WEIGHT_DECAY):
            raise ValueError(
                f"weight_decay must be a float in [0, {MAX_WEIGHT_DECAY:g}]; "
                f"got {self.weight_decay!r}"
            )
        if self.warmup_steps is not None and not (
            _is_int(self.warmup_steps) and 0 <= self.warmup_steps <= self.steps
        ):
            raise ValueError(
                f"warmup_steps must be in [0, {self.steps}] or None; got {self.warmup_steps!r}"
            )
        if not (_is_number(self.min_lr_ratio) and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio!r}")
        if self.grad_clip is not None and not (_is_number(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive float or None; got {self.grad_clip!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false; got {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
        if not (isinstance(self.device, str) and _DEVICE.match(self.device)):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'; got {self.device!r}"
            )
        if self.early_stop_accuracy is not None and not (
            _is_number(self.early_stop_accuracy) and 0 < self.early_stop_accuracy <= 1
        ):
            raise ValueError(
                f"early_stop_accuracy must be in (0, 1] or None; got {self.early_stop_accuracy!r}"
            )
        if not isinstance(self.out_dir, str) or not self.out_dir.strip():
            raise ValueError(f"out_dir must name a folder; got {self.out_dir!r}")

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
        """The device to train on: `device`, with "auto" meaning cuda when available.

        Raises:
            ValueError: a CUDA device that this machine does not have.
        """
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda" and not (
            torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
        ):
            found = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise ValueError(
                f"device {self.device!r} is not available (this torch sees {found} CUDA "
                "devices); use --device cpu or auto"
            )
        return device

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
