"""The trainer: deterministic batches, AdamW + warmup/cosine, periodic evaluation, checkpoints.

``Trainer.train`` reads top to bottom: restore (on resume), then per step ``train_step``, the
log row, ``evaluate`` and ``maybe_save``; everything reported goes through callbacks
(``callbacks.py``: metrics files, progress bar, TensorBoard, W&B). ``TrainState`` is the one
thing a checkpoint holds: model, optimizer, step, the RNG and the run's counters. The learning
rate is a pure function of the step and so is the batch (``batches.py``), so the step is also
the schedule's and the data's position: on CPU a resumed run reproduces the uninterrupted run's
losses bit for bit.

Steps are 1-based: "step s" is the s-th optimizer update, and a checkpoint at step s holds the
state after it. ``cfg.batch_size`` is the global batch: under torchrun each of the N processes
takes a contiguous 1/N of every batch's rows, in ``cfg.micro_batch_size`` pieces whose gradients
accumulate, and the step equals one pass over the whole batch in one process. Rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from selrope.tasks.base import IGNORE_INDEX, Batch, BatchSource, as_batch_source
from selrope.tasks.metrics import masked_accuracy

from .batches import DeterministicBatches
from .callbacks import Callback, MetricsFile, ProgressBar, build_loggers
from .checkpoint import (
    STATE_FILE,
    atomic_write_text,
    load_checkpoint,
    read_state,
    restore_rng_state,
    save_checkpoint,
    step_dir_name,
)
from .config import RESUMABLE_FIELDS, TrainConfig
from .distributed import World, close_distributed, init_distributed
from .errors import NonFiniteLossError
from .metrics import evaluate, model_logits, sequence_loss
from .optim import build_optimizer, lr_schedule
from .run_folder import RunFolder, Start
from .sharded_checkpoint import (
    is_sharded_checkpoint,
    load_sharded_checkpoint,
    save_sharded_checkpoint,
)
from .sharding import full_value, gradient_sync, is_sharded, local, shard_model

Split = tuple[torch.Tensor, torch.Tensor] | BatchSource  # (inputs, targets) (N, T), or rows


class TaskDataLike(Protocol):
    """What the trainer reads from a task (selrope.tasks.TaskData has these attributes)."""

    name: str
    vocab_size: int
    train: Split
    tests: dict[int, Split]
    train_length: int
    params: dict


def main_test_length(data: TaskDataLike) -> int | None:
    """The test length that early stopping and the progress bar watch: the task's (longest)
    training length when it is among the test lengths, else the shortest; None without tests."""
    if not data.tests:
        return None
    return data.train_length if data.train_length in data.tests else min(data.tests)


def check_training_data(data: TaskDataLike, cfg: TrainConfig, world_size: int) -> None:
    """ValueError unless the training rows fill a batch that splits over ``world_size``
    processes and the micro-batches (checked before a run folder is written)."""
    cfg.micro_steps(world_size)
    DeterministicBatches(as_batch_source(data.train).num_rows, cfg.batch_size, cfg.seed)


def check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """ValueError listing the fields of ``cfg`` that differ from a checkpoint's config
    ``saved`` and that a resumed run may not change (all but ``RESUMABLE_FIELDS``)."""
    if not isinstance(saved, dict):
        raise ValueError(f"cannot resume {cfg.out_dir}: its checkpoint records no training config")
    current = cfg.to_dict()
    changed = [
        f"{key} (saved {saved.get(key)!r}, now {value!r})"
        for key, value in current.items()
        if key not in RESUMABLE_FIELDS and key in saved and saved.get(key) != value
    ]
    if changed:
        raise ValueError(
            f"cannot resume {cfg.out_dir}: the run was trained with other settings: "
            f"{', '.join(changed)}; only {', '.join(RESUMABLE_FIELDS[:-1])} may change "
            "(or start over with --overwrite)"
        )


def is_dtensor(tensor: torch.Tensor) -> bool:
    return isinstance(tensor, DTensor)


def check_finite_parameters(params: list[torch.Tensor], step: int, checkpoint: Path | None) -> None:
    """Raise ``NonFiniteLossError`` when an update has left a parameter NaN/inf (one host sync,
    after every update: a diverged model is never evaluated or written). Sharded parameters are
    checked shard by shard, and every rank learns of a bad shard anywhere."""
    finite = torch.stack([torch.isfinite(local(p)).all() for p in params])
    all_finite = finite.all()
    if dist.is_initialized() and dist.get_world_size() > 1 and any(map(is_dtensor, params)):
        flag = all_finite.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        all_finite = flag.bool()
    if not bool(all_finite):
        bad = [local(p) for p, ok in zip(params, finite.tolist(), strict=True) if not ok]
        value = bad[0][~torch.isfinite(bad[0])].flatten()[0].item() if bad else float("nan")
        raise NonFiniteLossError(step, "parameter after the update", value, checkpoint)


def evaluate_tests(
    model: nn.Module, data: TaskDataLike, cfg: TrainConfig, device: torch.device
) -> dict[int, dict[str, Any]]:
    """`metrics.evaluate` on every test length: {length: {"loss", "perplexity", ...}}."""
    return {
        length: evaluate(
            model,
            as_batch_source(split),
            batch_size=cfg.eval_batch_size,
            device=device,
            autocast_dtype=cfg.autocast_dtype(device),
        )
        for length, split in sorted(data.tests.items())
    }


def accumulate_gradients(
    model: nn.Module,
    batch: Batch,
    world: World,
    micro_steps: int,
    autocast_dtype: torch.dtype | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and backward this process's share of the global batch, in micro-steps.

    Each micro-batch adds ``sum of its token losses / tokens scored in the whole global batch``
    (times world.size, which DDP's gradient averaging divides out) to the gradients, so the
    update equals one pass over the global batch whatever the processes and micro-steps.

    Returns:
        ``(global mean loss, predictions, targets)``; the last two ``(rows of this process, T)``.
    """
    device = world.device
    scored = (batch.targets != IGNORE_INDEX).sum().clamp(min=1).to(device)
    share = batch.inputs.shape[0] // world.size
    mine = slice(world.rank * share, (world.rank + 1) * share)
    parts = [None if t is None else t[mine].chunk(micro_steps) for t in batch]
    total = torch.zeros((), device=device)
    predictions = []
    for i in range(micro_steps):
        x, y = parts[0][i].to(device), parts[1][i].to(device)
        segment_ids = None if parts[2] is None else parts[2][i].to(device)
        sync = gradient_sync(model, enabled=i == micro_steps - 1)
        autocast = torch.autocast(
            device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
        )
        with sync:
            with autocast:
                logits = model_logits(model, x, segment_ids)
            loss_sum = sequence_loss(logits, y, reduction="sum")
            (loss_sum * (world.size / scored)).backward()
        total = total + loss_sum.detach()
        predictions.append(logits.detach().argmax(-1).cpu())
    loss = world.all_reduce_sum(total) / scored
    return loss, torch.cat(predictions), batch.targets[mine]


def wrap_for_training(model: nn.Module, cfg: TrainConfig, world: World) -> nn.Module:
    """The module the training steps call: DDP across processes (an FSDP model is already
    sharded in place), torch.compile if asked."""
    wrapped = model
    if world.size > 1 and cfg.parallel == "ddp":
        device_ids = [world.device.index] if world.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
    # torch.compile's wrapper forwards attribute lookups (DDP's no_sync) to the module inside.
    return torch.compile(wrapped) if cfg.compile else wrapped


def prepare_model(model: nn.Module, cfg: TrainConfig, world: World) -> nn.Module:
    """Move the model to the run's device, shard it for FSDP, turn on activation
    checkpointing: what must happen before the optimizer sees the parameters."""
    model.to(world.device)
    if cfg.activation_checkpointing:
        if not hasattr(model, "gradient_checkpointing_enable"):
            raise ValueError("activation_checkpointing needs a selrope LanguageModel")
        model.gradient_checkpointing_enable()
    if cfg.parallel == "fsdp":
        shard_model(model, world.device, bf16=cfg.autocast_dtype(world.device) is torch.bfloat16)
    return model


@contextlib.contextmanager
def flushed_denormals(device: torch.device) -> Iterator[None]:
    """Flush denormal floats to zero on CPU while training, then restore the previous setting
    (denormals in softmax tails and Adam moments slow CPU steps by up to 10x)."""
    if device.type != "cpu":
        yield
        return
    tiny = torch.tensor(1e-40, dtype=torch.float32)  # a denormal: reads as 0 when flushed
    was_flushing = bool(tiny * 1.0 == 0)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_flushing)


@dataclass
class TrainState:
    """Everything a checkpoint holds: the model and optimizer (their weights and moments in
    the checkpoint's files), the step (which also fixes the schedule and the data position),
    and the run's counters. The global RNG is saved beside them (``checkpoint.rng_state``)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: int = 0
    elapsed_s: float = 0.0
    stopped_early: bool = False
    train_loss: float | None = None
    last_eval: dict[int, dict[str, Any]] | None = None
    checkpoint: Path | None = None

    def extra(self, cfg: TrainConfig) -> dict[str, Any]:
        """The plain-data entries of state.pt beside step, optimizer and rng."""
        return {
            "config": cfg.to_dict(),
            "elapsed_s": self.elapsed_s,
            "stopped_early": self.stopped_early,
            "last_eval": self.last_eval,
            "train_loss": self.train_loss,
        }

    def restore(self, checkpoint: Path) -> dict[str, Any]:
        """Load the checkpoint into this state (weights, moments, RNG, counters)."""
        sharded_model, sharded_file = is_sharded(self.model), is_sharded_checkpoint(checkpoint)
        if sharded_model != sharded_file:
            raise ValueError(
                f"cannot resume from {checkpoint}: it is a "
                f"{'sharded (--parallel fsdp)' if sharded_file else 'whole-model'} checkpoint and "
                f"this run is {'--parallel fsdp' if sharded_model else 'not sharded'}"
            )
        try:
            if sharded_file:
                saved = load_sharded_checkpoint(checkpoint, self.model, self.optimizer)
            else:
                saved = load_checkpoint(checkpoint, self.model, self.optimizer)
        except RuntimeError as error:
            reason = str(error).strip().splitlines()[0]
            raise ValueError(
                f"cannot resume from {checkpoint}: its weights do not fit this model ({reason})"
            ) from None
        restore_rng_state(saved["rng"])
        self.step, self.elapsed_s = saved["step"], saved["elapsed_s"]
        self.stopped_early, self.last_eval = saved["stopped_early"], saved["last_eval"]
        self.train_loss = saved.get("train_loss")
        self.checkpoint = checkpoint
        return saved


class Trainer:
    """Trains ``model`` on ``data.train`` into a prepared run folder.

    Args:
        model: maps input ids (B, T) (and ``segment_ids=`` for packed rows) to logits (B, T, V),
            or to a tuple whose first element is the logits. Moved to the run's device.
        data: a TaskData (see TaskDataLike); splits are (inputs, targets) tensors with targets
            -100 where ignored, or BatchSources (a corpus).
        cfg: the run's settings.
        folder: the run folder, already decided (``RunFolder.prepare``).
        world: this process among the training processes.
        callbacks: reporters called on rank 0 (the metrics files are always added).
        progress: add the tqdm bar.
        headline: the metric the bar shows: "perplexity" or an accuracy.
        flops_per_token: training FLOPs per token (``selrope plan``'s); with a known peak
            (``TrainConfig.resolved_peak_flops``) the rows the bar and loggers see carry "mfu".
    """

    def __init__(
        self,
        model: nn.Module,
        data: TaskDataLike,
        cfg: TrainConfig,
        folder: RunFolder,
        world: World,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
        headline: str = "sequence_accuracy",
        flops_per_token: float | None = None,
    ):
        self.data, self.cfg, self.folder, self.world = data, cfg, folder, world
        self.micro_steps = cfg.micro_steps(world.size)
        self.autocast_dtype = cfg.autocast_dtype(world.device)
        prepare_model(model, cfg, world)
        self.state = TrainState(model, build_optimizer(model, cfg))
        self.params = [p for group in self.state.optimizer.param_groups for p in group["params"]]
        self.source = as_batch_source(data.train)
        self.batches = DeterministicBatches(self.source.num_rows, cfg.batch_size, cfg.seed)
        self.main_length = main_test_length(data)
        peak = cfg.resolved_peak_flops(world.device)
        self.flops_per_second_peak = None if peak is None or not flops_per_token else peak
        self.flops_per_token = flops_per_token
        self.callbacks: list[Callback] = []
        if world.is_main:
            self.callbacks.append(MetricsFile(folder.path, bool(folder.resume)))
            if progress:
                self.callbacks.append(ProgressBar(cfg.steps, headline, self.main_length))
            self.callbacks.extend(callbacks)
        self._clock_start = time.perf_counter()
        self._elapsed_before = 0.0

    def _notify(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(*args)

    def elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._clock_start

    def train(self) -> dict[str, Any]:
        """Run the steps from the state's step to ``cfg.steps`` (or an early stop); return
        {"step", "stopped_early", "train_length", "train_loss", "elapsed_s", "checkpoint",
        "tests": {length: {"loss", "perplexity", "token_accuracy", "sequence_accuracy",
        "prefix_accuracy"}}}, also written to final_metrics.json."""
        state = self.state
        if self.folder.resume:
            state.restore(self.folder.latest_checkpoint())
        self._elapsed_before, self._clock_start = state.elapsed_s, time.perf_counter()
        self._notify("on_start", state.step)
        self.trained = wrap_for_training(state.model, self.cfg, self.world)
        state.model.train()
        last_step = state.step if state.stopped_early else self.cfg.steps
        with flushed_denormals(self.world.device):
            for step in range(state.step + 1, last_step + 1):
                logging = step % self.cfg.log_every == 0 or step == self.cfg.steps
                row = self.train_step(step, logging)
                if row is not None:
                    state.train_loss = row["loss"]
                    self._notify("on_log", row)
                if self.data.tests and (step % self.cfg.eval_every == 0 or step == self.cfg.steps):
                    self.evaluate(step)
                self.maybe_save(step)
                if state.stopped_early:
                    break
            return self.finish()

    def train_step(self, step: int, logging: bool = True) -> dict[str, Any] | None:
        """One optimizer update (step is 1-based); its metrics row when ``logging`` (the
        accuracies and scalars are made only then), else None."""
        state, cfg = self.state, self.cfg
        state.step = step
        started = time.perf_counter()
        lr = lr_schedule(step - 1, cfg)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        batch = self.source.rows(self.batches.indices(step - 1))
        state.optimizer.zero_grad(set_to_none=True)
        loss, predictions, targets = accumulate_gradients(
            self.trained, batch, self.world, self.micro_steps, self.autocast_dtype
        )
        if not torch.isfinite(loss):
            raise NonFiniteLossError(step, "loss", loss.item(), state.checkpoint)
        grad_norm = full_value(
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip or math.inf)
        )
        if not torch.isfinite(grad_norm):
            raise NonFiniteLossError(step, "gradient norm", grad_norm.item(), state.checkpoint)
        state.optimizer.step()
        # Finite gradients times a large learning rate can still overflow a weight: caught at
        # the update that did it (one host sync, like the loss's), never by a later op's check.
        check_finite_parameters(self.params, step, state.checkpoint)
        if not logging:
            return None
        accuracy = masked_accuracy(predictions, targets)
        tokens_per_s = batch.inputs.numel() / (time.perf_counter() - started)
        return {
            "step": step,
            "split": "train",
            "length": targets.shape[1],
            "loss": loss.item(),
            "token_accuracy": accuracy["token_accuracy"],
            "sequence_accuracy": accuracy["sequence_accuracy"],
            "lr": lr,
            "grad_norm": grad_norm.item(),
            "tokens_per_s": tokens_per_s,
            "elapsed_s": self.elapsed(),
        } | self.mfu(tokens_per_s)

    def mfu(self, tokens_per_s: float) -> dict[str, float]:
        """``{"mfu": ...}``: model FLOPs per second over every process's peak ({} unknown)."""
        if self.flops_per_second_peak is None:
            return {}
        peak = self.flops_per_second_peak * self.world.size
        return {"mfu": tokens_per_s * self.flops_per_token / peak}

    def evaluate(self, step: int) -> dict[int, dict[str, Any]]:
        """Evaluate every test length; decide the early stop on the main length's sequence
        accuracy."""
        state = self.state
        state.last_eval = evaluate_tests(state.model, self.data, self.cfg, self.world.device)
        self._notify("on_evaluate", step, state.last_eval)
        target = self.cfg.early_stop_accuracy
        main_accuracy = state.last_eval[self.main_length]["sequence_accuracy"]
        state.stopped_early = target is not None and main_accuracy >= target
        return state.last_eval

    def maybe_save(self, step: int, force: bool = False) -> None:
        """Save a checkpoint at the cadence, after an early stop, or when ``force``d."""
        every = self.cfg.checkpoint_every
        if force or self.state.stopped_early or (every and step % every == 0):
            self.save(step)

    def save(self, step: int) -> Path:
        """Write the checkpoint of ``step`` (rank 0; every rank waits for it)."""
        state = self.state
        state.elapsed_s = self.elapsed()
        path = self.folder.checkpoints / step_dir_name(step)
        if is_sharded(state.model):
            path = save_sharded_checkpoint(
                self.folder.checkpoints,
                step,
                state.model,
                state.optimizer,
                state.extra(self.cfg),
                self.cfg.keep_checkpoints,
                self.world.is_main,
            )
        elif self.world.is_main:
            path = save_checkpoint(
                self.folder.checkpoints,
                step,
                state.model,
                state.optimizer,
                extra=state.extra(self.cfg),
                keep=self.cfg.keep_checkpoints,
            )
        self.world.barrier()
        state.checkpoint = path
        return path

    def finish(self) -> dict[str, Any]:
        """The last evaluation and checkpoint if missing, then final_metrics.json."""
        state = self.state
        if self.data.tests and state.last_eval is None:  # resumed a finished run with no eval
            state.last_eval = evaluate_tests(state.model, self.data, self.cfg, self.world.device)
        if state.checkpoint is None or state.checkpoint.name != step_dir_name(state.step):
            self.save(state.step)
        final = {
            "step": state.step,
            "stopped_early": state.stopped_early,
            "train_length": self.data.train_length,
            "train_loss": state.train_loss,
            "elapsed_s": self.elapsed(),
            "checkpoint": str(state.checkpoint),
            "tests": state.last_eval or {},
        }
        if self.world.is_main:
            text = json.dumps(final, indent=2) + "\n"
            atomic_write_text(self.folder.path / "final_metrics.json", text)
        self._notify("on_end", final)
        return final


@contextlib.contextmanager
def training_world(cfg: TrainConfig) -> Iterator[World]:
    """This process's World for the run (joining torchrun's process group), left at exit."""
    world = init_distributed(cfg.resolved_device())
    try:
        yield world
    finally:
        close_distributed()


def train(
    model: nn.Module,
    data: TaskDataLike,
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``model`` on ``data`` into ``cfg.out_dir`` (the library's one call; ``selrope
    train`` goes through ``selrope.experiments`` for the same steps).

    Args:
        resume: continue from the latest checkpoint in ``cfg.out_dir``; its TrainConfig must
            match ``cfg`` but for ``RESUMABLE_FIELDS`` (steps, cadences, device, precision,
            compile, log).
        overwrite: a fresh run into a used folder: remove only what selrope wrote there.
        progress: show a tqdm bar and print evaluation summaries.

    Returns:
        See ``Trainer.train``.

    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf, or an update left a
            parameter NaN/inf (checked before evaluating and saving).
        ValueError: the batch does not split over processes and micro-batches; resume without a
            checkpoint or from one of other settings or another model; a fresh run into a
            folder that is not empty without ``overwrite``.
    """
    start = Start.RESUME if resume else Start.OVERWRITE if overwrite else Start.FRESH
    folder = RunFolder(cfg.out_dir, start)

    def check_resume(checkpoint: Path) -> None:
        check_resumable(read_state(checkpoint / STATE_FILE).get("config"), cfg)

    with training_world(cfg) as world:
        check_training_data(data, cfg, world.size)
        folder.prepare(world, {"train": cfg.to_dict()}, check_resume)
        loggers = build_loggers(cfg.log, folder.path, cfg.to_dict()) if world.is_main else []
        return Trainer(model, data, cfg, folder, world, loggers, progress).train()
