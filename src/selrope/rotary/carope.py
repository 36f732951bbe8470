"""CARoPE (arXiv 2507.23083): RoPE whose per-head frequency base depends on the token."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from selrope.common import check_even_head_dim
from selrope.rotary.base import CastLinear, CumulativeRotaryEmbedding, check_state_tensor


class CARoPEState(NamedTuple):
    """CARoPE's streaming state.

    phase: ``(B, H, D/2)`` float64, the accumulated phase after the last token.
    """

    phase: torch.Tensor


def rope_init_bias(head_dim: int, base: float) -> float:
    """The per-head bias b with ``1 / (softplus(b) + 1) = base^(-2/D)``: CARoPE with W = 0 and
    this bias is exactly RoPE (about -0.927 for D = 64 and -1.787 for D = 128 at base 10,000)."""
    f_rope = base ** (-2.0 / head_dim)
    return math.log(math.expm1(1.0 / f_rope - 1.0))


class CARoPE(CumulativeRotaryEmbedding):
    """Context-aware RoPE: pair i of head h advances by ``f_t[h]^(i + pair_start)`` at token t.

    ``z = x W (+ b)`` with W ``(d, H)`` gives one scalar per token and head;
    ``f = 1 / (softplus(z) + 1)`` in (0, 1); the increment ``f^i`` is computed as
    ``exp(i * log f)`` with ``log f = -log1p(softplus(z))`` (float32, or float64 for float64 q);
    the phase is the inclusive prefix sum over tokens (``cumulative_angles``, float64 carries).

    Where x comes from is the caller's choice: each layer's own normalised input (default in
    selrope's layers) or the token embeddings shared by all layers (the paper's literal reading);
    this module reads whatever ``x`` it is given.

    Initialisation: with ``rope_init`` (default) W = 0 and the per-head bias is
    ``rope_init_bias(D, base)``, so the module is exactly RoPE(base) at step 0 (pair_start 0).
    Without it there is no bias (as in the paper's formula) and W ~ N(0, 0.02).

    Args:
        num_heads: H.
        head_dim: D (even).
        model_dim: d, the width of x.
        base: the RoPE base that ``rope_init`` reproduces.
        rope_init: add the per-head bias and initialise as RoPE.
        pair_start: 0 (pair 0 advances by exactly 1 per token) or 1 (pair i advances by f^(i+1)).
        interleaved: pair channels (2i, 2i+1) instead of (i, i + D/2).
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        model_dim: int,
        base: float = 10000.0,
        rope_init: bool = True,
        pair_start: int = 0,
        interleaved: bool = False,
    ):
        super().__init__()
        check_even_head_dim("head_dim", head_dim)
        if pair_start not in (0, 1):
            raise ValueError(f"pair_start must be one of (0, 1); got {pair_start!r}")
        self.num_heads, self.head_dim, self.model_dim = num_heads, head_dim, model_dim
        self.interleaved = interleaved
        self.pair_start = pair_start
        self.proj = CastLinear(model_dim, num_heads, bias=rope_init)
        if rope_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.constant_(self.proj.bias, rope_init_bias(head_dim, base))

    def angle_increments(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per-token increments ``f^(i + pair_start)``: x ``(B, T, d)`` -> ``(B, T, H, D/2)``."""
        log_f = -torch.log1p(F.softplus(self.proj(x.to(dtype))))  # (B, T, H)
        pairs = torch.arange(self.head_dim // 2, device=x.device, dtype=dtype)
        pair_index = pairs + self.pair_start
        return torch.exp(log_f[..., None] * pair_index)

    def phase_inputs(
        self,
        x: torch.Tensor,
        state: CARoPEState | None,
        dtype: torch.dtype,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None, torch.Tensor | None, None]:
        initial_phase = None
        if state is not None:
            shape = (x.shape[0], self.num_heads, self.head_dim // 2)
            check_state_tensor("state.phase", getattr(state, "phase", None), shape, torch.float64)
            initial_phase = state.phase
        return self.angle_increments(x, dtype), None, initial_phase, None

    def make_state(self, final_phase: torch.Tensor, rest: None) -> CARoPEState:
        return CARoPEState(final_phase)
