"""Forgetting attention (FoX, Lin et al. 2025, arXiv 2503.02130) in layout ``(B, T, H, D)``.

Causal softmax attention whose scores carry a data-dependent decay: with a forget gate
``f_t`` in (0, 1) per head and token, given as ``log_forget = log f_t <= 0``, the score of query
i for key j <= i gets the bias

    D_ij = sum_{l = j+1 .. i} log f_l = F_i - F_j,    F_t = sum_{l <= t} log f_l.

The gate of the first token never matters; with every f = 1 this is plain causal attention.

- ``forgetting_attention``: F is a cumulative sum in float32 even for bf16 gates or under bf16
  autocast (float64 for float64 gates); ``F_i - F_j`` is formed at that precision, masked, and
  handed to PyTorch's ``scaled_dot_product_attention`` as an additive float mask in q's dtype
  (as SDPA needs).
- ``reference_forgetting_attention``: float64, a loop over query positions that sums the gates
  between each key and the query directly, for tests.
- ``forgetting_attention_with_cache``: new tokens attend to cached + new keys; the cache also
  holds each cached key's F, so a decoding step only adds its own gate to the last one.

Rotary embeddings are applied to q and k before these functions. With ``segment_ids`` (packed
documents, see ``ops.segments``) a token attends only to earlier tokens of its own document, the
mask of ``ops.attention``; biases across documents are never used.
"""

from __future__ import annotations

import torch

from selrope.ops.attention_common import (
    append_kv_cache,
    attention_mask,
    check_attention,
    check_key_visible,
    reference_softmax,
    sdpa,
)
from selrope.ops.recurrence import check_shape, compute_dtype


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_forget: torch.Tensor,
    segment_ids: torch.Tensor | None,
) -> tuple[int, int, int, int]:
    """``check_attention`` and log_forget ``(B, T, H)``; return ``(B, T, H, D)``."""
    B, T, H, D = check_attention(q, k, v, segment_ids)
    check_shape("log_forget", log_forget, (B, T, H), "(B, T, H)")
    return B, T, H, D


def cumulative_log_forget(
    log_forget: torch.Tensor, initial: torch.Tensor | None = None
) -> torch.Tensor:
    """F, the running sum of the log forget gates along time.

    Args:
        log_forget: ``(B, T, H)`` log f_t <= 0.
        initial: ``(B, H)`` F of the token before the first (a cache's last entry), or None (0).

    Returns:
        ``(B, T, H)`` ``F_t = initial + sum_{l <= t} log f_l``, float64 for float64 gates, else
        float32 (never accumulated in half precision).
    """
    total = log_forget.to(compute_dtype(log_forget.dtype)).cumsum(dim=1)
    return total if initial is None else total + initial[:, None]


def _forget_bias(
    query_cumulative: torch.Tensor, key_cumulative: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """The additive score mask ``F_i - F_j`` where key j is allowed for query i, else -inf.

    Args:
        query_cumulative: ``(B, T, H)`` F of the queries.
        key_cumulative: ``(B, S, H)`` F of the keys.
        allowed: bool, broadcastable to ``(B, H, T, S)`` (``ops.attention.attention_mask``).

    Returns:
        ``(B, H, T, S)`` in the dtype of the cumulative sums.
    """
    queries = query_cumulative.transpose(1, 2)[..., :, None]
    keys = key_cumulative.transpose(1, 2)[..., None, :]
    return (queries - keys).masked_fill(~allowed, -torch.inf)


def forgetting_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_forget: torch.Tensor,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal softmax attention with the forget bias, all T tokens at once.

    Args:
        q: ``(B, T, H, D)`` queries.
        k: ``(B, T, H, D)`` keys.
        v: ``(B, T, H, Dv)`` values.
        log_forget: ``(B, T, H)`` log forget gates, <= 0.
        scale: score scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` integer ids of packed documents, or None (one document per row).

    Returns:
        ``(B, T, H, Dv)`` outputs in q's dtype.
    """
    o, *_ = forgetting_attention_with_cache(
        q, k, v, log_forget, scale=scale, segment_ids=segment_ids
    )
    return o


def reference_forgetting_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_forget: torch.Tensor,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Forgetting attention written out one query at a time, in float64: the reference for
    ``forgetting_attention``, with its arguments and shapes.

    For query i the bias of key j is the sum of the gates ``log f_{j+1} .. log f_i`` (a reversed
    running sum of the gates after j), not a difference of prefix sums as in the fast form.

    Returns:
        ``(B, T, H, Dv)`` outputs, cast back to q's dtype.
    """
    B, _, H, D = _check_inputs(q, k, v, log_forget, segment_ids)
    scale = D**-0.5 if scale is None else scale
    q64, k64, gates = q.double(), k.double(), log_forget.double()

    def query_scores(i: int, _: torch.Tensor) -> torch.Tensor:
        after = gates[:, 1 : i + 1]  # gates l = 1..i; key j decays by those with l > j
        decay = torch.cat([after.flip(1).cumsum(1).flip(1), gates.new_zeros(B, 1, H)], dim=1)
        return scale * torch.einsum("bhd,bjhd->bjh", q64[:, i], k64[:, : i + 1]) + decay

    return reference_softmax(q, v, segment_ids, query_scores)


def forgetting_attention_with_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_forget: torch.Tensor,
    cache_k: torch.Tensor | None = None,
    cache_v: torch.Tensor | None = None,
    cache_cumulative: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
    cache_visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forgetting attention of T new tokens over P cached tokens plus themselves.

    New token i sits at position P + i; its F continues from the last cached one. Covers a
    prompt prefill (no cache), a multi-token chunk appended to a cache and one-token decoding
    steps alike.

    Args:
        q: ``(B, T, H, D)`` queries of the new tokens.
        k: ``(B, T, H, D)`` keys of the new tokens.
        v: ``(B, T, H, Dv)`` values of the new tokens.
        log_forget: ``(B, T, H)`` log forget gates of the new tokens, <= 0.
        cache_k: ``(B, P, H, D)`` keys of earlier tokens, or None (P = 0).
        cache_v: ``(B, P, H, Dv)`` values of earlier tokens; given with cache_k.
        cache_cumulative: ``(B, P, H)`` F of earlier tokens in the dtype
            ``cumulative_log_forget`` returns for these gates; given with cache_k.
        scale: score scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` packed-document ids of the new tokens, or None; the cached
            tokens count as the row's first document (``ops.attention_common``).
        cache_visible: ``(B, P)`` bool, the cached keys that first document holds (never the
            pads of a padded batch; ``ops.attention_common.visible_keys``), or None (all).

    Returns:
        ``(o, new_k, new_v, new_cumulative)``: o ``(B, T, H, Dv)`` in q's dtype; new_k
        ``(B, P + T, H, D)``, new_v ``(B, P + T, H, Dv)`` and new_cumulative ``(B, P + T, H)``
        (float32 or float64), new tensors (the caches passed in are not modified).
    """
    B, T, H, _ = _check_inputs(q, k, v, log_forget, segment_ids)
    k, v, P = append_kv_cache(k, v, cache_k, cache_v)
    check_key_visible(cache_visible, B, P)
    allowed = attention_mask(T, P, segment_ids, q.device, cache_visible)
    bias, keys_cumulative = forget_bias_with_cache(log_forget, cache_k, cache_cumulative, allowed)
    return sdpa(q, k, v, bias.to(q.dtype), scale), k, v, keys_cumulative


def forget_bias_with_cache(
    log_forget: torch.Tensor,
    cache_k: torch.Tensor | None,
    cache_cumulative: torch.Tensor | None,
    allowed: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The bias ``F_i - F_j`` of T new queries over P cached plus T new keys, and every key's F.

    Args:
        log_forget: ``(B, T, H)`` log forget gates of the new tokens, <= 0.
        cache_k: the cached keys ``(B, P, H, D)``, or None (P = 0): only whether there is one.
        cache_cumulative: ``(B, P, H)`` F of the cached tokens; given with cache_k.
        allowed: ``(B or 1, 1, T, P + T)`` bool, the keys each query sees.

    Returns:
        ``(bias (B, H, T, P + T) with -inf where not allowed, keys' F (B, P + T, H))``, both in
        float32 or float64 (``cumulative_log_forget``).
    """
    if (cache_k is None) != (cache_cumulative is None):
        raise ValueError("cache_cumulative must be given together with cache_k and cache_v")
    if cache_cumulative is None:
        keys_cumulative = cumulative = cumulative_log_forget(log_forget)
    else:
        B, _, H = log_forget.shape
        P = cache_k.shape[1]
        check_shape("cache_cumulative", cache_cumulative, (B, P, H), "(B, P, H)")
        if cache_cumulative.dtype != compute_dtype(log_forget.dtype):
            raise ValueError(
                f"cache_cumulative must be {compute_dtype(log_forget.dtype)} for "
                f"{log_forget.dtype} gates; got {cache_cumulative.dtype}"
            )
        cumulative = cumulative_log_forget(log_forget, cache_cumulative[:, -1] if P else None)
        keys_cumulative = torch.cat([cache_cumulative, cumulative], dim=1)
    return _forget_bias(cumulative, keys_cumulative, allowed), keys_cumulative
