"""ALiBi (Press, Smith and Lewis 2022, arXiv 2108.12409) in layout ``(B, T, H, D)``.

Causal softmax attention with a fixed linear distance penalty per head and no position embedding:
the score of query i for key j <= i is

    scale * q_i . k_j - m_h (i - j),

with the paper's geometric slopes ``m_h`` (``alibi_slopes``). It is forgetting attention
(``ops.forgetting_attention``) with every log forget gate fixed at ``-m_h``: the fixed decay that
FoX makes data-dependent.

- ``alibi_attention``: PyTorch's ``scaled_dot_product_attention`` with the penalty as an additive
  float mask, built in float32 (float64 for float64 q) and handed over in q's dtype (as SDPA needs).
- ``reference_alibi_attention``: float64, a loop over queries, for tests.
- ``alibi_attention_with_cache``: new tokens attend to cached + new keys; the distance of new token
  i (position P + i) to cached key j is P + i - j, so the cache is just keys and values.

With ``segment_ids`` (packed documents, see ``ops.segments``) a token attends only to earlier tokens
of its own document (the mask of ``ops.attention``); the penalty depends on distance only, so it
needs no restart.
"""

from __future__ import annotations

import torch

from selrope.common.checks import check_positive_int
from selrope.common.dtypes import compute_dtype
from selrope.ops.attention_common import (
    append_kv_cache,
    attention_mask,
    check_attention,
    check_key_visible,
    reference_softmax,
    sdpa,
)
from selrope.ops.recurrence import check_shape


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """The ALiBi paper's per-head slopes.

    For H a power of two, the geometric sequence ``m_h = 2^(-8 h / H)``, h = 1..H (H = 8: 1/2,
    1/4, ..., 1/256). Otherwise (the rule of the paper's code) the slopes of the largest power of
    two ``H0 < H`` heads, followed by the first ``H - H0`` slopes at odd positions of the sequence
    for ``2 H0`` heads, ``2^(-4 (2h - 1) / H0)``, h = 1..H-H0, which interleave with the first.

    Args:
        num_heads: H, a positive int.

    Returns:
        ``(H,)`` float64 slopes in (0, 1).
    """
    check_positive_int("num_heads", num_heads)
    base = 1 << (num_heads.bit_length() - 1)  # H0: the largest power of two <= H
    exponents = [8 * h / base for h in range(1, base + 1)]
    exponents += [4 * (2 * h - 1) / base for h in range(1, num_heads - base + 1)]
    return torch.tensor(exponents, dtype=torch.float64).neg().exp2()


def _slopes(q: torch.Tensor, slopes: torch.Tensor | None) -> torch.Tensor:
    """Checked ``(H,)`` slopes for q ``(B, T, H, D)`` (default: ``alibi_slopes(H)``), float64."""
    H = q.shape[2]
    if slopes is None:
        return alibi_slopes(H).to(q.device)
    check_shape("slopes", slopes, (H,), "(H,)")
    return slopes.to(device=q.device, dtype=torch.float64)


def alibi_bias(
    slopes: torch.Tensor, length: int, past: int, allowed: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """The additive score mask ``-m_h (P + i - j)`` where key j is allowed for new query i, else
    -inf.

    Args:
        slopes: ``(H,)`` slopes.
        length: T, the number of new tokens (positions P .. P + T - 1).
        past: P, the number of cached keys before them (positions 0 .. P - 1).
        allowed: bool ``(T, P + T)`` or ``(B, 1, T, P + T)`` (``ops.attention.attention_mask``).
        dtype: the dtype the penalty is formed in.

    Returns:
        ``(H, T, P + T)`` or ``(B, H, T, P + T)`` in ``dtype``.
    """
    queries = torch.arange(past, past + length, device=slopes.device, dtype=dtype)
    keys = torch.arange(past + length, device=slopes.device, dtype=dtype)
    bias = -slopes.to(dtype)[:, None, None] * (queries[:, None] - keys[None, :])
    return bias.masked_fill(~allowed, -torch.inf)


def alibi_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slopes: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal softmax attention with the ALiBi penalty, all T tokens at once (SDPA).

    Args:
        q: ``(B, T, H, D)`` queries (no rotary embedding: ALiBi replaces it).
        k: ``(B, T, H, D)`` keys.
        v: ``(B, T, H, Dv)`` values.
        slopes: ``(H,)`` per-head slopes, or None for ``alibi_slopes(H)``.
        scale: score scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` integer ids of packed documents, or None (one document per row).

    Returns:
        ``(B, T, H, Dv)`` outputs in q's dtype.
    """
    o, *_ = alibi_attention_with_cache(q, k, v, slopes=slopes, scale=scale, segment_ids=segment_ids)
    return o


def reference_alibi_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slopes: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """ALiBi attention written out one query at a time, in float64: the reference for
    ``alibi_attention``, with its arguments and shapes.

    Returns:
        ``(B, T, H, Dv)`` outputs, cast back to q's dtype.
    """
    D = check_attention(q, k, v, segment_ids)[3]
    slopes = _slopes(q, slopes)
    scale = D**-0.5 if scale is None else scale
    q64, k64 = q.double(), k.double()

    def query_scores(i: int, _: torch.Tensor) -> torch.Tensor:
        distance = i - torch.arange(i + 1, device=q.device, dtype=torch.float64)  # i - j
        penalty = -distance[None, :, None] * slopes[None, None, :]
        return scale * torch.einsum("bhd,bjhd->bjh", q64[:, i], k64[:, : i + 1]) + penalty

    return reference_softmax(q, v, segment_ids, query_scores)


def alibi_attention_with_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache_k: torch.Tensor | None = None,
    cache_v: torch.Tensor | None = None,
    slopes: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
    cache_visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ALiBi attention of T new tokens over P cached tokens plus themselves.

    New token i sits at position P + i. Covers a prompt prefill (no cache), a multi-token chunk
    appended to a cache and one-token decoding steps alike.

    Args:
        q: ``(B, T, H, D)`` queries of the new tokens.
        k: ``(B, T, H, D)`` keys of the new tokens.
        v: ``(B, T, H, Dv)`` values of the new tokens.
        cache_k: ``(B, P, H, D)`` keys of earlier tokens, or None (P = 0).
        cache_v: ``(B, P, H, Dv)`` values of earlier tokens; given with cache_k.
        slopes: ``(H,)`` per-head slopes, or None for ``alibi_slopes(H)``.
        scale: score scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` packed-document ids of the new tokens, or None; the cached
            tokens count as the row's first document (``ops.attention_common``).
        cache_visible: ``(B, P)`` bool, the cached keys that first document holds (never the
            pads of a padded batch; ``ops.attention_common.visible_keys``), or None (all).

    Returns:
        ``(o, new_k, new_v)``: o ``(B, T, H, Dv)`` in q's dtype; new_k ``(B, P + T, H, D)`` and
        new_v ``(B, P + T, H, Dv)``, new tensors (the caches passed in are not modified).
    """
    B, T = check_attention(q, k, v, segment_ids)[:2]
    k, v, P = append_kv_cache(k, v, cache_k, cache_v)
    check_key_visible(cache_visible, B, P)
    slopes = _slopes(q, slopes)
    allowed = attention_mask(T, P, segment_ids, q.device, cache_visible)
    bias = alibi_bias(slopes, T, P, allowed, compute_dtype(q.dtype))
    return sdpa(q, k, v, bias.to(q.dtype), scale), k, v
