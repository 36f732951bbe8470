"""Content-independent position encodings: NoPE (none) and RoPE (closed-form angles)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from selrope.ops.segments import positions_in_segment
from selrope.rotary.base import RotaryEmbedding, check_qkx, check_state_tensor
from selrope.rotary.config import RoPEConfig
from selrope.rotary.cumulative import wrap_angles
from selrope.rotary.frequencies import Frequencies, rope_frequencies
from selrope.rotary.fused import Backend, rope_rotary
from selrope.rotary.scaling import scale_frequencies


class NoPE(nn.Module):
    """No position encoding: ``forward(q, k, x, state=None) -> (q, k, None)``."""

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        x: torch.Tensor,
        state: None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Returns q and k unchanged (after the same shape checks as the other embeddings);
        ``segment_ids`` (packed documents) changes nothing without positions."""
        check_qkx(q, k, x)
        if state is not None:
            raise ValueError(f"state must be None for NoPE; got {type(state).__name__}")
        return q, k, None


class RoPEState(NamedTuple):
    """RoPE's streaming state.

    offset: ``(B,)`` int64, the position of the next token of each sequence.
    """

    offset: torch.Tensor


class RoPE(RotaryEmbedding):
    """Rotary position embedding: ``theta[t, i] = (offset + t) * base^(-2i/D)``.

    Positions are exact int64 counts; ``position * frequency`` is formed in float64 and reduced
    modulo 2 pi before the float32 cast (see ``cumulative.py``), so angles stay accurate at any
    length. Angles have shape ``(B, T, 1, D/2)`` (shared by all heads).

    Args:
        head_dim: D (even).
        base: 10,000 classic; 500,000 in the Selective RoPE papers' baselines.
        interleaved: pair channels (2i, 2i+1) instead of (i, i + D/2).
        scaling: None, or a context extension applied to the frequencies (and, for YaRN, a
            factor multiplying q and k); the dict of ``RoPEConfig.scaling``, see ``scaling.py``.
    """

    backend: Backend | None = None  # None: chosen per call (``rope_rotary``)

    def __init__(
        self,
        head_dim: int,
        base: float = 10000.0,
        interleaved: bool = False,
        scaling: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.head_dim = head_dim
        self.interleaved = interleaved
        scaling = RoPEConfig(base=base, interleaved=interleaved, scaling=scaling).scaling
        frequencies, self.attention_factor = scale_frequencies(
            rope_frequencies(head_dim, base), base, scaling
        )
        self.frequencies = Frequencies(frequencies)

    def rotate(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        x: torch.Tensor,
        state: RoPEState | None,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, RoPEState]:
        """As ``RotaryEmbedding.rotate`` (without packed documents through ``rope_rotary``: the
        fused kernel on CUDA with Triton), then q and k ``(B, T, H, D)`` times YaRN's attention
        factor when it is not 1."""
        if segment_ids is None:
            offset = self._offset(x, state)
            q_rot, k_rot = rope_rotary(
                q, k, self.frequencies(), offset, self.interleaved, self.backend
            )
            new_state = RoPEState(offset + q.shape[1])
        else:
            q_rot, k_rot, new_state = super().rotate(q, k, x, state, dtype, segment_ids)
        if self.attention_factor == 1.0:
            return q_rot, k_rot, new_state
        return q_rot * self.attention_factor, k_rot * self.attention_factor, new_state

    def _offset(self, x: torch.Tensor, state: RoPEState | None) -> torch.Tensor:
        """``(B,)`` int64 position of each row's first token (0 without a state)."""
        B = x.shape[0]
        if state is None:
            return torch.zeros(B, dtype=torch.int64, device=x.device)
        check_state_tensor("state.offset", getattr(state, "offset", None), (B,), torch.int64)
        return state.offset

    def angles(
        self,
        x: torch.Tensor,
        state: RoPEState | None,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RoPEState]:
        T = x.shape[1]
        offset = self._offset(x, state)
        if segment_ids is None:
            positions = offset[:, None] + torch.arange(T, device=x.device)  # (B, T) int64, exact
        else:  # positions restart at every document start after the first
            positions = positions_in_segment(segment_ids, offset)
        phase = positions.to(torch.float64)[:, :, None, None]  # (B, T, 1, 1)
        theta = wrap_angles(phase, self.frequencies(), dtype)
        return theta, RoPEState(positions[:, -1] + 1)
