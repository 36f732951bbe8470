"""What the softmax-attention ops share (plain, FoX, ALiBi, CoPE, PaTH), in layout ``(B, T, H, D)``.

- ``check_attention``: the checks of q, k, v and ``segment_ids`` every public form makes first.
- ``attention_mask``: which keys each new token may attend to, causal and (with ``segment_ids``,
  see ``ops.segments``) within its own document; cached tokens count as the row's first
  document, so later documents see only themselves.
- ``visible_keys``: which keys of a KV cache the next call still sees (its row's last
  document: never the pads of a padded batch nor earlier packed documents).
- ``append_kv_cache``: the checked key/value cache with the new tokens appended, as new tensors
  (the cache passed in is never modified).
- ``sdpa``: PyTorch's fused attention in this layout.
- ``reference_softmax``: the float64 loop over queries behind every ``reference_*`` form; each
  op only says how query i scores keys 0..i.
"""

from __future__ import annotations

from collections.abc import Callable

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


def check_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, segment_ids: torch.Tensor | None
) -> tuple[int, int, int, int]:
    """``check_qkv``, then segment_ids ``(B, T)`` integers or None; return ``(B, T, H, D)``."""
    check_qkv(q, k, v)
    B, T, H, D = q.shape
    if segment_ids is not None:
        check_segment_ids(segment_ids, B, T)
    return B, T, H, D


def document_mask(
    segment_ids: torch.Tensor, past: int = 0, past_visible: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B, 1, T, P + T)`` bool: new token i may attend to key j (causal, same document).

    Args:
        segment_ids: ``(B, T)`` packed-document ids of the new tokens.
        past: P, the number of cached keys before them; they count as the row's first document.
        past_visible: ``(B, P)`` bool, the cached keys that first document holds (the others,
            earlier documents and pads, are never seen), or None (all of them).
    """
    B, T = segment_ids.shape
    queries = document_index(segment_ids)
    keys = torch.cat([queries.new_zeros(B, past), queries], dim=1)
    if past_visible is not None:
        keys[:, :past] = keys[:, :past].masked_fill(~past_visible, -1)
    causal = torch.ones(T, past + T, dtype=torch.bool, device=segment_ids.device).tril(past)
    return (causal & (queries[:, :, None] == keys[:, None, :]))[:, None]


def attention_mask(
    length: int,
    past: int,
    segment_ids: torch.Tensor | None,
    device: torch.device,
    past_visible: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which keys each new token may attend to: causal, and within its document if packed.

    Bottom-right aligned: new token i sits at position P + i and sees keys 0..P+i (SDPA's
    ``is_causal`` aligns top-left, which is wrong when P > 0).

    Args:
        length: T, the number of new tokens.
        past: P, the number of cached keys before them.
        segment_ids: ``(B, T)`` checked packed-document ids of the new tokens, or None.
        device: where the mask lives.
        past_visible: ``(B, P)`` bool, the cached keys of the row's current document (a KV
            cache's ``key_visible``), or None (every cached key).

    Returns:
        bool ``(T, P + T)`` without segment_ids and past_visible, else ``(B, 1, T, P + T)``.
    """
    if segment_ids is None and past_visible is None:
        return torch.ones(length, past + length, dtype=torch.bool, device=device).tril(past)
    if segment_ids is None:
        segment_ids = torch.zeros(past_visible.shape[0], length, dtype=torch.int64, device=device)
    return document_mask(segment_ids, past, past_visible)


def visible_keys(
    past_visible: torch.Tensor | None,
    segment_ids: torch.Tensor | None,
    past: int,
    length: int,
    device: torch.device,
) -> torch.Tensor | None:
    """The keys of cached + new tokens that the next call's first document sees.

    A KV cache keeps every token of a row, but the next call continues only the row's last
    document: pads and earlier packed documents stay in the cache, invisible.

    Args:
        past_visible: ``(B, P)`` bool visibility of the cached keys, or None (all visible).
        segment_ids: ``(B, T)`` checked packed-document ids of the new tokens, or None.
        past: P.
        length: T.
        device: where the result lives.

    Returns:
        ``(B, P + T)`` bool, or None when every key stays visible (no documents, no pads).
    """
    if segment_ids is None and past_visible is None:
        return None
    if segment_ids is None:
        return torch.cat([past_visible, past_visible.new_ones(past_visible.shape[0], length)], 1)
    document = document_index(segment_ids)
    B = document.shape[0]
    if past_visible is None:
        past_visible = torch.ones(B, past, dtype=torch.bool, device=device)
    keys = torch.cat([document.new_zeros(B, past), document], dim=1)
    visible = torch.cat([past_visible, past_visible.new_ones(B, length)], dim=1)
    return visible & (keys == document[:, -1:])


def check_key_visible(key_visible: torch.Tensor | None, batch: int, past: int) -> None:
    """Raise a ``ValueError`` unless ``key_visible`` is None or bool ``(batch, past)``."""
    if key_visible is not None and (
        key_visible.dtype != torch.bool or tuple(key_visible.shape) != (batch, past)
    ):
        raise ValueError(
            f"cache_visible must be a bool tensor of shape (B, P) = {(batch, past)}; "
            f"got {key_visible.dtype} {tuple(key_visible.shape)}"
        )


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


def append_kv_cache(
    k: torch.Tensor, v: torch.Tensor, cache_k: torch.Tensor | None, cache_v: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The cache with the new tokens appended (``check_kv_cache`` first).

    Args:
        k: ``(B, T, H, D)`` keys of the new tokens.
        v: ``(B, T, H, Dv)`` values of the new tokens.
        cache_k: ``(B, P, H, D)`` keys of earlier tokens, or None (P = 0).
        cache_v: ``(B, P, H, Dv)`` values of earlier tokens; given with cache_k.

    Returns:
        ``(keys (B, P + T, H, D), values (B, P + T, H, Dv), P)``: new tensors, or k and v
        themselves without a cache.
    """
    P = check_kv_cache(k, v, cache_k, cache_v)
    if cache_k is None:
        return k, v, P
    return torch.cat([cache_k, k], dim=1), torch.cat([cache_v, v], dim=1), P


def reference_softmax(
    q: torch.Tensor,
    v: torch.Tensor,
    segment_ids: torch.Tensor | None,
    query_scores: Callable[[int, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """The float64 loop of the references: each query attends to keys 0..i of its own document.

    Args:
        q: ``(B, T, H, D)`` queries; only their sizes, device and dtype are read here.
        v: ``(B, T, H, Dv)`` values.
        segment_ids: ``(B, T)`` checked ids of packed documents, or None (one per row).
        query_scores: ``query_scores(i, same_document) -> (B, i + 1, H)`` float64 scores of
            query i for keys 0..i; ``same_document`` ``(B, i + 1, 1)`` bool marks the keys of
            its document (the others are masked here, after the call).

    Returns:
        ``(B, T, H, Dv)`` outputs, cast back to q's dtype.
    """
    B, T = q.shape[:2]
    if segment_ids is None:
        document = torch.zeros(B, T, dtype=torch.int64, device=q.device)
    else:
        document = document_index(segment_ids)
    v64 = v.double()
    outputs = []
    for i in range(T):
        same_document = (document[:, : i + 1] == document[:, i : i + 1])[..., None]
        scores = query_scores(i, same_document)
        weights = scores.masked_fill(~same_document, -torch.inf).softmax(dim=1)
        outputs.append(torch.einsum("bjh,bjhv->bhv", weights, v64[:, : i + 1]))
    return torch.stack(outputs, dim=1).to(q.dtype)


def sdpa(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None,
    is_causal: bool = False,
) -> torch.Tensor:
    """PyTorch's ``scaled_dot_product_attention`` in layout ``(B, T, H, D)``.

    Args:
        q: ``(B, T, H, D)`` queries of the new tokens.
        keys: ``(B, S, H, D)`` keys (cached and new).
        values: ``(B, S, H, Dv)`` values.
        mask: bool (True: attend) or an additive float mask in q's dtype, broadcastable to
            ``(B, H, T, S)``; or None.
        scale: score scale; None: ``D ** -0.5``.
        is_causal: SDPA's own top-left causal mask (only without ``mask``).

    Returns:
        ``(B, T, H, Dv)`` outputs in q's dtype.
    """
    o = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=mask,
        is_causal=is_causal,
        scale=scale,
    )
    return o.transpose(1, 2)
