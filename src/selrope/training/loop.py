"""The training loop: deterministic batches, AdamW + warmup/cosine, periodic eval, checkpoints.

Files written under `cfg.out_dir`:

    config.json                 the TrainConfig
    metrics.jsonl, metrics.csv  one row per log / eval event (columns: metrics.METRIC_COLUMNS)
    checkpoints/step_XXXXXXXX/  model.safetensors + state.pt (see checkpoint.py)
    final_metrics.json          what `train` returns

Steps are 1-based: "step s" is the s-th optimizer update, and a checkpoint at step s holds the
state after it. The batch of step s is a pure function of (cfg.seed, s), and a checkpoint holds
everything else the next step reads (weights, AdamW moments, the global RNG), so on CPU a run
resumed from a checkpoint reproduces the uninterrupted run's losses bit for bit.

`cfg.batch_size` is the global batch: under torchrun each of the N processes takes a contiguous
1/N of every batch's rows, in `cfg.micro_batch_size` pieces whose gradients accumulate, and the
step is the same as one pass over the whole batch in one process. Rank 0 writes every file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from selrope.tasks.base import IGNORE_INDEX, Batch, BatchSource, as_batch_source
from selrope.tasks.metrics import masked_accuracy

from .checkpoint import (
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    step_dir_name,
)
from .config import RESUMABLE_FIELDS, TrainConfig
from .distributed import World, close_distributed, init_distributed
from .metrics import MetricsLog, evaluate, model_logits, sequence_loss
from .optim import build_optimizer, lr_schedule
from .run_dir import remove_outputs, trainer_outputs

logger = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor] | BatchSource  # (inputs, targets) (N, T), or rows


class TaskDataLike(Protocol):
    """What `train` reads from a task (selrope.tasks.TaskData has these attributes)."""

    name: str
    vocab_size: int
    train: Split
    tests: dict[int, Split]
    train_length: int
    params: dict


def _last_checkpoint(checkpoint: Path | None) -> str:
    return f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written"


class TrainingStoppedError(RuntimeError):
    """Training stopped after its run folder was written: a check failed mid-run. The last good
    checkpoint is left untouched (the CLI exits with status 1, not 2: not a usage error)."""

    def __init__(self, step: int, reason: str, checkpoint: Path | None):
        self.step = step
        self.checkpoint = checkpoint
        self._arguments: tuple = (step, reason, checkpoint)
        super().__init__(
            f"training stopped at step {step}: {reason} ({_last_checkpoint(checkpoint)})"
        )

    def __reduce__(self):
        # Rebuilt from the constructor's arguments, not the message, so that the error crosses
        # the process pool of `run_parallel` (compare, the demo) intact.
        return type(self), self._arguments


class NonFiniteLossError(TrainingStoppedError):
    """The loss, the gradient norm or (after an update) a parameter became NaN/inf."""

    def __init__(self, step: int, what: str, value: float, checkpoint: Path | None):
        self.what = what
        self.value = value
        super().__init__(step, f"non-finite {what} ({value})", checkpoint)
        self._arguments = (step, what, value, checkpoint)


def check_finite_parameters(params: list[torch.Tensor], step: int, checkpoint: Path | None) -> None:
    """Raise ``NonFiniteLossError`` when an update has left a parameter NaN/inf (finite gradients
    times a huge learning rate overflow). One host sync: called only before evaluating or
    saving, so a diverged model is neither evaluated nor written over a good checkpoint."""
    finite = torch.stack([torch.isfinite(p).all() for p in params])
    if not bool(finite.all()):
        bad = params[int((~finite).nonzero()[0])]
        value = bad[~torch.isfinite(bad)].flatten()[0].item()
        raise NonFiniteLossError(step, "parameter after the update", value, checkpoint)


def check_training_data(data: TaskDataLike, cfg: TrainConfig, world_size: int) -> None:
    """The checks of ``train`` that need the data or the world size, for callers that write
    into the run folder before training: ValueError unless the training rows fill a batch that
    splits over ``world_size`` processes and the micro-batches."""
    cfg.micro_steps(world_size)
    DeterministicBatches(as_batch_source(data.train).num_rows, cfg.batch_size, cfg.seed)


class DeterministicBatches:
    """Batch row indices as a pure function of (seed, step index).

    Each epoch is a fresh permutation of the N rows drawn from a torch.Generator seeded with
    (seed, epoch); the epoch's last incomplete batch is dropped.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        if not 1 <= batch_size <= num_examples:
            raise ValueError(
                f"batch_size must be in [1, {num_examples}] (training set rows); got {batch_size}"
            )
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = num_examples // batch_size
        self._epoch = -1
        self._permutation = torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The row order of `epoch`: (N,) int64."""
        if epoch != self._epoch:
            epoch_seed = np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0]
            generator = torch.Generator().manual_seed(int(epoch_seed))
            self._permutation = torch.randperm(self.num_examples, generator=generator)
            self._epoch = epoch
        return self._permutation

    def indices(self, step_index: int) -> torch.Tensor:
        """Rows of the batch for the 0-based update `step_index`: (batch_size,) int64."""
        epoch, position = divmod(step_index, self.batches_per_epoch)
        start = position * self.batch_size
        return self.permutation(epoch)[start : start + self.batch_size]


def main_test_length(data: TaskDataLike) -> int | None:
    """The test length that early stopping and the progress bar watch.

    The task's (longest) training length `data.train_length` when it is among the test lengths,
    else the shortest test length; None without test sets.
    """
    if not data.tests:
        return None
    return data.train_length if data.train_length in data.tests else min(data.tests)


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

    The global batch's rows are cut into ``world.size`` contiguous shares, and each share into
    ``micro_steps`` micro-batches. Every micro-batch adds ``sum of its token losses / tokens
    scored in the whole global batch`` (times world.size, which DDP's gradient averaging divides
    out) to the gradients, so the update equals one pass over the global batch whatever the
    number of processes and micro-steps.

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
        last = i == micro_steps - 1
        sync = contextlib.nullcontext() if last or world.size == 1 else model.no_sync()
        with sync:
            with torch.autocast(
                device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                logits = model_logits(model, x, segment_ids)
            loss_sum = sequence_loss(logits, y, reduction="sum")
            (loss_sum * (world.size / scored)).backward()
        total = total + loss_sum.detach()
        predictions.append(logits.detach().argmax(-1).cpu())
    loss = world.all_reduce_sum(total) / scored
    return loss, torch.cat(predictions), batch.targets[mine]


def check_resumable(saved: dict[str, Any], cfg: TrainConfig) -> None:
    """Raise ValueError listing the fields of ``cfg`` that differ from the checkpoint's config
    ``saved`` and that a resumed run may not change (all but ``RESUMABLE_FIELDS``)."""
    current = cfg.to_dict()
    changed = [
        f"{key} (saved {saved.get(key)!r}, now {value!r})"
        for key, value in current.items()
        if key not in RESUMABLE_FIELDS and saved.get(key) != value
    ]
    if changed:
        raise ValueError(
            f"cannot resume {cfg.out_dir}: the run was trained with other settings: "
            f"{', '.join(changed)}; only {', '.join(RESUMABLE_FIELDS[:-1])} may change "
            "(or start over with --overwrite)"
        )


def _restore(checkpoint: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """load_checkpoint, with a checkpoint of another model as a one-line ValueError."""
    try:
        return load_checkpoint(checkpoint, model, optimizer)
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[0]
        raise ValueError(
            f"cannot resume from {checkpoint}: its weights do not fit this model ({reason})"
        ) from None


def _start_fresh(out_dir: Path, overwrite: bool) -> None:
    """Make ``out_dir`` ready for a fresh run: refuse earlier training outputs unless asked to
    overwrite them, then remove only those (other files in the folder are kept)."""
    outputs = trainer_outputs(out_dir)
    if outputs and not overwrite:
        raise ValueError(
            f"{out_dir} already holds a training run ({outputs[0].name}, ...); resume it, or "
            "overwrite it explicitly (--overwrite / overwrite=True)"
        )
    remove_outputs(out_dir, outputs)
    out_dir.mkdir(parents=True, exist_ok=True)


def wrap_for_training(model: nn.Module, cfg: TrainConfig, world: World) -> nn.Module:
    """The module the training steps call: DDP across processes, torch.compile if asked."""
    wrapped = model
    if world.size > 1:
        device_ids = [world.device.index] if world.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=device_ids)
    # torch.compile's wrapper forwards attribute lookups (DDP's no_sync) to the module inside.
    return torch.compile(wrapped) if cfg.compile else wrapped


def train(
    model: nn.Module,
    data: TaskDataLike,
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train `model` on `data.train`, evaluating on every `data.tests` length.

    Under ``torchrun`` (WORLD_SIZE > 1) this is data-parallel training: every process reads its
    share of each global batch (see `accumulate_gradients`), rank 0 logs and writes checkpoints,
    and every process restores from the same checkpoint on resume.

    Args:
        model: maps input ids (B, T) (and ``segment_ids=`` for packed rows) to logits (B, T, V),
            or to a tuple whose first element is the logits. Moved to the run's device in place.
        data: a TaskData (see TaskDataLike); its splits are (inputs, targets) tensors with
            targets -100 where ignored, or BatchSources (a corpus).
        cfg: the run's settings; everything is written under `cfg.out_dir`.
        resume: continue from the latest checkpoint in `cfg.out_dir`; its TrainConfig must match
            `cfg` but for `RESUMABLE_FIELDS` (steps, cadences, device, precision, compile).
        progress: show a tqdm bar (loss, lr, tokens/s) and print eval summaries.
        overwrite: for a fresh run into a folder that holds an earlier run's outputs: remove
            those (checkpoints/step_*, metrics, config.json, final_metrics.json; nothing else).
    Returns:
        {"step", "stopped_early", "train_loss" (last logged, or None), "elapsed_s", "checkpoint"
        (path), "tests": {length: {"loss", "perplexity", "token_accuracy", "sequence_accuracy",
        "prefix_accuracy" (list of T floats)}}}.
    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf, or an update left a
            parameter NaN/inf (checked before evaluating and saving).
        TrainingStoppedError: any other check failing once steps have begun (a diverged
            model's NaN reaching an op's input check); the ValueError is its ``__cause__``.
        ValueError: the batch size does not split over the processes and micro-batches; resume
            without a checkpoint, or from one of other settings or another model; a fresh run
            into a folder with an earlier run's outputs without `overwrite`.
    """
    world = init_distributed(cfg.resolved_device())
    try:
        with flushed_denormals(world.device):
            return _train(model, data, cfg, resume, overwrite, progress, world)
    finally:
        close_distributed()


@contextlib.contextmanager
def flushed_denormals(device: torch.device) -> Iterator[None]:
    """Flush denormal floats to zero on CPU while training, then restore the previous setting.

    Denormals (softmax tails, Adam moments of rare tokens) slow CPU steps by up to 10x. The
    setting is process-wide processor state, so it is put back for whatever runs afterwards.
    """
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


def _train(
    model: nn.Module,
    data: TaskDataLike,
    cfg: TrainConfig,
    resume: bool,
    overwrite: bool,
    progress: bool,
    world: World,
) -> dict[str, Any]:
    micro_steps = cfg.micro_steps(world.size)
    device = world.device
    out_dir = Path(cfg.out_dir)
    checkpoint_root = out_dir / "checkpoints"
    log = MetricsLog(out_dir)
    autocast_dtype = cfg.autocast_dtype(device)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    source = as_batch_source(data.train)
    batches = DeterministicBatches(source.num_rows, cfg.batch_size, cfg.seed)
    main_length = main_test_length(data)

    start_step, elapsed_before, stopped_early, train_loss = 0, 0.0, False, None
    last_eval: dict[int, dict[str, Any]] | None = None
    checkpoint = latest_checkpoint(checkpoint_root) if resume else None
    if resume:
        if checkpoint is None:
            raise ValueError(f"nothing to resume: no checkpoint in {checkpoint_root}")
        state = _restore(checkpoint, model, optimizer)
        check_resumable(state["config"], cfg)
        restore_rng_state(state["rng"])
        start_step, elapsed_before = state["step"], state["elapsed_s"]
        stopped_early, last_eval = state["stopped_early"], state["last_eval"]
        train_loss = state.get("train_loss")
        if world.is_main:
            log.truncate_after(start_step)
        logger.info("resumed from %s at step %d", checkpoint, start_step)
    elif world.is_main:
        _start_fresh(out_dir, overwrite)
    if world.is_main:
        atomic_write_text(out_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
    world.barrier()  # no process reads the run folder before rank 0 has set it up
    trained = wrap_for_training(model, cfg, world)

    def save(step: int) -> Path:
        extra = {
            "config": cfg.to_dict(),
            "elapsed_s": elapsed(),
            "stopped_early": stopped_early,
            "last_eval": last_eval,
            "train_loss": train_loss,
        }
        path = checkpoint_root / step_dir_name(step)
        if world.is_main:
            path = save_checkpoint(
                checkpoint_root, step, model, optimizer, extra=extra, keep=cfg.keep_checkpoints
            )
        world.barrier()
        return path

    t0 = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t0

    show = progress and world.is_main
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not show, dynamic_ncols=True)
    postfix: dict[str, str] = {}
    step = start_step
    model.train()
    last_step = start_step if stopped_early else cfg.steps
    try:
        for step in range(start_step + 1, last_step + 1):
            step_start = time.perf_counter()
            lr = lr_schedule(step - 1, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr

            batch = source.rows(batches.indices(step - 1))
            optimizer.zero_grad(set_to_none=True)
            loss, predictions, targets = accumulate_gradients(
                trained, batch, world, micro_steps, autocast_dtype
            )
            if not torch.isfinite(loss):
                raise NonFiniteLossError(step, "loss", loss.item(), checkpoint)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
            if not torch.isfinite(grad_norm):
                raise NonFiniteLossError(step, "gradient norm", grad_norm.item(), checkpoint)
            optimizer.step()
            tokens_per_s = batch.inputs.numel() / (time.perf_counter() - step_start)
            bar.update(1)

            if world.is_main and (step % cfg.log_every == 0 or step == cfg.steps):
                train_loss = loss.item()
                acc = masked_accuracy(predictions, targets)
                log.append(
                    {
                        "step": step,
                        "split": "train",
                        "length": targets.shape[1],
                        "loss": train_loss,
                        "token_accuracy": acc["token_accuracy"],
                        "sequence_accuracy": acc["sequence_accuracy"],
                        "lr": lr,
                        "grad_norm": grad_norm.item(),
                        "tokens_per_s": tokens_per_s,
                        "elapsed_s": elapsed(),
                    }
                )
                postfix.update(
                    loss=f"{train_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}"
                )
                bar.set_postfix(postfix)

            evaluating = data.tests and (step % cfg.eval_every == 0 or step == cfg.steps)
            saving = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
            if evaluating or saving:  # an early stop saves only after an evaluation
                check_finite_parameters(params, step, checkpoint)
            if evaluating:
                last_eval = evaluate_tests(model, data, cfg, device)
                if world.is_main:
                    for length, result in last_eval.items():
                        log.append(
                            {
                                "step": step,
                                "split": "test",
                                "length": length,
                                "loss": result["loss"],
                                "perplexity": result["perplexity"],
                                "token_accuracy": result["token_accuracy"],
                                "sequence_accuracy": result["sequence_accuracy"],
                                "lr": lr,
                                "elapsed_s": elapsed(),
                            }
                        )
                main_accuracy = last_eval[main_length]["sequence_accuracy"]
                if data.name == "lm":  # sequence accuracy means nothing for free text
                    postfix[f"ppl@{main_length}"] = f"{last_eval[main_length]['perplexity']:.2f}"
                else:
                    postfix[f"acc@{main_length}"] = f"{main_accuracy:.3f}"
                bar.set_postfix(postfix)
                if show:
                    summary = "  ".join(
                        f"{n}: loss {r['loss']:.4f} (ppl {r['perplexity']:.2f}), "
                        f"sequence accuracy {r['sequence_accuracy']:.3f}"
                        for n, r in last_eval.items()
                    )
                    bar.write(f"step {step}: by test length  {summary}")
                target = cfg.early_stop_accuracy
                stopped_early = target is not None and main_accuracy >= target

            if stopped_early or saving:
                checkpoint = save(step)
            if stopped_early:
                break
    except ValueError as error:
        # Every setting was checked before the run folder was written: a check failing now means
        # the run itself went wrong (a diverged model's NaN reaching an op's input check).
        raise TrainingStoppedError(step, str(error), checkpoint) from error
    bar.close()

    if data.tests and last_eval is None:  # resumed a finished run that had no eval
        last_eval = evaluate_tests(model, data, cfg, device)
    if checkpoint is None or checkpoint.name != step_dir_name(step):
        check_finite_parameters(params, step, checkpoint)
        checkpoint = save(step)
    final = {
        "step": step,
        "stopped_early": stopped_early,
        "train_length": data.train_length,
        "train_loss": train_loss,
        "elapsed_s": elapsed(),
        "checkpoint": str(checkpoint),
        "tests": last_eval or {},
    }
    if world.is_main:
        atomic_write_text(out_dir / "final_metrics.json", json.dumps(final, indent=2) + "\n")
    return final
