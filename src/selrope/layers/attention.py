"""Causal softmax attention with any rotary embedding and a KV cache."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from selrope.ops import attention_with_cache
from selrope.rotary import build_rotary


class AttentionCache(NamedTuple):
    """Decoding state of an :class:`Attention` layer.

    keys, values: ``(B, S, H, D)`` every past token's (already rotated) key and value.
    rotary_state: the rotary embedding's streaming state (None for NoPE).
    """

    keys: torch.Tensor
    values: torch.Tensor
    rotary_state: Any


class Attention(nn.Module):
    """Multi-head causal softmax attention (no biases), rotary applied to q and k.

    Args:
        model_dim: width d of the input and output.
        num_heads: H; the head dim is d / H.
        rotary: rotary config (dict or RotaryConfig) for ``selrope.rotary.build_rotary``.
    """

    def __init__(self, model_dim: int, num_heads: int, rotary: Any = None):
        super().__init__()
        for name, value in (("model_dim", model_dim), ("num_heads", num_heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        if model_dim % num_heads:
            raise ValueError(
                f"num_heads must divide model_dim; got model_dim={model_dim}, num_heads={num_heads}"
            )
        self.num_heads = num_heads
        self.head_dim = model_dim // num_heads
        self.q_proj = nn.Linear(model_dim, model_dim, bias=False)
        self.k_proj = nn.Linear(model_dim, model_dim, bias=False)
        self.v_proj = nn.Linear(model_dim, model_dim, bias=False)
        self.o_proj = nn.Linear(model_dim, model_dim, bias=False)
        self.rotary = build_rotary(
            rotary or {"type": "nope"},
            num_heads=num_heads,
            head_dim=self.head_dim,
            model_dim=model_dim,
        )

    def rotated_qkv(
        self,
        x: torch.Tensor,
        rotary_state: Any,
        rotary_input: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any]:
        """x ``(B, T, d)`` -> ``(q, k, v, new rotary state)``: q, k ``(B, T, H, D)`` rotated by
        the rotary embedding (reading ``rotary_input``, default x, and continuing
        ``rotary_state``), v ``(B, T, H, D)``; ``segment_ids`` ``(B, T)`` restart the angles at
        every document."""
        B, T, _ = x.shape
        shape = (B, T, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape)
        k = self.k_proj(x).view(shape)
        v = self.v_proj(x).view(shape)
        q, k, rotary_state = self.rotary(
            q, k, x if rotary_input is None else rotary_input, rotary_state, segment_ids
        )
        return q, k, v, rotary_state

    def forward(
        self,
        x: torch.Tensor,
        cache: AttentionCache | None = None,
        rotary_input: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, AttentionCache]:
        """x ``(B, T, d)`` (normalised block input) -> ``(y (B, T, d), new cache)``.

        ``rotary_input`` ``(B, T, d)`` is what the rotary embedding reads (default: x);
        ``segment_ids`` ``(B, T)`` integer ids of packed documents (``selrope.ops.segments``):
        attention stays within each document and rotary angles restart. The cache keeps every
        token's key and value (cached tokens count as the first document of the next call).
        """
        B, T, _ = x.shape
        past_rotary = None if cache is None else cache.rotary_state
        q, k, v, rotary_state = self.rotated_qkv(x, past_rotary, rotary_input, segment_ids)
        past_k, past_v = (None, None) if cache is None else (cache.keys, cache.values)
        o, keys, values = attention_with_cache(q, k, v, past_k, past_v, segment_ids=segment_ids)
        return self.o_proj(o.reshape(B, T, -1)), AttentionCache(keys, values, rotary_state)
