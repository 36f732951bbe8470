"""Causal softmax attention with any rotary embedding and a KV cache."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from selrope.ops import attention_with_cache
from selrope.ops.attention_common import visible_keys
from selrope.rotary import build_rotary


class AttentionCache(NamedTuple):
    """Decoding state of an :class:`Attention` layer.

    keys, values: ``(B, S, H, D)`` every past token's (already rotated) key and value.
    rotary_state: the rotary embedding's streaming state (None for NoPE).
    key_visible: ``(B, S)`` bool, the cached tokens the next one may attend to: those of its
        row's last document, never pads nor earlier packed documents; None: all of them.
    """

    keys: torch.Tensor
    values: torch.Tensor
    rotary_state: Any
    key_visible: torch.Tensor | None = None


class Attention(nn.Module):
    """Multi-head causal softmax attention, rotary applied to q and k.

    Args:
        model_dim: width d of the input and output.
        num_heads: H; the head dim is d / H.
        rotary: rotary config (dict or RotaryConfig) for ``selrope.rotary.build_rotary``.
        bias: biases on the q, k, v and output projections (GPT-2's); none by default.
    """

    def __init__(self, model_dim: int, num_heads: int, rotary: Any = None, bias: bool = False):
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
        self.q_proj = nn.Linear(model_dim, model_dim, bias=bias)
        self.k_proj = nn.Linear(model_dim, model_dim, bias=bias)
        self.v_proj = nn.Linear(model_dim, model_dim, bias=bias)
        self.o_proj = nn.Linear(model_dim, model_dim, bias=bias)
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

    # The op over the rotated q, k, v: ``op(q, k, v, *op_inputs(x), *cache_args, scale=...,
    # segment_ids=..., cache_visible=...) -> (o, *new cache_args)``, where cache_args are the
    # fields of ``cache_type`` before its rotary_state (none to start a sequence). The scale is
    # D^-1/2 of the head dim D, also where the rotary embedding widens q and k (PoPE: 2D); it is
    # passed only then, so the ops' default keeps their bits (SDPA rounds an explicit scale
    # differently).
    op = staticmethod(attention_with_cache)
    cache_type = AttentionCache

    def op_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The op's inputs read from x ``(B, T, d)`` besides q, k, v: none here."""
        return ()

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
        attention stays within each document and rotary angles restart. The cache (a
        ``cache_type``) keeps what every token leaves to later ones, here its key and value;
        cached tokens count as the first document of the next call, which sees only the cached
        keys of the row's last document (``key_visible``: the pads of a padded batch stay
        invisible).
        """
        B, T, _ = x.shape
        past_rotary = None if cache is None else cache.rotary_state
        q, k, v, rotary_state = self.rotated_qkv(x, past_rotary, rotary_input, segment_ids)
        cache_args = () if cache is None else tuple(cache)[:-2]
        past_visible = None if cache is None else cache.key_visible
        o, *new_cache = self.op(
            q,
            k,
            v,
            *self.op_inputs(x),
            *cache_args,
            scale=None if q.shape[-1] == self.head_dim else self.head_dim**-0.5,
            segment_ids=segment_ids,
            cache_visible=past_visible,
        )
        past = 0 if cache is None else cache.keys.shape[1]
        key_visible = visible_keys(past_visible, segment_ids, past, T, x.device)
        return self.o_proj(o.reshape(B, T, -1)), self.cache_type(
            *new_cache, rotary_state, key_visible
        )
