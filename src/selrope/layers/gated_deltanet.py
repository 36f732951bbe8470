"""Gated DeltaNet with any rotary embedding on q and k."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from selrope.layers.blocks import GatedOutput, RecurrentLayer, RecurrentOps, RotatedQKV, head_widths
from selrope.ops import chunk_gated_delta_rule, gated_delta_rule_step, recurrent_gated_delta_rule


class GatedDeltaNet(RecurrentLayer):
    """Gated delta rule: ``S_t = e^{g_t} (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``.

    q, k are rotated, then l2-normalised (a rotation keeps the norm, so the order is free);
    ``o_t = D^-1/2 S_t^T q_t``. The decay is a scalar per head, Mamba-2 style:
    ``g = -exp(A_log) * softplus(W_a x + dt_bias)`` with A ~ U(0, 16) and dt log-uniform in
    [1e-3, 0.1] at init; ``beta = sigmoid(W_b x)``. Because the decay is scalar, GDN + rotary is
    exactly a recurrence with transition ``e^{g}(I - beta k k^T) R(-angle increment)``.

    Args:
        model_dim: d.
        num_heads: H; the q/k head dim is ``expand_k * d / H``.
        rotary: rotary config for ``build_rotary``.
        expand_k, expand_v: q/k width = expand_k * d, v width = expand_v * d.
        use_short_conv: short causal convs (SiLU) on q, k, v (else a plain SiLU).
        conv_size: their kernel width.
        form: "chunk" (WY chunked form) or "recurrent" (time loop) for T > 1.
        chunk_size: chunk length of the chunked form.
        norm_eps: epsilon of the per-head output RMSNorm.
    """

    ops = RecurrentOps(gated_delta_rule_step, chunk_gated_delta_rule, recurrent_gated_delta_rule)

    def __init__(
        self,
        model_dim: int,
        num_heads: int,
        rotary: Any = None,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        use_short_conv: bool = True,
        conv_size: int = 4,
        form: str = "chunk",
        chunk_size: int = 64,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.head_k_dim, self.head_v_dim = head_widths(
            model_dim, num_heads, expand_k, expand_v, form
        )
        self.num_heads = num_heads
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
            True,
        )
        self.beta_proj = nn.Linear(model_dim, num_heads, bias=False)
        self.decay_proj = nn.Linear(model_dim, num_heads, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(num_heads).uniform_(1e-4, 16.0)))
        dt = torch.exp(torch.empty(num_heads).uniform_(math.log(1e-3), math.log(0.1))).clamp(
            min=1e-4
        )
        # dt_bias stores softplus^{-1}(dt) so that softplus(0 + dt_bias) = dt at init.
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log._no_weight_decay = True
        self.dt_bias._no_weight_decay = True
        self.output = GatedOutput(model_dim, num_heads, self.head_v_dim, norm_eps)

    def log_decay(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, T, d)`` -> g ``(B, T, H)`` (<= 0), float32 or better."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        dt = F.softplus(self.decay_proj(x).to(dtype) + self.dt_bias.to(dtype))
        return -torch.exp(self.A_log.to(dtype)) * dt

    def op_inputs(
        self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """``(q, k, v, g, beta)``: q, k l2-normalised, g and beta ``(B, T, H)``."""
        q = F.normalize(q, dim=-1, eps=1e-6)
        k = F.normalize(k, dim=-1, eps=1e-6)
        return q, k, v, self.log_decay(x), torch.sigmoid(self.beta_proj(x))
