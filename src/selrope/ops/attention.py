"""Causal softmax attention in layout ``(B, T, H, D)``, with a key/value cache for decoding.

- ``causal_attention``: PyTorch's ``scaled_dot_product_attention`` (fused kernels where the
  device has them).
- ``reference_attention``: explicit masked softmax in float64, the reference for tests.
- ``attention_with_cache``: new tokens attend to cached + new keys; prefill and one-token decoding.

Rotary embeddings are applied to q and k before these functions (they see rotated q, k only).
With ``segment_ids`` (packed documents, see ``ops.segments``) a token attends only to earlier
tokens of its own document: a boolean causal and same-document mask.
"""

from __future__ import annotations

import torch

from selrope.ops.attention_common import (
    append_kv_cache,
    attention_mask,
    check_attention,
    check_key_visible,
    check_kv_cache,  # noqa: F401 - part of this module's surface since before ops.attention_common
    check_qkv,  # noqa: F401
    document_mask,
    reference_softmax,
    sdpa,
)


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal softmax attention: token t attends to tokens 0..t (of its own document).

    Args:
        q: ``(B, T, H, D)`` queries.
        k: ``(B, T, H, D)`` keys.
        v: ``(B, T, H, Dv)`` values.
        scale: score scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` integer ids of packed documents, or None (one document per row).

    Returns:
        ``(B, T, H, Dv)`` outputs in q's dtype.
    """
    check_attention(q, k, v, segment_ids)
    mask = None if segment_ids is None else document_mask(segment_ids)
    return sdpa(q, k, v, mask, scale, is_causal=mask is None)


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal softmax attention written out (scores, mask, softmax) one query at a time, in
    float64: the reference for ``causal_attention``, with its arguments and shapes.

    Returns:
        ``(B, T, H, Dv)`` outputs, cast back to q's dtype.
    """
    D = check_attention(q, k, v, segment_ids)[3]
    scale = D**-0.5 if scale is None else scale
    q64, k64 = q.double(), k.double()
    return reference_softmax(
        q,
        v,
        segment_ids,
        lambda i, _: scale * torch.einsum("bhd,bjhd->bjh", q64[:, i], k64[:, : i + 1]),
    )


def attention_with_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache_k: torch.Tensor | None = None,
    cache_v: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
    cache_visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention of T new tokens over P cached tokens plus themselves (causally among the new).

    New token i sits at position P + i and attends to cached tokens 0..P-1 and new tokens 0..i.
    Covers a prompt prefill (cache ``None``), a multi-token chunk appended to an existing cache
    and one-token decoding steps alike.

    Args:
        q: ``(B, T, H, D)`` queries of the new tokens.
        k: ``(B, T, H, D)`` keys of the new tokens.
        v: ``(B, T, H, Dv)`` values of the new tokens.
        cache_k: ``(B, P, H, D)`` keys of earlier tokens, or ``None`` (P = 0).
        cache_v: ``(B, P, H, Dv)`` values of earlier tokens, or ``None``; given with cache_k.
        scale: score scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` packed-document ids of the new tokens, or None; the cached
            tokens count as the row's first document (``ops.attention_common``).
        cache_visible: ``(B, P)`` bool, the cached keys that first document holds (never the
            pads of a padded batch; ``ops.attention_common.visible_keys``), or None (all).

    Returns:
        ``(o, new_k, new_v)``: o ``(B, T, H, Dv)`` in q's dtype; new_k ``(B, P + T, H, D)`` and
        new_v ``(B, P + T, H, Dv)``, new tensors (the caches passed in are not modified).
    """
    T = check_attention(q, k, v, segment_ids)[1]
    if cache_k is None and cache_v is None:
        return causal_attention(q, k, v, scale, segment_ids), k, v
    new_k, new_v, P = append_kv_cache(k, v, cache_k, cache_v)
    check_key_visible(cache_visible, q.shape[0], P)
    # A single new token without documents or pads sees everything: no mask.
    mask = None
    if T > 1 or segment_ids is not None or cache_visible is not None:
        mask = attention_mask(T, P, segment_ids, q.device, cache_visible)
    return sdpa(q, new_k, new_v, mask, scale), new_k, new_v
