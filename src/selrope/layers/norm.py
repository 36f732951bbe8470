"""The block norms: RMSNorm (computed in float32 and cast back to the input dtype) or LayerNorm."""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("rmsnorm", "layernorm")
"""The norm kinds ``LMConfig.norm`` names (``build_norm``)."""


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last dimension with a learned scale.

    Args:
        dim: size of the last dimension.
        eps: added to the mean square before the square root.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(..., dim)`` -> ``(..., dim)`` in x's dtype."""
        x32 = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * self.weight.to(normed.dtype)).to(x.dtype)


def build_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """``"rmsnorm"`` (:class:`RMSNorm`) or ``"layernorm"`` (torch's ``nn.LayerNorm`` with scale
    and bias, GPT-2's; its kernels accumulate in float32 for 16-bit inputs, and autocast runs it
    in float32) over the last dimension ``dim``."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}; got {kind!r}")
