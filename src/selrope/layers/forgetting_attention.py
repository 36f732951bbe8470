"""Forgetting Transformer (FoX) attention with any rotary embedding and a KV cache."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from selrope.layers.attention import Attention
from selrope.ops import forgetting_attention_with_cache
from selrope.ops.recurrence import compute_dtype

# sigmoid(5) = 0.9933: every gate starts near 1, so FoX starts close to plain attention (a decay
# of 1/e over ~150 tokens). The FoX paper's code starts its data-dependent gates at bias 0
# (f near 1/2); x-transformers' data-dependent ALiBi also starts at 5.
FORGET_BIAS_INIT = 5.0


class ForgettingAttentionCache(NamedTuple):
    """Decoding state of a :class:`ForgettingAttention` layer.

    keys, values: ``(B, S, H, D)`` every past token's (already rotated) key and value.
    cumulative_log_forget: ``(B, S, H)`` float32 (float64 for a float64 model), F of every past
        token: the running sum of its log forget gates (``ops.cumulative_log_forget``).
    rotary_state: the rotary embedding's streaming state (None for NoPE).
    key_visible: ``(B, S)`` bool, the cached tokens the next one may attend to (see
        ``AttentionCache``); None: all of them.
    """

    keys: torch.Tensor
    values: torch.Tensor
    cumulative_log_forget: torch.Tensor
    rotary_state: Any
    key_visible: torch.Tensor | None = None


class ForgettingAttention(Attention):
    """FoX: causal softmax attention whose scores decay with a data-dependent forget gate.

    Per head h and token t, ``f_t = sigmoid(w_h . x_t + b_h)`` from the layer input x, and the
    score of query i for key j gets ``sum_{l=j+1..i} log f_l`` (``ops.forgetting_attention``).
    The rotary embedding rotates q and k exactly as in :class:`Attention`; the bias comes after.

    Args:
        model_dim: width d of the input and output.
        num_heads: H; the head dim is d / H.
        rotary: rotary config (dict or RotaryConfig) for ``selrope.rotary.build_rotary``.
        forget_bias_init: the initial gate bias b (every head); sigmoid(b) is the gate of x = 0.
        bias: biases on the q, k, v and output projections (see :class:`Attention`).
    """

    def __init__(
        self,
        model_dim: int,
        num_heads: int,
        rotary: Any = None,
        forget_bias_init: float = FORGET_BIAS_INIT,
        bias: bool = False,
    ):
        super().__init__(model_dim, num_heads, rotary, bias)
        check_forget_bias_init(forget_bias_init)
        self.forget_proj = nn.Linear(model_dim, num_heads, bias=False)
        # Kept apart from forget_proj: a language model re-initialises every Linear's bias to 0.
        self.forget_bias = nn.Parameter(torch.full((num_heads,), float(forget_bias_init)))

    op = staticmethod(forgetting_attention_with_cache)
    cache_type = ForgettingAttentionCache

    def op_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(log f,)``, the forget gates (``log_forget``)."""
        return (self.log_forget(x),)

    def log_forget(self, x: torch.Tensor) -> torch.Tensor:
        """x ``(B, T, d)`` -> log f ``(B, T, H)`` (< 0), float32 or better
        (``log_forget_gate``)."""
        return log_forget_gate(x, self.forget_proj, self.forget_bias)


def log_forget_gate(x: torch.Tensor, proj: nn.Linear, bias: torch.Tensor) -> torch.Tensor:
    """FoX's gate: x ``(B, T, d)``, ``proj`` ``d -> H`` (no bias), ``bias`` ``(H,)`` ->
    ``log sigmoid(proj(x) + bias)`` ``(B, T, H)`` (< 0) in float32 or better; the bias is added
    after the projection, so under bf16 autocast only the small data-dependent part is rounded."""
    dtype = compute_dtype(x.dtype)
    return F.logsigmoid(proj(x).to(dtype) + bias.to(dtype))


def check_forget_bias_init(forget_bias_init: Any) -> None:
    """One-line ValueError unless ``forget_bias_init`` is a finite float."""
    if (
        not isinstance(forget_bias_init, (int, float))
        or isinstance(forget_bias_init, bool)
        or not math.isfinite(forget_bias_init)
    ):
        raise ValueError(f"forget_bias_init must be a finite float; got {forget_bias_init!r}")
