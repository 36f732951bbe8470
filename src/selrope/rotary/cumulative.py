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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive prefix sum over time of angle increments, continuing from a carried phase.

    ``phase_t = initial_phase + sum_{s <= t} increments_s`` (float64), then
    ``theta_t = frequencies * phase_t`` via ``wrap_angles``.

    Args:
        increments: ``(B, T, H, R)`` float32 or float64 per-token angle increments, T >= 1.
        frequencies: ``(R,)`` per-pair frequencies applied after the sum, or None for 1.
        initial_phase: ``(B, H, R)`` float64 raw phase carried from the previous chunk; None = 0.

    Returns:
        ``(theta, final_phase)``: theta ``(B, T, H, R)`` in increments' dtype (float32 reduced mod
        2 pi, or float64), final_phase ``(B, H, R)`` float64, the raw (un-scaled) phase after the
        last token, to pass as ``initial_phase`` of the next chunk.
    """
    phase = torch.cumsum(increments.to(torch.float64), dim=1)
    if initial_phase is not None:
        phase = phase + initial_phase.unsqueeze(1)
    return wrap_angles(phase, frequencies, increments.dtype), phase[:, -1]
