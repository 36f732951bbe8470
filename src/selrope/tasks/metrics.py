"""Accuracy metrics for targets with ignored positions (-100)."""

from __future__ import annotations

import torch
from torch import Tensor

from selrope.tasks.base import IGNORE_INDEX


def _check(predictions: Tensor, targets: Tensor) -> None:
    if predictions.shape != targets.shape or predictions.dim() != 2:
        raise ValueError(
            "predictions and targets must both have shape (N, L); got "
            f"{tuple(predictions.shape)} and {tuple(targets.shape)}"
        )


def masked_accuracy(predictions: Tensor, targets: Tensor) -> dict[str, float]:
    """Token and sequence accuracy over the non-ignored targets.

    Args:
        predictions: LongTensor (N, L), e.g. logits.argmax(-1).
        targets: LongTensor (N, L), IGNORE_INDEX where there is no target.

    Returns:
        A dict: ``token_accuracy`` (correct / counted over targets != -100),
        ``sequence_accuracy`` (the fraction of rows with at least one target whose targets are
        all right; rows without targets are excluded), ``num_tokens`` (counted targets) and
        ``num_sequences`` (counted rows). An empty count gives nan.
    """
    _check(predictions, targets)
    valid = targets != IGNORE_INDEX
    correct = (predictions == targets) & valid
    num_tokens = int(valid.sum())
    has_target = valid.any(dim=1)
    row_right = (correct | ~valid).all(dim=1) & has_target
    num_sequences = int(has_target.sum())
    nan = float("nan")
    return {
        "token_accuracy": int(correct.sum()) / num_tokens if num_tokens else nan,
        "sequence_accuracy": int(row_right.sum()) / num_sequences if num_sequences else nan,
        "num_tokens": num_tokens,
        "num_sequences": num_sequences,
    }


def accuracy_by_prefix_length(predictions: Tensor, targets: Tensor) -> Tensor:
    """Fraction of rows whose first t+1 positions are all right, for each t.

    Ignored targets (-100) count as right, so a row stays "all right" across them.

    Args:
        predictions: LongTensor (N, L).
        targets: LongTensor (N, L).

    Returns:
        float32 Tensor (L,); entry t = mean over rows of [all non-ignored targets[:, :t+1] are
        predicted]. Non-increasing in t.
    """
    _check(predictions, targets)
    ok = (predictions == targets) | (targets == IGNORE_INDEX)
    return torch.cummin(ok.to(torch.int32), dim=1).values.to(torch.float32).mean(dim=0)
