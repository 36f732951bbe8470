"""The feed-forward sublayers: SwiGLU (LLaMA's, fla's) or a GELU MLP with biases (GPT-2's)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MLPS = ("swiglu", "gelu")
"""The MLP kinds ``LMConfig.mlp`` names (``build_mlp``)."""


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


class GELUMLP(nn.Module):
    """GPT-2's MLP: ``W_down gelu(W_up x + b_up) + b_down``, GELU in its tanh form (GPT-2's
    ``gelu_new``).

    Args:
        model_dim: input and output width d.
        hidden_dim: inner width (GPT-2: 4 d).
    """

    def __init__(self, model_dim: int, hidden_dim: int):
        super().__init__()
        self.up_proj = nn.Linear(model_dim, hidden_dim)
        self.down_proj = nn.Linear(hidden_dim, model_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, T, d)`` -> ``(B, T, d)``."""
        return self.down_proj(F.gelu(self.up_proj(x), approximate="tanh"))


def build_mlp(kind: str, model_dim: int, hidden_dim: int) -> nn.Module:
    """``"swiglu"`` (:class:`SwiGLU`) or ``"gelu"`` (:class:`GELUMLP`) of inner width
    ``hidden_dim``."""
    if kind == "swiglu":
        return SwiGLU(model_dim, hidden_dim)
    if kind == "gelu":
        return GELUMLP(model_dim, hidden_dim)
    raise ValueError(f"mlp must be one of {MLPS}; got {kind!r}")
