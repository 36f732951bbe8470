"""The shared angle accumulation: cumulative sum over time, frequency scaling, reduction mod 2 pi.

Why float64 here: an angle is a sum of up to T increments (T = 65,536 and more at inference). A
float32 number near 65,536 has a spacing (ulp) of 0.0078 rad, so a float32 running sum, or even a
float32 copy of an exact position, is off by up to 0.004 rad per step of rounding and drifts with
T. So every phase is summed and carried in float64 (ulp 1.5e-11 at 65,536), multiplied by its
frequency in float64, reduced modulo 2 pi in float64, and only then cast to float32 for cos/sin:
the float32 angle in [0, 2 pi) is then exact to about 2.4e-7 rad whatever T is. The increments
themselves stay float32 (they are O(1)); only this (B, T, H, R) sum is float64. Float64 inputs
skip the reduction (no precision to gain, and it keeps gradients smooth for gradcheck).
"""

from __future__ import annotations

import math

import torch

from selrope.ops.segments import document_index, positions_in_segment

TWO_PI = 2.0 * math.pi


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

    ``phase_t = initial_phase + sum_{s <= t} increments_s`` (float64), then
    ``theta_t = frequencies * phase_t`` via ``wrap_angles``. With packed documents the sum
    restarts at every document start after the first: ``phase_t = sum_{start <= s <= t}``, and
    only the first document adds ``initial_phase``.

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
    phase = torch.cumsum(increments.to(torch.float64), dim=1)
    if segment_ids is not None:
        phase = _restart_at_documents(phase, increments, segment_ids)
    if initial_phase is not None:
        if segment_ids is not None:
            in_first = (document_index(segment_ids) == 0)[:, :, None, None]
            initial_phase = torch.where(in_first, initial_phase.unsqueeze(1), 0.0)
        else:
            initial_phase = initial_phase.unsqueeze(1)
        phase = phase + initial_phase
    return wrap_angles(phase, frequencies, increments.dtype), phase[:, -1]


def _restart_at_documents(
    phase: torch.Tensor, increments: torch.Tensor, segment_ids: torch.Tensor
) -> torch.Tensor:
    """Subtract from the running sum ``phase`` ``(B, T, H, R)`` (float64) what it held before each
    token's document started, so that every document sums from its own start."""
    steps = torch.arange(phase.shape[1], device=phase.device)
    start = (steps - positions_in_segment(segment_ids))[:, :, None, None].expand_as(phase)
    before = phase - increments.to(torch.float64)  # exclusive sum: the phase before token t
    return phase - before.gather(1, start)
