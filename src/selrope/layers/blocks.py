"""Pieces shared by the linear-recurrent layers: convolved projections and the gated output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from selrope.layers.norm import RMSNorm
from selrope.ops import ShortConvolution


class ConvolvedProjection(nn.Module):
    """``Linear(d -> out)`` followed by an optional short causal conv (SiLU) with a cache.

    Args:
        in_dim: input width d.
        out_dim: output width.
        use_short_conv: apply a depthwise causal conv (kernel ``conv_size``, SiLU) after the
            projection; its cache makes streaming exact.
        conv_size: conv kernel width.
        silu_without_conv: apply SiLU when the conv is off (Gated DeltaNet's convention).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        use_short_conv: bool,
        conv_size: int = 4,
        silu_without_conv: bool = False,
    ):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=False)
        self.conv = ShortConvolution(out_dim, conv_size, "silu") if use_short_conv else None
        self.silu_without_conv = silu_without_conv

    def forward(
        self, x: torch.Tensor, cache: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x ``(B, T, d)`` -> ``(y (B, T, out_dim), conv cache (B, out_dim, W-1) or None)``."""
        y = self.proj(x)
        if self.conv is not None:
            return self.conv(y, cache)
        return (F.silu(y) if self.silu_without_conv else y), None


class GatedOutput(nn.Module):
    """Per-head RMSNorm of the mixer output, times a SiLU gate ``W_g x``, then ``W_o``.

    Args:
        model_dim: d.
        num_heads: H.
        head_v_dim: value width per head.
        norm_eps: RMSNorm epsilon.
    """

    def __init__(self, model_dim: int, num_heads: int, head_v_dim: int, norm_eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm = RMSNorm(head_v_dim, eps=norm_eps)
        self.gate_proj = nn.Linear(model_dim, num_heads * head_v_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_v_dim, model_dim, bias=False)

    def forward(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """o ``(B, T, H, V)``, x ``(B, T, d)`` -> ``(B, T, d)``."""
        gate = F.silu(self.gate_proj(x))
        return self.o_proj(self.norm(o).flatten(2) * gate)
