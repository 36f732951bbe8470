"""TrainConfig: every knob of a training run, one frozen dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import torch

from selrope.common import checks, setting

from .callbacks import LOGGERS
from .sharding import PARALLEL_MODES

PRECISIONS = ("auto", "fp32", "bf16")
LR_DECAYS = ("cosine", "linear")
# Dense bf16 peak FLOP/s of the GPUs the MFU knows by name (their data sheets).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
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
    "activation_checkpointing",
    "peak_flops",
    "log",
    "out_dir",
)


MAX_LR = 10.0  # AdamW's updates are about lr in size
MAX_EPS = 1.0
MAX_WEIGHT_DECAY = 100.0  # decoupled: each step scales the weights by 1 - lr * weight_decay


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (each field's meaning is its ``help``, shown by --help).

    Steps count optimizer updates; an "epoch" is one pass over the training set in a fresh
    permutation (the last incomplete batch of each permutation is dropped).
    """

    steps: int = setting(1000, help="optimizer updates in the whole run")
    batch_size: int = setting(
        64, help="the global batch: rows per optimizer step, over processes and micro-steps"
    )
    micro_batch_size: int | None = setting(
        None, help="rows per forward pass and process (gradient accumulation); none: the share"
    )
    lr: float = setting(1e-3, help=f"peak learning rate of AdamW, in (0, {MAX_LR:g}]")
    weight_decay: float = setting(
        0.1,
        help=f"AdamW decoupled weight decay in [0, {MAX_WEIGHT_DECAY:g}], applied to every "
        "matrix, embeddings included (not to norms, biases or other vectors)",
    )
    betas: tuple[float, float] = setting((0.9, 0.98), help="AdamW (beta1, beta2), each in [0, 1)")
    eps: float = setting(1e-8, help=f"AdamW epsilon, in (0, {MAX_EPS:g}]")
    warmup_steps: int | None = setting(None, help="linear warmup length; none: 10% of steps")
    lr_decay: str = setting(
        "cosine", help="the learning rate's fall after warmup: cosine or linear"
    )
    min_lr_ratio: float = setting(0.1, help="the schedule ends at lr x min_lr_ratio")
    grad_clip: float | None = setting(1.0, help="max global gradient norm; none: no clipping")
    eval_every: int = setting(100, help="evaluate on the test sets every this many steps")
    eval_batch_size: int = setting(256, help="rows per forward pass when evaluating")
    log_every: int = setting(10, help="log the training loss every this many steps")
    seed: int = setting(0, help="seeds the batch order (set by the run's seed)")
    device: str = setting("auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    precision: str = setting("auto", help="auto (bf16 autocast on cuda, fp32 on cpu), fp32, bf16")
    compile: bool = setting(False, help="torch.compile the model for training")
    parallel: str = setting(
        "ddp", help="ddp (replicas) or fsdp (FSDP2: weights, gradients, AdamW state sharded)"
    )
    activation_checkpointing: bool = setting(
        False, help="recompute each block's activations in the backward (less memory)"
    )
    early_stop_accuracy: float | None = setting(
        None, help="stop once the main test sequence accuracy reaches it; none: never"
    )
    checkpoint_every: int | None = setting(
        None, help="save a checkpoint every this many steps; none: only at the end"
    )
    keep_checkpoints: int = setting(2, help="how many most recent checkpoints to keep")
    peak_flops: float | None = setting(
        None,
        help="each device's peak FLOP/s, for the MFU on the bar and in TensorBoard; none: "
        "known GPUs' bf16 peak (H100 / H200 989e12, A100 312e12), else no MFU",
    )
    log: tuple[str, ...] = setting(
        (), help="loggers beside metrics.jsonl: tensorboard, wandb (offline), or both"
    )
    out_dir: str = setting("runs/default", help="the run folder (set by the run's --out)")

    def __post_init__(self) -> None:
        betas, log = self.betas, self.log
        # JSON gives lists back; frozen, so normalised through object.__setattr__.
        if isinstance(betas, (list, tuple)) and len(betas) == 2:
            if not all(checks.is_finite_number(b) and 0 <= b < 1 for b in betas):
                raise ValueError(f"betas must be two numbers in [0, 1); got {betas!r}")
            object.__setattr__(self, "betas", tuple(float(b) for b in betas))
        else:
            raise ValueError(f"betas must be two numbers in [0, 1); got {betas!r}")
        if isinstance(log, str):
            log = tuple(name for name in log.split(",") if name)
        if not isinstance(log, (list, tuple)) or not all(name in LOGGERS for name in log):
            raise ValueError(f"log must name loggers among {', '.join(LOGGERS)}; got {log!r}")
        object.__setattr__(self, "log", tuple(dict.fromkeys(log)))
        for name in (
            "steps",
            "batch_size",
            "eval_every",
            "eval_batch_size",
            "log_every",
            "keep_checkpoints",
        ):
            checks.check_positive_int(name, getattr(self, name))
        for name in ("micro_batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None and (not checks.is_int(value) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            # Checked here, before any run folder exists; the split over processes is checked
            # when training starts (micro_steps), once the world size is known.
            raise ValueError(
                f"micro_batch_size must divide batch_size ({self.batch_size}); "
                f"got {self.micro_batch_size}"
            )
        checks.check_non_negative_int("seed", self.seed)
        # Bounded so that AdamW's float32 arithmetic cannot overflow (an lr near 3e37 raised
        # inside the optimizer's step): beyond these bounds no setting trains anyway.
        checks.check_range("lr", self.lr, 0, MAX_LR, low_open=True)
        checks.check_range("eps", self.eps, 0, MAX_EPS, low_open=True)
        checks.check_range("weight_decay", self.weight_decay, 0, MAX_WEIGHT_DECAY)
        if self.warmup_steps is not None and not (
            checks.is_int(self.warmup_steps) and 0 <= self.warmup_steps <= self.steps
        ):
            raise ValueError(
                f"warmup_steps must be in [0, {self.steps}] or None; got {self.warmup_steps!r}"
            )
        checks.check_choice("lr_decay", self.lr_decay, LR_DECAYS)
        checks.check_range("min_lr_ratio", self.min_lr_ratio, 0, 1)
        if self.grad_clip is not None:
            checks.check_positive_float("grad_clip", self.grad_clip)
        checks.check_bool("compile", self.compile)
        checks.check_choice("parallel", self.parallel, PARALLEL_MODES)
        checks.check_bool("activation_checkpointing", self.activation_checkpointing)
        checks.check_choice("precision", self.precision, PRECISIONS)
        if not (isinstance(self.device, str) and _DEVICE.match(self.device)):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'; got {self.device!r}"
            )
        if self.peak_flops is not None:
            checks.check_positive_float("peak_flops", self.peak_flops)
        if self.early_stop_accuracy is not None:
            checks.check_range("early_stop_accuracy", self.early_stop_accuracy, 0, 1, low_open=True)
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

    def resolved_peak_flops(self, device: torch.device) -> float | None:
        """``peak_flops``, else the bf16 dense peak of a GPU this table knows, else None."""
        if self.peak_flops is not None or device.type != "cuda":
            return self.peak_flops
        name = torch.cuda.get_device_name(device)
        return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)

    def autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        """The autocast dtype for `device`, or None for plain fp32."""
        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.bfloat16
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        d = dataclasses.asdict(self)
        d["betas"], d["log"] = list(self.betas), list(self.log)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from `to_dict` output; unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = {key: value for key, value in d.items() if key != "log" or value is not None}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls(**d)
