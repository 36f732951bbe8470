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

IGNORE_INDEX = -100

METRIC_COLUMNS = (
    "step",
    "split",
    "length",
    "loss",
    "token_accuracy",
    "sequence_accuracy",
    "lr",
    "grad_norm",
    "elapsed_s",
)


def model_logits(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """`model(inputs)`'s logits (B, T, V), unwrapping a `(logits, cache)` tuple."""
    out = model(inputs)
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


def accuracy_counts(predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Counts behind token, sequence and prefix accuracy, so that batches can be summed.

    Args:
        predictions: (B, T) int64, e.g. `logits.argmax(-1)`.
        targets: (B, T) int64 with IGNORE_INDEX at ignored positions.
    Returns:
        Dict of int64 tensors: "correct_tokens", "tokens", "correct_sequences", "sequences"
        (scalars; a row counts as a sequence when it has at least one target) and
        "correct_prefixes" (T,): the number of rows whose positions 0..t are all right.
    """
    if predictions.shape != targets.shape or targets.ndim != 2:
        raise ValueError(
            f"predictions and targets must both have shape (B, T); got "
            f"{tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    scored = targets != IGNORE_INDEX
    right_or_ignored = (predictions == targets) | ~scored
    has_targets = scored.any(dim=1)
    return {
        "correct_tokens": ((predictions == targets) & scored).sum(),
        "tokens": scored.sum(),
        "correct_sequences": (right_or_ignored.all(dim=1) & has_targets).sum(),
        "sequences": has_targets.sum(),
        "correct_prefixes": right_or_ignored.long().cumprod(dim=1).sum(dim=0),
    }


def accuracies(counts: dict[str, torch.Tensor], rows: int) -> dict[str, Any]:
    """Turn summed `accuracy_counts` into fractions (NaN when there is nothing to score).

    Returns:
        "token_accuracy", "sequence_accuracy" floats and "prefix_accuracy", a list of T floats
        (fraction of all `rows` whose first t+1 positions are right).
    """

    def ratio(num: torch.Tensor, den: torch.Tensor | int) -> float:
        den = int(den)
        return int(num) / den if den else math.nan

    return {
        "token_accuracy": ratio(counts["correct_tokens"], counts["tokens"]),
        "sequence_accuracy": ratio(counts["correct_sequences"], counts["sequences"]),
        "prefix_accuracy": [c / rows for c in counts["correct_prefixes"].tolist()],
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Loss and accuracies of `model` on a whole split, in batches, without gradients.

    Args:
        inputs: (N, T) int64 token ids.
        targets: (N, T) int64 with IGNORE_INDEX at ignored positions.
        batch_size: rows per forward pass.
        autocast_dtype: e.g. torch.bfloat16 to run the forward under autocast; None for fp32.
    Returns:
        Dict with "loss" (mean cross-entropy per scored token), "token_accuracy",
        "sequence_accuracy" and "prefix_accuracy" (list of T floats); see `accuracies`.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64)
    totals: dict[str, torch.Tensor] = {}
    try:
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start : start + batch_size].to(device)
            y = targets[start : start + batch_size].to(device)
            with torch.autocast(
                device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
            ):
                logits = model_logits(model, x)
            loss_sum += sequence_loss(logits, y, reduction="sum").double().cpu()
            for key, value in accuracy_counts(logits.argmax(-1), y).items():
                totals[key] = totals.get(key, 0) + value.cpu()
    finally:
        model.train(was_training)
    result = accuracies(totals, rows=inputs.shape[0])
    tokens = int(totals["tokens"])
    result["loss"] = float(loss_sum) / tokens if tokens else math.nan
    return result


class MetricsLog:
    """Rows of METRIC_COLUMNS appended to `out_dir/metrics.jsonl` and `out_dir/metrics.csv`.

    Missing columns are written as null (JSON) / empty (CSV); extra keys are rejected so that
    both files always hold the same columns.
    """

    def __init__(self, out_dir: str | Path):
        self.jsonl_path = Path(out_dir) / "metrics.jsonl"
        self.csv_path = Path(out_dir) / "metrics.csv"

    def reset(self) -> None:
        """Delete both files (a fresh run)."""
        self.jsonl_path.unlink(missing_ok=True)
        self.csv_path.unlink(missing_ok=True)

    def rows(self) -> list[dict[str, Any]]:
        """All rows in the JSONL file, in order."""
        if not self.jsonl_path.exists():
            return []
        with self.jsonl_path.open() as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step` (used on resume: they belong to the lost future)."""
        kept = [row for row in self.rows() if row["step"] <= step]
        self.reset()
        for row in kept:
            self.append(row)

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
