"""CoPE attention: causal softmax attention with contextual position encoding, alone or inside
FoX (with its forget gate)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from selrope.common import check_positive_int
from selrope.layers.attention import Attention
from selrope.layers.forgetting_attention import FORGET_BIAS_INIT, ForgettingAttention
from selrope.ops.cope import cope_attention_with_cache, cope_forgetting_attention_with_cache


def position_table(max_positions: int, head_dim: int) -> nn.Parameter:
    """CoPE's table of position embeddings ``(max_positions, head_dim)``, shared by the heads and
    zero at the start (the paper's code), so a layer starts without positions."""
    check_positive_int("max_positions", max_positions)
    return nn.Parameter(torch.zeros(max_positions, head_dim))


class CopeAttention(Attention):
    """Attention with CoPE (``ops.cope``): gates ``sigmoid`` of the logits count each key's
    position up to the query, and the logit gets ``q . e[p]`` from a learned table interpolated at
    that position. The cache is :class:`Attention`'s (keys and values suffice).

    The table ``e`` ``(max_positions, D)`` is shared by the heads and starts at zero (the paper's
    code), so the layer starts as position-free attention.

    Args:
        model_dim: width d of the input and output.
        num_heads: H; the head dim is d / H.
        rotary: rotary config (dict or RotaryConfig) for ``selrope.rotary.build_rotary``.
        max_positions: rows of the table; contextual positions are clipped at
            ``max_positions - 1`` (the paper's ``npos_max``).
        bias: biases on the q, k, v and output projections (see :class:`Attention`).
    """

    def __init__(
        self,
        model_dim: int,
        num_heads: int,
        rotary: Any = None,
        max_positions: int = 64,
        bias: bool = False,
    ):
        super().__init__(model_dim, num_heads, rotary, bias)
        self.position_embeddings = position_table(max_positions, self.head_dim)

    op = staticmethod(cope_attention_with_cache)

    def op_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(table,)``: the position-embedding table ``(max_positions, D)``."""
        return (self.position_embeddings,)


class CopeForgettingAttention(ForgettingAttention):
    """FoX with CoPE (``ops.cope_forgetting_attention``): the scores of :class:`CopeAttention`
    plus FoX's forget-gate bias ``F_i - F_j``; the cache is :class:`ForgettingAttention`'s. The
    table starts at zero, so the layer starts as FoX.

    Args:
        model_dim: width d of the input and output.
        num_heads: H; the head dim is d / H.
        rotary: rotary config (dict or RotaryConfig) for ``selrope.rotary.build_rotary``.
        max_positions: rows of the position table (see :class:`CopeAttention`).
        forget_bias_init: the gate's initial bias (see :class:`ForgettingAttention`).
        bias: biases on the q, k, v and output projections (see :class:`Attention`).
    """

    def __init__(
        self,
        model_dim: int,
        num_heads: int,
        rotary: Any = None,
        max_positions: int = 64,
        forget_bias_init: float = FORGET_BIAS_INIT,
        bias: bool = False,
    ):
        super().__init__(model_dim, num_heads, rotary, forget_bias_init, bias)
        self.position_embeddings = position_table(max_positions, self.head_dim)

    op = staticmethod(cope_forgetting_attention_with_cache)

    def op_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(table, log f)``: the position table ``(max_positions, D)`` and the forget gates."""
        return (self.position_embeddings, self.log_forget(x))
