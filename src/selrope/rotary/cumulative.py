"""The shared angle accumulation: cumulative sum over time, frequency scaling, reduction mod 2 pi.

Why care: an angle is a sum of up to T increments (T = 65,536 and more at inference). A float32
number near 65,536 has a spacing (ulp) of 0.0078 rad, so a float32 running sum over the whole
sequence, or even a float32 copy of an exact position, is off by up to 0.004 rad per step of
rounding and drifts with T.

How, without a float64 copy of the whole (B, T, H, R) tensor: time is cut into blocks of
``BLOCK`` tokens. Inside a block the increments are summed in float32 (at most ``BLOCK`` O(1)
terms, so the local sum is exact to about 1e-5 whatever T is). Each block's total is summed in
float64 and carried between blocks in float64 (a tensor ``BLOCK`` times smaller); the carry is
multiplied by the frequency and reduced mod 2 pi in float64, cast to float32, and only then added
to the frequency times the local sum, and the result reduced mod 2 pi again in float32. The
error of an angle is thus bounded by the block, not by T (tested at T = 10^6). The backward pass
is the reverse cumulative sum computed the same way (float32 within blocks, float64 carries).
Float64 increments take the same blockwise path in float64, without any reduction (float64 in,
float64 out: nothing to gain, and it keeps gradients smooth for gradcheck).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selrope.ops.segments import document_index, positions_in_segment

TWO_PI = 2.0 * math.pi
BLOCK = 64  # tokens summed in float32 before a float64 carry


def wrap_angles(
    phase: torch.Tensor, frequencies: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """``theta = frequencies * phase`` in float64, reduced to [0, 2 pi) unless dtype is float64.

    Args:
        phase: ``(..., R)`` or ``(..., 1)`` float64 raw phase (sum of increments, or position).
        frequencies: ``(R,)`` per-pair frequencies, or None for 1.
        dtype: float32 or float64, the dtype of the returned angles.

    Returns:
        ``(..., R)`` angles in ``dtype``.
    """
    theta = phase if frequencies is None else phase * frequencies.to(torch.float64)
    if dtype != torch.float64:
        theta = torch.remainder(theta, TWO_PI)
    return theta.to(dtype)


def cumulative_angles(
    increments: torch.Tensor,
    frequencies: torch.Tensor | None = None,
    initial_phase: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive prefix sum over time of angle increments, continuing from a carried phase.

    ``phase_t = initial_phase + sum_{s <= t} increments_s`` (exact to float32 round-off of a
    ``BLOCK``-token sum, whatever T), then ``theta_t = frequencies * phase_t`` reduced mod 2 pi
    (float32) or not (float64). With packed documents the sum restarts at every document start
    after the first: ``phase_t = sum_{start <= s <= t}``, and only the first document adds
    ``initial_phase``. Gradients flow to increments, frequencies and initial_phase.

    Args:
        increments: ``(B, T, H, R)`` float32 or float64 per-token angle increments, T >= 1.
        frequencies: ``(R,)`` per-pair frequencies applied after the sum, or None for 1.
        initial_phase: ``(B, H, R)`` float64 raw phase carried from the previous chunk; None = 0.
        segment_ids: ``(B, T)`` integer ids of packed documents (``selrope.ops.segments``), or
            None (one document per row).

    Returns:
        ``(theta, final_phase)``: theta ``(B, T, H, R)`` in increments' dtype (float32 reduced mod
        2 pi, or float64), final_phase ``(B, H, R)`` float64, the raw (un-scaled) phase after the
        last token, to pass as ``initial_phase`` of the next chunk.
    """
    if segment_ids is not None:
        return _cumulative_angles_with_restarts(increments, frequencies, initial_phase, segment_ids)
    return _BlockwiseCumulativeAngles.apply(increments, frequencies, initial_phase)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """``(B, T, H, R) -> (B, N, block, H, R)``, zero-padded at the end to ``N * block`` tokens."""
    B, T, H, R = x.shape
    pad = -T % block
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
    return x.contiguous().view(B, (T + pad) // block, block, H, R)


def _exclusive_block_carries(
    block_totals: torch.Tensor, initial_phase: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 phase before each block ``(B, N, H, R)`` and after the last one ``(B, H, R)``."""
    inclusive = block_totals.cumsum(1)
    if initial_phase is not None:
        inclusive = inclusive + initial_phase.unsqueeze(1)
    first = inclusive.new_zeros(()) if initial_phase is None else initial_phase.unsqueeze(1)
    before = torch.cat([first.expand_as(inclusive[:, :1]), inclusive[:, :-1]], dim=1)
    return before, inclusive[:, -1]


class _BlockwiseCumulativeAngles(torch.autograd.Function):
    """``cumulative_angles`` without segments, forward and backward blockwise (module docstring).

    Saved for backward: the frequencies, and only when they need a gradient the increments and
    the small float64 block carries. The gradient of the angles to the increments is the reverse
    cumulative sum of ``grad_theta * frequencies`` (the reduction mod 2 pi has derivative 1); it
    needs nothing from forward.
    """

    @staticmethod
    def forward(ctx, increments, frequencies, initial_phase):
        B, T, H, R = increments.shape
        dtype = increments.dtype
        block = min(BLOCK, T)
        blocks = _blocks(increments, block)
        before, final_phase = _exclusive_block_carries(
            blocks.sum(2, dtype=torch.float64), initial_phase
        )
        theta = blocks.cumsum(2)  # local sums: the only (B, T, H, R) tensor made here
        if dtype == torch.float64:
            theta.add_(before.unsqueeze(2))
            if frequencies is not None:
                theta.mul_(frequencies.to(dtype))
        else:
            base = wrap_angles(before, frequencies, dtype).unsqueeze(2)
            if frequencies is not None:
                theta.mul_(frequencies.to(dtype))
            theta.add_(base).remainder_(TWO_PI)
        ctx.block, ctx.shape, ctx.dtype = block, (B, T, H, R), dtype
        frequency_grad = ctx.needs_input_grad[1]
        ctx.save_for_backward(
            frequencies,
            before if frequency_grad else None,
            increments if frequency_grad else None,
        )
        ctx.set_materialize_grads(False)
        return theta.view(B, -1, H, R)[:, :T], final_phase

    @staticmethod
    def backward(ctx, grad_theta, grad_final):
        frequencies, before, increments = ctx.saved_tensors
        block, (B, T, H, R) = ctx.block, ctx.shape
        grad_increments = grad_frequencies = grad_initial = None
        if grad_theta is None:
            if grad_final is None:
                return None, None, None
            # Only the final phase is used: every increment adds to it once.
            grad_initial = grad_final if ctx.needs_input_grad[2] else None
            if ctx.needs_input_grad[0]:
                grad_increments = grad_final.to(ctx.dtype).unsqueeze(1).expand(B, T, H, R)
            return grad_increments, None, grad_initial
        dtype = grad_theta.dtype
        unscaled = _blocks(grad_theta, block)
        scaled = unscaled if frequencies is None else unscaled * frequencies.to(dtype)
        local = scaled.cumsum(2)
        totals = local[:, :, -1].to(torch.float64)  # (B, N, H, R)
        # The float64 gradient each block gets from itself and every later token (and from the
        # final phase, which every increment feeds once).
        suffix = totals.flip(1).cumsum(1).flip(1)
        if grad_final is not None:
            suffix = suffix + grad_final.unsqueeze(1)
        if ctx.needs_input_grad[2]:
            grad_initial = suffix[:, 0]
        if ctx.needs_input_grad[0]:
            # sum_{s >= t} = suffix of t's block - (local inclusive sum - own term) before t
            grad = local.sub_(scaled).neg_().add_(suffix.to(dtype).unsqueeze(2))
            grad_increments = grad.view(B, -1, H, R)[:, :T]
        if ctx.needs_input_grad[1]:
            # d theta / d frequency = the raw phase = carry before the block + local sum
            local_phase = _blocks(increments, block).cumsum(2)
            within = (unscaled * local_phase).sum((0, 1, 2, 3), dtype=torch.float64)
            carried = (unscaled.sum(2, dtype=torch.float64) * before).sum((0, 1, 2))
            grad_frequencies = (within + carried).to(frequencies.dtype)
        return grad_increments, grad_frequencies, grad_initial


def _cumulative_angles_with_restarts(
    increments: torch.Tensor,
    frequencies: torch.Tensor | None,
    initial_phase: torch.Tensor | None,
    segment_ids: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``cumulative_angles`` with packed documents, blockwise (plain autograd).

    With ``c`` the float32 inclusive sum inside each block and ``e = c - increments`` the
    exclusive one, a token t of block b whose document starts at s gets
    ``phase_t = c_t - e_s`` when s is inside block b, and ``c_t + D_b`` when its document began
    before the block (or is the row's first document, which continues from ``initial_phase``):
    ``D_b`` the float64 phase of that document before block b (from float64 block totals and
    the float64 sum of its first block from s on), one value per block because only one
    document can span a block's start. Only (B, N, H, R) tensors are float64; the (B, T, H, R)
    work is float32 (float64 for float64 increments).
    """
    B, T, H, R = increments.shape
    dtype = increments.dtype
    block = min(BLOCK, T)
    blocks = _blocks(increments, block)
    N = blocks.shape[1]
    pad = N * block - T
    steps = torch.arange(T, device=segment_ids.device)
    doc_start = steps - positions_in_segment(segment_ids)  # (B, T) first token of t's document
    first_document = document_index(segment_ids) == 0
    if pad:  # padding continues the row's last document
        doc_start = torch.cat([doc_start, doc_start[:, -1:].expand(B, pad)], 1)
        first_document = torch.cat([first_document, first_document[:, -1:].expand(B, pad)], 1)
    doc_start = doc_start.view(B, N, block)
    first_document = first_document.view(B, N, block)
    block_start = (torch.arange(N, device=segment_ids.device) * block)[None, :, None]

    local = blocks.cumsum(2)
    exclusive = local - blocks
    starts_inside = doc_start >= block_start  # (B, N, L)
    index = (doc_start - block_start).clamp(min=0)[..., None, None].expand_as(exclusive)
    local = local - torch.where(starts_inside[..., None, None], exclusive.gather(2, index), 0.0)
    carried = (~starts_inside | first_document)[..., None, None]  # (B, N, L, 1, 1)

    before, _ = _exclusive_block_carries(blocks.sum(2, dtype=torch.float64), initial_phase)
    # tails[b]: float64 sum of block b from the start of its last token's document.
    last_start = (doc_start[:, :, -1:] - block_start).clamp(min=0)  # (B, N, 1)
    in_tail = torch.arange(block, device=segment_ids.device)[None, None, :] >= last_start
    tails = torch.where(in_tail[..., None, None], blocks, 0.0).sum(2, dtype=torch.float64)
    # The document spanning block b's start began in block j < b: its phase before block b is
    # tails[j] + the block totals of j+1 .. b-1; the row's first document adds initial_phase.
    expand = (B, N, H, R)
    start_block = doc_start[:, :, 0] // block  # (B, N)
    after_start = (start_block + 1).clamp(max=N - 1)[..., None, None].expand(expand)
    spanning = (
        before
        - before.gather(1, after_start)
        + tails.gather(1, start_block[..., None, None].expand(expand))
    )
    offset = torch.where(first_document[:, :, 0, None, None], before, spanning)  # (B, N, H, R)

    final_phase = tails[:, -1] + torch.where(carried[:, -1, -1], offset[:, -1], 0.0)
    if dtype == torch.float64:
        phase = local + torch.where(carried, offset.unsqueeze(2), 0.0)
        theta = phase if frequencies is None else phase * frequencies.to(dtype)
    else:
        base = wrap_angles(offset, frequencies, dtype).unsqueeze(2)
        theta = local if frequencies is None else local * frequencies.to(dtype)
        theta = torch.remainder(theta + torch.where(carried, base, 0.0), TWO_PI)
    return theta.view(B, N * block, H, R)[:, :T], final_phase
