"""Perplexity against context length on a token stream, every length scoring the same tokens.

A split is one stream ``EOS d1 EOS d2 ... EOS dn EOS`` with ``doc_starts`` the offsets of each
document's leading EOS. For a length L the first ``S`` targets (stream positions 1..S) are cut
into non-overlapping windows: window w reads ``tokens[w L : w L + L]`` and predicts
``tokens[w L + 1 : w L + L + 1]``, with segment ids so that no window reads across a document
boundary. ``S = W * L_max`` with ``W = floor((N - 1) / L_max)`` windows of the longest length, so
every length scores the same S tokens and the numbers are comparable; a length that does not
divide S ends with one shorter window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selrope.data import TokenSplit, segment_ids_for_window


def scored_target_count(num_tokens: int, max_length: int, max_tokens: int | None = None) -> int:
    """S, the number of targets every length scores: whole windows of ``max_length``.

    Args:
        num_tokens: N, the stream length.
        max_length: L_max, the longest evaluation length.
        max_tokens: an optional cap on S (rounded down to a multiple of L_max).

    Raises:
        ValueError: not even one window of ``max_length`` fits (naming the argument at fault).
    """
    windows = (num_tokens - 1) // max_length
    if max_tokens is not None:
        if max_tokens < max_length:
            raise ValueError(
                f"max_tokens must be at least the longest length {max_length}; got {max_tokens}"
            )
        windows = min(windows, max_tokens // max_length)
    if windows < 1:
        raise ValueError(
            f"lengths: the longest length {max_length} needs a split of more than {max_length} "
            f"tokens; got {num_tokens}"
        )
    return windows * max_length


def _window_losses(
    model: nn.Module,
    tokens: np.ndarray,
    doc_starts: np.ndarray,
    starts: np.ndarray,
    length: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Per-token NLL ``(B, length)`` float64 of the windows at ``starts``."""
    positions = starts[:, None] + np.arange(length + 1)
    window = torch.from_numpy(tokens[positions].astype(np.int64)).to(device)
    documents = [segment_ids_for_window(doc_starts, int(start), length) for start in starts]
    segment_ids = torch.from_numpy(np.stack(documents)).to(device)
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        logits = model(window[:, :-1], segment_ids=segment_ids)
    losses = F.cross_entropy(
        logits.float().flatten(0, 1), window[:, 1:].flatten(), reduction="none"
    )
    return losses.view(len(starts), length).double().cpu()


@torch.no_grad()
def evaluate_length(
    model: nn.Module,
    split: TokenSplit,
    length: int,
    scored: int,
    *,
    batch_size: int,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Score targets 1..``scored`` of the stream with windows of ``length`` (see the module doc;
    ``evaluate_lengths`` for the arguments, and it sets eval mode, which this does not).

    Returns:
        ``{"length", "nll", "perplexity", "tokens", "windows", "loss_by_position"}``: the
        token-weighted mean NLL in nats, exp(nll), the number of scored tokens (= scored), the
        number of windows, and the mean NLL at each window position 0..length-1 (a list).
    """
    device = torch.device(device)
    tokens, doc_starts = np.asarray(split.tokens), np.asarray(split.doc_starts, dtype=np.int64)
    full, rest = divmod(scored, length)
    sums = torch.zeros(length, dtype=torch.float64)
    counts = torch.zeros(length, dtype=torch.float64)
    batches = [np.arange(b, min(b + batch_size, full)) * length for b in range(0, full, batch_size)]
    for starts in batches:
        losses = _window_losses(model, tokens, doc_starts, starts, length, device, autocast_dtype)
        sums += losses.sum(0)
        counts += len(starts)
    if rest:  # the last, shorter window
        starts = np.array([full * length])
        losses = _window_losses(model, tokens, doc_starts, starts, rest, device, autocast_dtype)
        sums[:rest] += losses[0]
        counts[:rest] += 1
    nll = float(sums.sum() / scored)
    return {
        "length": length,
        "nll": nll,
        "perplexity": math.exp(nll),
        "tokens": int(counts.sum()),
        "windows": full + (rest > 0),
        "loss_by_position": (sums / counts).tolist(),
    }


@torch.no_grad()
def evaluate_lengths(
    model: nn.Module,
    split: TokenSplit,
    lengths: Sequence[int],
    *,
    batch_size: int,
    max_tokens: int | None = None,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> dict[int, dict[str, Any]]:
    """Perplexity of ``model`` on ``split`` at each context length, on the same scored tokens.

    Args:
        model: called as ``model(input_ids (B, T) int64, segment_ids=(B, T) int64)`` and
            returning logits ``(B, T, V)``; on ``device``. Put in eval mode, then restored.
        split: a ``selrope.data.TokenSplit`` (``tokens`` ``(N,)``, ``doc_starts`` ``(D,)``).
        lengths: context lengths L, each >= 1.
        batch_size: windows per forward pass.
        max_tokens: cap on the number of scored targets (rounded down to a multiple of max L).
        device: where the windows go.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the model under autocast; the loss is
            always computed in float32 from upcast logits.

    Returns:
        ``{L: evaluate_length's dict}`` in the order of ``lengths``.

    Raises:
        ValueError: empty or non-positive lengths, batch_size < 1, or a split too short.
    """
    if not lengths or any(not isinstance(n, int) or n < 1 for n in lengths):
        raise ValueError(f"lengths must be positive integers; got {list(lengths)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    scored = scored_target_count(len(split.tokens), max(lengths), max_tokens)
    was_training = model.training
    model.eval()
    try:
        return {
            length: evaluate_length(
                model,
                split,
                length,
                scored,
                batch_size=batch_size,
                device=device,
                autocast_dtype=autocast_dtype,
            )
            for length in lengths
        }
    finally:
        model.train(was_training)
