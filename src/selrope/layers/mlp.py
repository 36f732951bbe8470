"""SwiGLU feed-forward block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """``W_down(silu(W_gate x) * W_up x)``, no biases.

    Args:
        model_dim: input and output width d.
        hidden_dim: inner width.
    """

    def __init__(self, model_dim: int, hidden_dim: int):
        super().__init__()
        self.gate_proj = nn.Linear(model_dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(model_dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, model_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, T, d)`` -> ``(B, T, d)``."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
