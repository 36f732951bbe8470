"""ALiBi attention: causal softmax attention with fixed per-head linear distance penalties."""

from __future__ import annotations

import torch

from selrope.layers.attention import Attention
from selrope.ops.alibi import alibi_attention_with_cache


class AlibiAttention(Attention):
    """Attention whose score of query i for key j gets ``-m_h (i - j)`` (``ops.alibi``), with the
    ALiBi paper's geometric slopes ``m_h``: no parameters of its own, the same cache as
    :class:`Attention`. Meant with no rotary embedding (ALiBi replaces it), but a rotary config
    applies as in :class:`Attention`.

    Args:
        model_dim: width d of the input and output.
        num_heads: H; the head dim is d / H.
        rotary: rotary config (dict or RotaryConfig) for ``selrope.rotary.build_rotary``.
        bias: biases on the q, k, v and output projections (see :class:`Attention`).
    """

    def op(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *cache_args: torch.Tensor,
        scale: float | None = None,
        segment_ids: torch.Tensor | None = None,
        cache_visible: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``ops.alibi_attention_with_cache`` with the default slopes (see ``Attention.op``)."""
        return alibi_attention_with_cache(
            q, k, v, *cache_args, scale=scale, segment_ids=segment_ids, cache_visible=cache_visible
        )
