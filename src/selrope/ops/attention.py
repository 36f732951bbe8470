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
import torch.nn.functional as F

from selrope.ops.segments import check_segment_ids, document_index


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise a ``ValueError`` unless q, k ``(B, T, H, D)`` and v ``(B, T, H, Dv)`` fit together."""
    if q.dim() != 4:
        raise ValueError(f"q must have shape (B, T, H, D); got {tuple(q.shape)}")
    B, T, H, D = q.shape
    if tuple(k.shape) != (B, T, H, D):
        raise ValueError(f"k must have shape (B, T, H, D) = {(B, T, H, D)}; got {tuple(k.shape)}")
    if v.dim() != 4 or tuple(v.shape[:3]) != (B, T, H):
        raise ValueError(
            f"v must have shape (B, T, H, Dv) with B, T, H = {B, T, H}; got {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype and torch.is_floating_point(q)):
        raise ValueError(
            f"q, k, v must share one floating-point dtype; got {q.dtype}, {k.dtype}, {v.dtype}"
        )


def document_mask(segment_ids: torch.Tensor, past: int = 0) -> torch.Tensor:
    """``(B, 1, T, P + T)`` bool: new token i may attend to key j (causal, same document).

    Args:
        segment_ids: ``(B, T)`` packed-document ids of the new tokens.
        past: P, the number of cached keys before them; they count as the row's first document.
    """
    B, T = segment_ids.shape
    queries = document_index(segment_ids)
    keys = torch.cat([queries.new_zeros(B, past), queries], dim=1)
    causal = torch.ones(T, past + T, dtype=torch.bool, device=segment_ids.device).tril(past)
    return (causal & (queries[:, :, None] == keys[:, None, :]))[:, None]


def attention_mask(
    length: int, past: int, segment_ids: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Which keys each new token may attend to: causal, and within its document if packed.

    Bottom-right aligned: new token i sits at position P + i and sees keys 0..P+i (SDPA's
    ``is_causal`` aligns top-left, which is wrong when P > 0).

    Args:
        length: T, the number of new tokens.
        past: P, the number of cached keys before them.
        segment_ids: ``(B, T)`` checked packed-document ids of the new tokens, or None.
        device: where the mask lives.

    Returns:
        bool ``(T, P + T)`` without segment_ids, else ``(B, 1, T, P + T)``.
    """
    if segment_ids is None:
        return torch.ones(length, past + length, dtype=torch.bool, device=device).tril(past)
    return document_mask(segment_ids, past)


def check_kv_cache(
    k: torch.Tensor, v: torch.Tensor, cache_k: torch.Tensor | None, cache_v: torch.Tensor | None
) -> int:
    """Check a key/value cache against the new k ``(B, T, H, D)``, v ``(B, T, H, Dv)``; return P.

    Raises:
        ValueError: only one of cache_k, cache_v is given, or they are not ``(B, P, H, D)`` and
            ``(B, P, H, Dv)`` in the dtypes of k and v.
    """
    if (cache_k is None) != (cache_v is None):
        raise ValueError("cache_k and cache_v must be given together (or both None)")
    if cache_k is None:
        return 0
    B, _, H, D = k.shape
    P = cache_k.shape[1] if cache_k.dim() == 4 else -1
    if cache_k.dim() != 4 or tuple(cache_k.shape) != (B, P, H, D):
        raise ValueError(
            f"cache_k must have shape (B, P, H, D) with B, H, D = {B, H, D}; "
            f"got {tuple(cache_k.shape)}"
        )
    if tuple(cache_v.shape) != (B, P, H, v.shape[-1]):
        raise ValueError(
            f"cache_v must have shape (B, P, H, Dv) = {(B, P, H, v.shape[-1])}; "
            f"got {tuple(cache_v.shape)}"
        )
    if cache_k.dtype != k.dtype or cache_v.dtype != v.dtype:
        raise ValueError(
            f"caches must have the dtype of k, v ({k.dtype}); got {cache_k.dtype}, {cache_v.dtype}"
        )
    return P


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
    check_qkv(q, k, v)
    if segment_ids is None:
        mask = None
    else:
        check_segment_ids(segment_ids, q.shape[0], q.shape[1])
        mask = document_mask(segment_ids)
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask,
        is_causal=mask is None,
        scale=scale,
    )
    return o.transpose(1, 2)


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal softmax attention written out (scores, mask, softmax), computed in float64.

    Args:
        q: ``(B, T, H, D)`` queries.
        k: ``(B, T, H, D)`` keys.
        v: ``(B, T, H, Dv)`` values.
        scale: score scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` integer ids of packed documents, or None (one document per row).

    Returns:
        ``(B, T, H, Dv)`` outputs, cast back to q's dtype.
    """
    check_qkv(q, k, v)
    B, T, _, D = q.shape
    scale = D**-0.5 if scale is None else scale
    scores = scale * torch.einsum("bthd,bshd->bhts", q.double(), k.double())
    allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    if segment_ids is not None:
        check_segment_ids(segment_ids, B, T)
        document = document_index(segment_ids)
        allowed = allowed & (document[:, None, :, None] == document[:, None, None, :])
    weights = scores.masked_fill(~allowed, -torch.inf).softmax(dim=-1)
    return torch.einsum("bhts,bshd->bthd", weights, v.double()).to(q.dtype)


def attention_with_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache_k: torch.Tensor | None = None,
    cache_v: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
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
        segment_ids: ``(B, T)`` integer ids of packed documents among the new tokens, or None.
            The cached tokens count as the row's first document; later documents see only
            themselves.

    Returns:
        ``(o, new_k, new_v)``: o ``(B, T, H, Dv)`` in q's dtype; new_k ``(B, P + T, H, D)`` and
        new_v ``(B, P + T, H, Dv)``, new tensors (the caches passed in are not modified).
    """
    check_qkv(q, k, v)
    if cache_k is None and cache_v is None:
        return causal_attention(q, k, v, scale, segment_ids), k, v
    P = check_kv_cache(k, v, cache_k, cache_v)
    B, T = q.shape[:2]
    if segment_ids is not None:
        check_segment_ids(segment_ids, B, T)
    new_k = torch.cat([cache_k, k], dim=1)
    new_v = torch.cat([cache_v, v], dim=1)
    # A single new token without documents sees everything: no mask.
    mask = None
    if T > 1 or segment_ids is not None:
        mask = attention_mask(T, P, segment_ids, q.device)
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        new_k.transpose(1, 2),
        new_v.transpose(1, 2),
        attn_mask=mask,
        scale=scale,
    )
    return o.transpose(1, 2), new_k, new_v
