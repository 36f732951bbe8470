"""Packed documents: segment ids, where documents start, and positions inside them.

Several documents packed into one row of a batch are told apart by ``segment_ids`` ``(B, T)``
(integers): a new document starts at token ``t > 0`` wherever its id differs from the id of token
``t - 1`` (token 0 always starts one). Every op and embedding that takes ``segment_ids`` processes
each document as if it were alone, except that the first document of each row continues from the
state / cache / offset it is given (None starts it fresh), so streaming is unchanged.
``cu_seqlens`` (flash-attn's varlen convention) describes the documents of a single row.
"""

from __future__ import annotations

import torch


def check_segment_ids(segment_ids: torch.Tensor, batch: int, length: int) -> None:
    """Raise a ``ValueError`` naming ``segment_ids`` unless it is an integer ``(batch, length)``."""
    if (
        not torch.is_tensor(segment_ids)
        or segment_ids.dtype.is_floating_point
        or segment_ids.dtype.is_complex
        or segment_ids.dtype == torch.bool
        or tuple(segment_ids.shape) != (batch, length)
    ):
        got = (
            f"{segment_ids.dtype} {tuple(segment_ids.shape)}"
            if torch.is_tensor(segment_ids)
            else type(segment_ids).__name__
        )
        raise ValueError(
            f"segment_ids must be an integer tensor of shape (B, T) = ({batch}, {length}); "
            f"got {got}"
        )


def segment_ids_from_cu_seqlens(cu_seqlens: torch.Tensor, total_len: int) -> torch.Tensor:
    """Segment ids of one packed row from its document boundaries.

    Args:
        cu_seqlens: ``(N + 1,)`` integer boundaries ``[0, end_1, ..., total_len]``, strictly
            increasing: document n holds tokens ``cu_seqlens[n] .. cu_seqlens[n + 1] - 1``.
        total_len: T, the length of the packed row.

    Returns:
        ``(1, T)`` int64 ids ``0, 0, 0, 1, 1, 2, ...`` on cu_seqlens' device.
    """
    if (
        not torch.is_tensor(cu_seqlens)
        or cu_seqlens.dim() != 1
        or cu_seqlens.dtype.is_floating_point
        or cu_seqlens.dtype in (torch.bool, torch.complex64, torch.complex128)
        or cu_seqlens.numel() < 2
    ):
        got = (
            f"{cu_seqlens.dtype} {tuple(cu_seqlens.shape)}"
            if torch.is_tensor(cu_seqlens)
            else type(cu_seqlens).__name__
        )
        raise ValueError(f"cu_seqlens must be a 1-D integer tensor [0, ..., T]; got {got}")
    bounds = cu_seqlens.to(torch.int64)
    if (
        int(bounds[0]) != 0
        or int(bounds[-1]) != total_len
        or not bool((bounds[1:] > bounds[:-1]).all())
    ):
        raise ValueError(
            f"cu_seqlens must start at 0, increase strictly and end at T = {total_len}; "
            f"got {bounds.tolist()}"
        )
    lengths = bounds[1:] - bounds[:-1]
    ids = torch.arange(lengths.numel(), device=bounds.device)
    return ids.repeat_interleave(lengths)[None]


def segment_starts(segment_ids: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool, True where a token starts a document (t == 0 or a new id)."""
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return starts


def document_resets(segment_ids: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool, True where a state must restart from zero: starts at t > 0 only (the
    first document of a row continues from the state it is given)."""
    resets = segment_starts(segment_ids)
    resets[:, 0] = False
    return resets


def document_index(segment_ids: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` int64, the number of each token's document within its row (0, 0, 1, 1, 1, ...)."""
    return document_resets(segment_ids).cumsum(dim=1)


def positions_in_segment(
    segment_ids: torch.Tensor, offset: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Position of each token within its document.

    Args:
        segment_ids: ``(B, T)`` integer segment ids.
        offset: ``(B,)`` int64 (or an int) position of the first token of each row: the first
            document continues from it; None means 0. Later documents always start at 0.

    Returns:
        ``(B, T)`` int64 positions, 0 at every document start (but the first's, with an offset).
    """
    steps = torch.arange(segment_ids.shape[1], device=segment_ids.device).expand_as(segment_ids)
    start_index = torch.where(segment_starts(segment_ids), steps, 0).cummax(dim=1).values
    positions = steps - start_index
    if offset is None:
        return positions
    offset = torch.as_tensor(offset, dtype=torch.int64, device=segment_ids.device)
    in_first = document_index(segment_ids) == 0
    return torch.where(in_first, positions + offset.reshape(-1, 1), positions)
