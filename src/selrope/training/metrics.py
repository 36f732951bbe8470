"""Evaluation (loss, token / sequence / prefix accuracy) and the per-run metrics files.

Targets follow the task convention: `targets[:, t]` is predicted from `inputs[:, :t+1]`, and
positions with target -100 are ignored.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selrope.tasks.base import IGNORE_INDEX, BatchSource
from selrope.tasks.metrics import accuracy_by_prefix_length, masked_accuracy

from .checkpoint import atomic_write, atomic_write_text

METRIC_COLUMNS = (
    "step",
    "split",
    "length",
    "loss",
    "perplexity",
    "token_accuracy",
    "sequence_accuracy",
    "lr",
    "grad_norm",
    "tokens_per_s",
    "elapsed_s",
)


def model_logits(
    model: nn.Module, inputs: torch.Tensor, segment_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """`model(inputs)`'s logits (B, T, V), unwrapping a `(logits, cache)` tuple.

    `segment_ids` (B, T) of packed rows is passed on as `model(inputs, segment_ids=...)`; models
    that know nothing of packing are called with the inputs alone.
    """
    out = model(inputs) if segment_ids is None else model(inputs, segment_ids=segment_ids)
    return out[0] if isinstance(out, tuple) else out


def sequence_loss(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy over non-ignored positions, computed in float32.

    Args:
        logits: (B, T, V), any float dtype.
        targets: (B, T) int64 with IGNORE_INDEX at ignored positions.
        reduction: "mean" over non-ignored tokens, or "sum".
    Returns:
        A float32 scalar.
    """
    return F.cross_entropy(
        logits.float().flatten(0, 1),
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    source: BatchSource,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Loss and accuracies of `model` on every row of `source`, in batches, without gradients.

    Args:
        source: the rows to score (e.g. `TensorBatches(inputs, targets)`, or corpus windows whose
            segment ids keep packed documents apart).
        batch_size: rows per forward pass.
        autocast_dtype: e.g. torch.bfloat16 to run the forward under autocast; None for fp32.
    Returns:
        "loss": mean cross-entropy per scored token; "perplexity": exp(loss); "token_accuracy",
        "sequence_accuracy" (see `selrope.tasks.metrics.masked_accuracy`: NaN when nothing is
        scored); "prefix_accuracy": list of T floats, the fraction of rows whose first t+1
        positions are all right (`selrope.tasks.metrics.accuracy_by_prefix_length`).
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = 0.0
    predictions, targets = [], []
    try:
        for start in range(0, source.num_rows, batch_size):
            indices = torch.arange(start, min(start + batch_size, source.num_rows))
            batch = source.rows(indices)
            y = batch.targets.to(device)
            segment_ids = None if batch.segment_ids is None else batch.segment_ids.to(device)
            with torch.autocast(
                device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                logits = model_logits(model, batch.inputs.to(device), segment_ids)
            loss_sum += sequence_loss(logits, y, reduction="sum").item()
            predictions.append(logits.argmax(-1).cpu())
            targets.append(batch.targets)
    finally:
        model.train(was_training)
    predicted, target = torch.cat(predictions), torch.cat(targets)
    accuracy = masked_accuracy(predicted, target)
    tokens = accuracy["num_tokens"]
    loss = loss_sum / tokens if tokens else math.nan
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)) if tokens else math.nan,
        "token_accuracy": accuracy["token_accuracy"],
        "sequence_accuracy": accuracy["sequence_accuracy"],
        "prefix_accuracy": accuracy_by_prefix_length(predicted, target).tolist(),
    }


class MetricsLog:
    """Rows of METRIC_COLUMNS appended to `out_dir/metrics.jsonl` and `out_dir/metrics.csv`.

    Missing columns are written as null (JSON) / empty (CSV); extra keys are rejected so that
    both files always hold the same columns.
    """

    def __init__(self, out_dir: str | Path):
        self.jsonl_path = Path(out_dir) / "metrics.jsonl"
        self.csv_path = Path(out_dir) / "metrics.csv"

    def rows(self) -> list[dict[str, Any]]:
        """All rows in the JSONL file, in order."""
        if not self.jsonl_path.exists():
            return []
        with self.jsonl_path.open() as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (used on resume: they belong to the lost future).

        Each file is rewritten atomically (temp file, fsync, rename), so a kill at any moment
        leaves either the old rows or the kept ones, never fewer.
        """
        kept = [row for row in self.rows() if row["step"] <= step]
        atomic_write_text(self.jsonl_path, "".join(json.dumps(row) + "\n" for row in kept))

        def write_csv(tmp: Path) -> None:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
                writer.writeheader()
                for row in kept:
                    writer.writerow(
                        {k: "" if row.get(k) is None else row[k] for k in METRIC_COLUMNS}
                    )

        atomic_write(self.csv_path, write_csv)

    def append(self, row: dict[str, Any]) -> None:
        """Append one row to both files (flushed at once so a crash loses at most this row)."""
        extra = sorted(set(row) - set(METRIC_COLUMNS))
        if extra:
            raise ValueError(
                f"unknown metric columns {extra}; expected a subset of {METRIC_COLUMNS}"
            )
        full = {column: row.get(column) for column in METRIC_COLUMNS}
        self.jsonl_path.parent.mkdir(parents=True, exist_ok=True)
        with self.jsonl_path.open("a") as f:
            f.write(json.dumps(full) + "\n")
        new_csv = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
            if new_csv:
                writer.writeheader()
            writer.writerow({k: "" if v is None else v for k, v in full.items()})


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of `run_dir/metrics.jsonl` (empty list when the file does not exist)."""
    return MetricsLog(run_dir).rows()
