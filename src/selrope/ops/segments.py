"""Packed documents: segment ids, where documents start, and positions inside them.

Several documents packed into one row of a batch are told apart by ``segment_ids`` ``(B, T)``
(integers): a new document starts at token ``t > 0`` wherever its id differs from the id of token
``t - 1`` (token 0 always starts one). Every op and embedding that takes ``segment_ids`` processes
each document as if it were alone, except that the first document of each row continues from the
state / cache / offset it is given (None starts it fresh), so streaming is unchanged.
``cu_seqlens`` (flash-attn's varlen convention) describes the documents of a single row, and a
Hugging Face ``attention_mask`` a padded batch: each run of pads becomes a document of its own
(``segment_ids_from_attention_mask``), so padding needs nothing that packing does not do.
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


def segment_ids_from_attention_mask(
    attention_mask: torch.Tensor, segment_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Segment ids of a padded batch: every run of pads is a document of its own.

    A Hugging Face ``attention_mask`` (1 for a real token, 0 for a pad) becomes documents, so
    that padding is packing: with left padding the real tokens start a new document after the
    pads (positions, phases, states and conv inputs restart exactly as for the unpadded
    prompt), with right padding the pads form a document after them that nothing reads. The
    real tokens of one document must be contiguous (pads on the left and / or right of it);
    a pad between two real tokens of one document is refused, since it would split them.

    Args:
        attention_mask: ``(B, T)`` 0/1 (any integer or bool dtype).
        segment_ids: ``(B, T)`` checked packed-document ids of the same tokens, or None (one
            document per row).

    Returns:
        ``(B, T)`` int64 ids: a new document wherever ``segment_ids`` or the mask changes.

    Raises:
        ValueError: the mask is not ``(B, T)`` 0/1, or it has pads inside a document.
    """
    B, T = attention_mask.shape if attention_mask.dim() == 2 else (-1, -1)
    if (
        attention_mask.dim() != 2
        or attention_mask.dtype.is_floating_point
        or attention_mask.dtype.is_complex
        or (segment_ids is not None and tuple(segment_ids.shape) != (B, T))
        or not bool(((attention_mask == 0) | (attention_mask == 1)).all())
    ):
        raise ValueError(
            f"attention_mask must be a (B, T) tensor of 0/1 integers (1: a real token) matching "
            f"input_ids; got {attention_mask.dtype} {tuple(attention_mask.shape)}"
        )
    real = attention_mask.bool()
    starts = segment_starts(
        torch.zeros_like(real, dtype=torch.int64) if segment_ids is None else segment_ids
    )
    real_starts = real & (starts | torch.cat([real.new_ones(B, 1), ~real[:, :-1]], dim=1))
    # Real runs per document: at most one.
    document = starts.cumsum(dim=1) - 1
    runs = torch.zeros(B, T, dtype=torch.int64, device=real.device)
    runs.scatter_add_(1, document, real_starts.to(torch.int64))
    if bool((runs > 1).any()):
        row = int((runs > 1).any(dim=1).nonzero()[0])
        raise ValueError(
            f"attention_mask has pads between real tokens of one document (row {row}); pad on "
            f"the left or the right only (pads between packed documents need segment_ids)"
        )
    changes = starts | torch.cat([real.new_zeros(B, 1), real[:, 1:] != real[:, :-1]], dim=1)
    return changes.cumsum(dim=1) - 1
