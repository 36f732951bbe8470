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
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from selrope.tasks.metrics import masked_accuracy

from .checkpoint import (
    atomic_write_text,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    step_dir_name,
)
from .config import TrainConfig
from .metrics import MetricsLog, evaluate, model_logits, sequence_loss
from .optim import build_optimizer, lr_schedule

logger = logging.getLogger(__name__)

Split = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets), both (N, T) int64


class TaskDataLike(Protocol):
    """What `train` reads from a task (selrope.tasks.TaskData has these attributes)."""

    name: str
    vocab_size: int
    train: Split
    tests: dict[int, Split]
    params: dict


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the last good checkpoint is left untouched."""

    def __init__(self, step: int, what: str, value: float, checkpoint: Path | None):
        self.step = step
        self.what = what
        self.value = value
        self.checkpoint = checkpoint
        last = f"last good checkpoint: {checkpoint}" if checkpoint else "no checkpoint was written"
        super().__init__(f"non-finite {what} ({value}) at step {step}; stopping ({last})")


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

    The training length (`data.params["train_len"]`, else the training sequence length) when it
    is among the test lengths, else the shortest test length; None without test sets.
    """
    if not data.tests:
        return None
    for candidate in (data.params.get("train_len"), data.train[0].shape[1]):
        if candidate in data.tests:
            return candidate
    return min(data.tests)


def evaluate_tests(
    model: nn.Module, data: TaskDataLike, cfg: TrainConfig, device: torch.device
) -> dict[int, dict[str, Any]]:
    """`metrics.evaluate` on every test length: {length: {"loss", "token_accuracy", ...}}."""
    return {
        length: evaluate(
            model,
            inputs,
            targets,
            batch_size=cfg.eval_batch_size,
            device=device,
            autocast_dtype=cfg.autocast_dtype(device),
        )
        for length, (inputs, targets) in sorted(data.tests.items())
    }


def _start_fresh(out_dir: Path, checkpoint_root: Path, log: MetricsLog) -> None:
    if checkpoint_root.exists():
        logger.info("starting a fresh run: removing old checkpoints in %s", checkpoint_root)
        shutil.rmtree(checkpoint_root)
    log.reset()
    (out_dir / "final_metrics.json").unlink(missing_ok=True)


def _warn_config_changes(saved: dict[str, Any], cfg: TrainConfig) -> None:
    current = cfg.to_dict()
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    changed.pop("out_dir", None)
    if changed:
        logger.warning("resuming with a changed config (saved, now): %s", changed)


def train(
    model: nn.Module,
    data: TaskDataLike,
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train `model` on `data.train`, evaluating on every `data.tests` length.

    Args:
        model: maps input ids (B, T) to logits (B, T, V), or to a tuple whose first element is
            the logits. Moved to the run's device in place.
        data: a TaskData (see TaskDataLike); targets are -100 where ignored.
        cfg: the run's settings; everything is written under `cfg.out_dir`.
        resume: continue from the latest checkpoint in `cfg.out_dir` (a fresh start when there is
            none). Without it, old checkpoints and metrics in `cfg.out_dir` are deleted.
        progress: show a tqdm bar and print eval summaries.
    Returns:
        {"step", "stopped_early", "train_loss" (last logged, or None), "elapsed_s", "checkpoint"
        (path), "tests": {length: {"loss", "token_accuracy", "sequence_accuracy",
        "prefix_accuracy" (list of T floats)}}}.
    Raises:
        NonFiniteLossError: the loss or gradient norm became NaN/inf.
    """
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_root = out_dir / "checkpoints"
    log = MetricsLog(out_dir)
    device = cfg.resolved_device()
    autocast_dtype = cfg.autocast_dtype(device)
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    train_inputs, train_targets = data.train
    batches = DeterministicBatches(train_inputs.shape[0], cfg.batch_size, cfg.seed)
    main_length = main_test_length(data)

    start_step, elapsed_before, stopped_early = 0, 0.0, False
    last_eval: dict[int, dict[str, Any]] | None = None
    checkpoint = latest_checkpoint(checkpoint_root) if resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer)
        restore_rng_state(state["rng"])
        _warn_config_changes(state["config"], cfg)
        start_step, elapsed_before = state["step"], state["elapsed_s"]
        stopped_early, last_eval = state["stopped_early"], state["last_eval"]
        log.truncate_after(start_step)
        logger.info("resumed from %s at step %d", checkpoint, start_step)
    else:
        _start_fresh(out_dir, checkpoint_root, log)
    atomic_write_text(out_dir / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")

    def save(step: int) -> Path:
        extra = {
            "config": cfg.to_dict(),
            "elapsed_s": elapsed(),
            "stopped_early": stopped_early,
            "last_eval": last_eval,
        }
        return save_checkpoint(
            checkpoint_root, step, model, optimizer, extra=extra, keep=cfg.keep_checkpoints
        )

    t0 = time.perf_counter()

    def elapsed() -> float:
        return elapsed_before + time.perf_counter() - t0

    bar = tqdm(total=cfg.steps, initial=start_step, disable=not progress, dynamic_ncols=True)
    postfix: dict[str, str] = {}
    step, train_loss = start_step, None
    model.train()
    last_step = start_step if stopped_early else cfg.steps
    for step in range(start_step + 1, last_step + 1):
        lr = lr_schedule(step - 1, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr

        rows = batches.indices(step - 1)
        x, y = train_inputs[rows].to(device), train_targets[rows].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model_logits(model, x)
        loss = sequence_loss(logits, y)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(step, "loss", loss.item(), checkpoint)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip or math.inf)
        if not torch.isfinite(grad_norm):
            raise NonFiniteLossError(step, "gradient norm", grad_norm.item(), checkpoint)
        optimizer.step()
        bar.update(1)

        if step % cfg.log_every == 0 or step == cfg.steps:
            train_loss = loss.item()
            acc = masked_accuracy(logits.argmax(-1), y)
            log.append(
                {
                    "step": step,
                    "split": "train",
                    "length": y.shape[1],
                    "loss": train_loss,
                    "token_accuracy": acc["token_accuracy"],
                    "sequence_accuracy": acc["sequence_accuracy"],
                    "lr": lr,
                    "grad_norm": grad_norm.item(),
                    "elapsed_s": elapsed(),
                }
            )
            postfix["loss"] = f"{train_loss:.4f}"
            bar.set_postfix(postfix)

        if data.tests and (step % cfg.eval_every == 0 or step == cfg.steps):
            last_eval = evaluate_tests(model, data, cfg, device)
            for length, result in last_eval.items():
                log.append(
                    {
                        "step": step,
                        "split": "test",
                        "length": length,
                        "loss": result["loss"],
                        "token_accuracy": result["token_accuracy"],
                        "sequence_accuracy": result["sequence_accuracy"],
                        "lr": lr,
                        "elapsed_s": elapsed(),
                    }
                )
            main_accuracy = last_eval[main_length]["sequence_accuracy"]
            postfix[f"acc@{main_length}"] = f"{main_accuracy:.3f}"
            bar.set_postfix(postfix)
            if progress:
                summary = "  ".join(
                    f"{n}: {r['sequence_accuracy']:.3f}" for n, r in last_eval.items()
                )
                bar.write(f"step {step}: sequence accuracy by length  {summary}")
            target = cfg.early_stop_accuracy
            stopped_early = target is not None and main_accuracy >= target

        if stopped_early or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
            checkpoint = save(step)
        if stopped_early:
            break
    bar.close()

    if data.tests and last_eval is None:  # resumed a finished run that had no eval
        last_eval = evaluate_tests(model, data, cfg, device)
    if checkpoint is None or checkpoint.name != step_dir_name(step):
        checkpoint = save(step)
    final = {
        "step": step,
        "stopped_early": stopped_early,
        "train_loss": train_loss,
        "elapsed_s": elapsed(),
        "checkpoint": str(checkpoint),
        "tests": last_eval or {},
    }
    atomic_write_text(out_dir / "final_metrics.json", json.dumps(final, indent=2) + "\n")
    return final
