"""Gated Linear Attention (GLA) with any rotary embedding on q and k."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selrope.layers.blocks import GatedOutput, RecurrentLayer, RecurrentOps, RotatedQKV, head_widths
from selrope.ops import chunk_gla, gla_step, recurrent_gla

DECAYS = ("learned", "none")


class GatedLinearAttention(RecurrentLayer):
    """GLA: ``S_t = Diag(alpha_t) S_{t-1} + k_t v_t^T``, ``o_t = D^-1/2 S_t^T q_t``.

    The forget gate is low rank, ``g = W_2 W_1 x + b`` (d -> ``gate_low_rank_dim`` -> key
    width), and ``log alpha = logsigmoid(g) / gate_logit_normalizer`` per key channel. The rotary
    embedding rotates q and k after the short convs; with ``tie_pair_decay`` the two channels of a
    rotation pair share one decay, which makes GLA + a rotary embedding exactly a complex diagonal
    recurrence (research notes A.5; the paper's code leaves them untied, our default too).

    Args:
        model_dim: d.
        num_heads: H.
        rotary: rotary config for ``build_rotary``.
        expand_k, expand_v: q/k width = expand_k * d, v width = expand_v * d.
        use_short_conv: short causal convs (SiLU) on q, k, v.
        conv_size: their kernel width.
        gate_low_rank_dim: rank of the forget-gate projection.
        gate_logit_normalizer: divides logsigmoid of the gate (16 in the paper).
        tie_pair_decay: share the decay of channels i and i + D/2 of each head.
        decay: "learned" (GLA) or "none" (alpha = 1: linear attention, for ablations).
        form: "chunk" (chunked-parallel) or "recurrent" (time loop) for T > 1.
        chunk_size: chunk length of the chunked form.
        norm_eps: epsilon of the per-head output RMSNorm.
    """

    ops = RecurrentOps(gla_step, chunk_gla, recurrent_gla)

    def __init__(
        self,
        model_dim: int,
        num_heads: int,
        rotary: Any = None,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        use_short_conv: bool = True,
        conv_size: int = 4,
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: float = 16.0,
        tie_pair_decay: bool = False,
        decay: str = "learned",
        form: str = "chunk",
        chunk_size: int = 64,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.head_k_dim, self.head_v_dim = head_widths(
            model_dim, num_heads, expand_k, expand_v, form
        )
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}; got {decay!r}")
        self.num_heads = num_heads
        self.gate_logit_normalizer = gate_logit_normalizer
        self.tie_pair_decay = tie_pair_decay
        self.decay = decay
        self.form = form
        self.chunk_size = chunk_size
        self.qkv = RotatedQKV(
            model_dim,
            num_heads,
            self.head_k_dim,
            self.head_v_dim,
            rotary,
            use_short_conv,
            conv_size,
        )
        key_dim = num_heads * self.head_k_dim
        gate_width = key_dim // 2 if tie_pair_decay else key_dim
        self.gate_proj = (
            nn.Sequential(
                nn.Linear(model_dim, gate_low_rank_dim, bias=False),
                nn.Linear(gate_low_rank_dim, gate_width, bias=True),
            )
            if decay == "learned"
            else None
        )
        self.output = GatedOutput(model_dim, num_heads, self.head_v_dim, norm_eps)

    def log_decay(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, T, d)`` -> log alpha ``(B, T, H, K)`` (<= 0), float32 or better."""
        B, T, _ = x.shape
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        if self.gate_proj is None:  # decay "none": alpha = 1, plain linear attention
            return x.new_zeros(B, T, self.num_heads, self.head_k_dim, dtype=dtype)
        log_alpha = F.logsigmoid(self.gate_proj(x).to(dtype)) / self.gate_logit_normalizer
        if self.tie_pair_decay:
            log_alpha = log_alpha.view(B, T, self.num_heads, self.head_k_dim // 2)
            return torch.cat([log_alpha, log_alpha], dim=-1)
        return log_alpha.view(B, T, self.num_heads, self.head_k_dim)

    def op_inputs(
        self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """``(q, k, v, g)`` with g ``(B, T, H, K)`` float32 or better (also under autocast)."""
        return q, k, v, self.log_decay(x)
