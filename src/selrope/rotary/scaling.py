"""RoPE context extension applied at evaluation time: position interpolation and YaRN.

Pure functions on RoPE's ``(D/2,)`` frequency vector (float32 in and out, float64 inside), so a
model trained with plain RoPE can be rebuilt with scaled frequencies and load the same weights.

- Linear (position interpolation, Chen et al. 2023): every frequency divided by ``factor``, so
  position ``factor * t`` is rotated as position ``t`` was in training.
- YaRN (Peng et al. 2023; the equations of Hugging Face's ``_compute_yarn_parameters``): pairs
  that turn more than ``beta_fast`` times over the original context keep their frequency, pairs
  that turn fewer than ``beta_slow`` times are interpolated (divided by ``factor``), with a linear
  ramp in pair index between; q and k are both multiplied by ``0.1 ln(factor) + 1``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch


def linear_frequencies(frequencies: torch.Tensor, factor: float) -> torch.Tensor:
    """Position interpolation: every frequency divided by ``factor``.

    Args:
        frequencies: ``(D/2,)`` float32 RoPE frequencies.
        factor: >= 1, the context extension factor.

    Returns:
        ``(D/2,)`` float32 (computed in float64).
    """
    return (frequencies.double() / factor).float()


def yarn_correction_pair(rotations: float, head_dim: int, base: float, max_position: int) -> float:
    """The (fractional) pair index i whose RoPE frequency ``base^(-2i/D)`` turns ``rotations``
    times over ``max_position`` tokens: ``D ln(max_position / (2 pi rotations)) / (2 ln base)``.
    """
    return head_dim * math.log(max_position / (2 * math.pi * rotations)) / (2 * math.log(base))


def yarn_ramp(
    head_dim: int, base: float, original_max_position: int, beta_fast: float, beta_slow: float
) -> torch.Tensor:
    """YaRN's interpolation weight per pair: 0 keeps the frequency, 1 divides it by the factor.

    The ramp runs linearly in pair index from ``floor(pair(beta_fast))`` (weight 0) to
    ``ceil(pair(beta_slow))`` (weight 1), both clamped to ``[0, D - 1]`` (``yarn_correction_pair``).

    Args:
        head_dim: D (even).
        base: RoPE base, > 1.
        original_max_position: the context length the model was trained on.
        beta_fast: pairs turning at least this often over that context are kept.
        beta_slow: pairs turning at most this often are interpolated.

    Returns:
        ``(D/2,)`` float64 in [0, 1].
    """
    low = max(math.floor(yarn_correction_pair(beta_fast, head_dim, base, original_max_position)), 0)
    high = min(
        math.ceil(yarn_correction_pair(beta_slow, head_dim, base, original_max_position)),
        head_dim - 1,
    )
    if high == low:  # a step instead of a ramp, as in the reference implementation
        high = low + 0.001
    pairs = torch.arange(head_dim // 2, dtype=torch.float64)
    return ((pairs - low) / (high - low)).clamp(0.0, 1.0)


def yarn_frequencies(
    frequencies: torch.Tensor,
    base: float,
    factor: float,
    original_max_position: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
) -> torch.Tensor:
    """YaRN frequencies: ``(1 - r_i) w_i + r_i w_i / factor`` with r the ``yarn_ramp``.

    Args:
        frequencies: ``(D/2,)`` float32 RoPE frequencies ``base^(-2i/D)``.
        base, original_max_position, beta_fast, beta_slow: see ``yarn_ramp``.
        factor: >= 1, the context extension factor.

    Returns:
        ``(D/2,)`` float32 (computed in float64).
    """
    head_dim = 2 * frequencies.shape[0]
    ramp = yarn_ramp(head_dim, base, original_max_position, beta_fast, beta_slow)
    values = frequencies.double()
    return ((1.0 - ramp) * values + ramp * values / factor).float()


def yarn_attention_factor(factor: float) -> float:
    """YaRN's temperature ``0.1 ln(factor) + 1`` (1 for factor <= 1), multiplying q and k."""
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def scale_frequencies(
    frequencies: torch.Tensor, base: float, scaling: Mapping[str, Any] | None
) -> tuple[torch.Tensor, float]:
    """Apply a validated ``RoPEConfig.scaling`` dict to RoPE's frequencies.

    Args:
        frequencies: ``(D/2,)`` float32 RoPE frequencies ``base^(-2i/D)``.
        base: their RoPE base.
        scaling: None (unchanged), ``{"kind": "linear", "factor": s}`` or
            ``{"kind": "yarn", "factor": s, "original_max_position": L, "beta_fast": a,
            "beta_slow": b}``.

    Returns:
        ``(frequencies (D/2,) float32, attention_factor)``, the factor multiplying q and k.
    """
    if scaling is None:
        return frequencies, 1.0
    if scaling["kind"] == "linear":
        return linear_frequencies(frequencies, scaling["factor"]), 1.0
    if scaling["kind"] == "yarn":
        scaled = yarn_frequencies(
            frequencies,
            base,
            scaling["factor"],
            scaling["original_max_position"],
            scaling["beta_fast"],
            scaling["beta_slow"],
        )
        return scaled, yarn_attention_factor(scaling["factor"])
    raise ValueError(f"scaling kind must be 'linear' or 'yarn'; got {scaling['kind']!r}")
