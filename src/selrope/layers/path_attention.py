"""PaTH attention (Yang et al. 2025): softmax attention through accumulated data-dependent
Householder transforms, optionally with FoX's forget gate (PaTH-FoX)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from selrope.common import check_positive_int, compute_dtype
from selrope.layers.attention import Attention
from selrope.layers.forgetting_attention import (
    FORGET_BIAS_INIT,
    check_forget_bias_init,
    log_forget_gate,
)
from selrope.ops.attention_common import visible_keys
from selrope.ops.path_attention import PathAttentionCache, path_attention, path_attention_with_cache
from selrope.ops.short_conv import ShortConvolution


class PathLayerCache(NamedTuple):
    """Decoding state of a :class:`PathAttention` layer.

    attention: the op's ``PathAttentionCache`` (every key carried through all later transforms,
        the values, F with a forget gate).
    conv: ``(B, H * D, W - 1)`` the last inputs of the short conv of w.
    rotary_state: the rotary embedding's streaming state (None for NoPE).
    key_visible: ``(B, S)`` bool, the cached tokens the next one may attend to (see
        ``AttentionCache``); None: all of them.
    """

    attention: PathAttentionCache
    conv: torch.Tensor
    rotary_state: Any
    key_visible: torch.Tensor | None = None


class PathAttention(Attention):
    """PaTH attention (``ops.path_attention``), its layer as in the paper and fla's
    ``PaTHAttention``: per head and token a unit direction ``w_t`` (a low-rank projection
    ``d -> r -> H D``, a short causal conv with SiLU, an l2 norm) and a strength
    ``beta_t = 2 sigmoid(b . x_t + c)`` in (0, 2), so ``I - beta_t w_t w_t^T`` may flip the
    direction; with ``forget_gate`` FoX's gate ``log f_t`` is added to the scores (PaTH-FoX).
    A rotary config applies to q and k as in :class:`Attention` (PaTH replaces it: default NoPE).

    While training without a cache the op runs without keeping one (fla's kernel on CUDA) and
    the returned cache is None; otherwise it keeps a :class:`PathLayerCache`.

    Args:
        model_dim: width d of the input and output.
        num_heads: H; the head dim is d / H.
        rotary: rotary config (dict or RotaryConfig) for ``selrope.rotary.build_rotary``.
        low_rank_dim: r of w's projection (32 in the paper's code).
        conv_size: kernel width of w's short conv (3 in the paper's code).
        forget_gate: add FoX's data-dependent forget gate.
        forget_bias_init: the gate's initial bias (see :class:`ForgettingAttention`).
        bias: biases on the q, k, v and output projections (see :class:`Attention`).
    """

    def __init__(
        self,
        model_dim: int,
        num_heads: int,
        rotary: Any = None,
        low_rank_dim: int = 32,
        conv_size: int = 3,
        forget_gate: bool = False,
        forget_bias_init: float = FORGET_BIAS_INIT,
        bias: bool = False,
    ):
        super().__init__(model_dim, num_heads, rotary, bias)
        check_positive_int("low_rank_dim", low_rank_dim)
        check_positive_int("conv_size", conv_size)
        self.w_proj = nn.Sequential(
            nn.Linear(model_dim, low_rank_dim, bias=False),
            nn.Linear(low_rank_dim, model_dim, bias=False),
        )
        self.w_conv = ShortConvolution(model_dim, conv_size, "silu")
        self.beta_proj = nn.Linear(model_dim, num_heads)
        self.forget_proj = self.forget_bias = None
        if forget_gate:
            check_forget_bias_init(forget_bias_init)
            self.forget_proj = nn.Linear(model_dim, num_heads, bias=False)
            self.forget_bias = nn.Parameter(torch.full((num_heads,), float(forget_bias_init)))

    def transforms(
        self, x: torch.Tensor, conv: torch.Tensor | None, segment_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """x ``(B, T, d)`` -> ``(w (B, T, H, D) unit, beta (B, T, H), log f (B, T, H) or None,
        new conv cache)``, w and beta in float32 or better (the products of transforms
        accumulate there); ``segment_ids`` keep the conv within each document."""
        B, T, _ = x.shape
        dtype = compute_dtype(x.dtype)
        w, conv = self.w_conv(self.w_proj(x), conv, segment_ids)
        w = F.normalize(w.view(B, T, self.num_heads, self.head_dim).to(dtype), dim=-1)
        beta = 2 * torch.sigmoid(self.beta_proj(x).to(dtype))
        g = None
        if self.forget_proj is not None:
            g = log_forget_gate(x, self.forget_proj, self.forget_bias)
        return w, beta, g, conv

    def forward(
        self,
        x: torch.Tensor,
        cache: PathLayerCache | None = None,
        rotary_input: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, PathLayerCache | None]:
        """x ``(B, T, d)`` (normalised block input) -> ``(y (B, T, d), new cache)``; the
        arguments as for :meth:`Attention.forward`. The cached keys of the row's last document
        are carried through every new token's transform; earlier documents stay invisible."""
        B, T, _ = x.shape
        past = cache if cache is not None else PathLayerCache(None, None, None)
        q, k, v, rotary_state = self.rotated_qkv(x, past.rotary_state, rotary_input, segment_ids)
        w, beta, g, conv = self.transforms(x, past.conv, segment_ids)
        if cache is None and self.training and torch.is_grad_enabled():
            o = path_attention(q, k, v, w, beta, g, segment_ids=segment_ids)
            return self.o_proj(o.reshape(B, T, -1)), None
        o, attention = path_attention_with_cache(
            q,
            k,
            v,
            w,
            beta,
            g,
            past.attention,
            segment_ids=segment_ids,
            cache_visible=past.key_visible,
        )
        previous = 0 if cache is None else cache.attention.keys.shape[1]
        key_visible = visible_keys(past.key_visible, segment_ids, previous, T, x.device)
        new_cache = PathLayerCache(attention, conv, rotary_state, key_visible)
        return self.o_proj(o.reshape(B, T, -1)), new_cache
