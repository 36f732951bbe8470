"""CoPE, contextual position encoding (Golovneva et al. 2024, arXiv 2405.18719), layout
``(B, T, H, D)``.

Positions are counted by the content: query i opens a gate on every key t <= i,
``g_it = sigmoid(z_it)`` with ``z_it = scale * q_i . k_t`` the attention logit, and key j sits at
the contextual position

    p_ij = sum_{t = j .. i} g_it   (clipped at p_max = npos - 1),

a fractional count of the gated tokens from j up to the query (p_ii = g_ii < 1). A learned table
``e[0 .. p_max]`` of position embeddings is interpolated at ``p_ij``,
``e[p] = (p - floor p) e[ceil p] + (1 - p + floor p) e[floor p]``, and the logit gets
``q_i . e[p_ij]``; a causal softmax over ``z_ij + q_i . e[p_ij]`` follows.

Where the paper leaves room, selrope follows the paper's own code: the gates read the scaled
logits (the text writes ``sigmoid(q_i . k_j)``; equal at scale 1) and the position term is added
unscaled. The table is shared by all heads (the paper's ``(npos, D)``) or given per head
``(H, npos, D)``. The interpolation is exact in p (``q . e[p]`` is interpolated between the two
integer positions' logits in the fast form), so gradients reach the gates, q and k through p;
positions clipped at p_max get none.

- ``cope_attention``: vectorised over all (query, key) pairs, ``(B, H, T, T)`` logits, gates and
  positions (no SDPA: the position term depends on every pair), computed in float32 (float64 for
  float64 q) with autocast off.
- ``reference_cope_attention``: float64, a loop over queries that sums each key's gates and
  interpolates the embeddings themselves, for tests.
- ``cope_attention_with_cache``: new tokens over cached + new keys; the positions need only the
  cached keys, so the cache is keys and values, as for plain attention.
- ``cope_forgetting_attention`` (and ``_with_cache``): CoPE inside FoX. The scores also get the
  forget-gate bias ``F_i - F_j`` of ``ops.forgetting_attention``, after the positions; the gates
  that count positions read the content logits alone. The CoPE paper defines no such
  combination; this is selrope's, and its cache is FoX's (keys, values, F).

Packed documents (``segment_ids``, see ``ops.segments``): a token attends only to earlier tokens of
its own document, and the gates of other documents are 0, so positions count within a document.
"""

from __future__ import annotations

import torch

from selrope.common.dtypes import compute_dtype
from selrope.ops.attention_common import (
    append_kv_cache,
    attention_mask,
    check_attention,
    check_key_visible,
    reference_softmax,
)
from selrope.ops.forgetting_attention import forget_bias_with_cache
from selrope.ops.recurrence import check_shape


def _check_position_embeddings(q: torch.Tensor, position_embeddings: torch.Tensor) -> torch.Tensor:
    """Check the table against q ``(B, T, H, D)``; return it as ``(1 or H, npos, D)``."""
    _, _, H, D = q.shape
    table = position_embeddings
    if (
        not torch.is_tensor(table)
        or not torch.is_floating_point(table)
        or table.dim() not in (2, 3)
        or table.shape[-1] != D
        or table.shape[-2] < 1
        or (table.dim() == 3 and table.shape[0] != H)
    ):
        got = (
            f"{table.dtype} {tuple(table.shape)}"
            if torch.is_tensor(table)
            else type(table).__name__
        )
        raise ValueError(
            f"position_embeddings must be a float tensor (npos, D) or (H, npos, D) with "
            f"H, D = {H, D} and npos >= 1; got {got}"
        )
    return table if table.dim() == 3 else table[None]


def contextual_positions(
    logits: torch.Tensor, allowed: torch.Tensor, max_position: int
) -> torch.Tensor:
    """CoPE's positions ``p_ij = sum_{t = j .. i} sigmoid(z_it)`` over the allowed keys, clipped.

    Args:
        logits: ``(..., T, S)`` scaled attention logits z (queries by keys).
        allowed: bool, broadcastable to logits: the keys each query sees (causal, same document);
            the allowed keys of a query must be contiguous and end at the query.
        max_position: p_max, the largest position (the table's npos - 1).

    Returns:
        ``(..., T, S)`` positions in [0, p_max] in logits' dtype (0 where not allowed).
    """
    gates = torch.sigmoid(logits) * allowed
    return gates.flip(-1).cumsum(-1).flip(-1).clamp(max=max_position)


def cope_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    position_embeddings: torch.Tensor,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal softmax attention with contextual position encoding, all T tokens at once.

    Args:
        q: ``(B, T, H, D)`` queries.
        k: ``(B, T, H, D)`` keys.
        v: ``(B, T, H, Dv)`` values.
        position_embeddings: ``(npos, D)`` table shared by the heads, or ``(H, npos, D)``.
        scale: logit scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` integer ids of packed documents, or None (one document per row).

    Returns:
        ``(B, T, H, Dv)`` outputs in q's dtype.
    """
    o, *_ = cope_attention_with_cache(
        q, k, v, position_embeddings, scale=scale, segment_ids=segment_ids
    )
    return o


def reference_cope_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    position_embeddings: torch.Tensor,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
    log_forget: torch.Tensor | None = None,
) -> torch.Tensor:
    """CoPE attention written out one query at a time, in float64: the reference for
    ``cope_attention`` (and, with ``log_forget`` ``(B, T, H)``, ``cope_forgetting_attention``),
    with their arguments and shapes.

    For query i each allowed key's position is the sum of the gates of the keys j..i, and the
    embedding at that position is interpolated from the table before the dot product with q;
    with a forget gate, the score of key j then gets the sum of the log gates of tokens j+1..i.

    Returns:
        ``(B, T, H, Dv)`` outputs, cast back to q's dtype.
    """
    _, _, H, D = check_attention(q, k, v, segment_ids)
    table = _check_position_embeddings(q, position_embeddings).double().expand(H, -1, -1)
    max_position = table.shape[1] - 1
    scale = D**-0.5 if scale is None else scale
    q64, k64 = q.double(), k.double()
    heads = torch.arange(H, device=q.device)

    def query_scores(i: int, same_document: torch.Tensor) -> torch.Tensor:
        logits = scale * torch.einsum("bhd,bjhd->bjh", q64[:, i], k64[:, : i + 1])
        gates = torch.sigmoid(logits) * same_document
        positions = torch.stack([gates[:, j:].sum(dim=1) for j in range(i + 1)], dim=1).clamp(
            max=max_position
        )  # (B, i + 1, H)
        low = positions.floor()
        fraction = (positions - low)[..., None]
        below = table[heads, low.long()]  # (B, i + 1, H, D)
        above = table[heads, positions.ceil().long()]
        embedding = (1 - fraction) * below + fraction * above
        scores = logits + torch.einsum("bhd,bjhd->bjh", q64[:, i], embedding)
        if log_forget is not None:  # sum_{l = j+1 .. i} log f_l for every key j
            gates_after = log_forget.double()[:, 1 : i + 1]
            scores = scores + torch.stack(
                [gates_after[:, j:].sum(dim=1) for j in range(i + 1)], dim=1
            )
        return scores

    return reference_softmax(q, v, segment_ids, query_scores)


def cope_attention_with_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    position_embeddings: torch.Tensor,
    cache_k: torch.Tensor | None = None,
    cache_v: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
    cache_visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CoPE attention of T new tokens over P cached tokens plus themselves.

    Covers a prompt prefill (no cache), a multi-token chunk appended to a cache and one-token
    decoding steps alike; a new query's positions count the gates of cached and new keys.

    Args:
        q: ``(B, T, H, D)`` queries of the new tokens.
        k: ``(B, T, H, D)`` keys of the new tokens.
        v: ``(B, T, H, Dv)`` values of the new tokens.
        position_embeddings: ``(npos, D)`` table shared by the heads, or ``(H, npos, D)``.
        cache_k: ``(B, P, H, D)`` keys of earlier tokens, or None (P = 0).
        cache_v: ``(B, P, H, Dv)`` values of earlier tokens; given with cache_k.
        scale: logit scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` packed-document ids of the new tokens, or None; the cached
            tokens count as the row's first document (``ops.attention_common``).
        cache_visible: ``(B, P)`` bool, the cached keys that first document holds (never the
            pads of a padded batch; ``ops.attention_common.visible_keys``), or None (all).

    Returns:
        ``(o, new_k, new_v)``: o ``(B, T, H, Dv)`` in q's dtype; new_k ``(B, P + T, H, D)`` and
        new_v ``(B, P + T, H, Dv)``, new tensors (the caches passed in are not modified).
    """
    B, T, _, _ = check_attention(q, k, v, segment_ids)
    k, v, P = append_kv_cache(k, v, cache_k, cache_v)
    check_key_visible(cache_visible, B, P)
    allowed = attention_mask(T, P, segment_ids, q.device, cache_visible)
    return _cope_softmax(q, k, v, position_embeddings, allowed, scale), k, v


def _cope_softmax(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    position_embeddings: torch.Tensor,
    allowed: torch.Tensor,
    scale: float | None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The CoPE attention of T queries over S keys (cache included), in float32 or better with
    autocast off: q ``(B, T, H, D)``, k ``(B, S, H, D)``, v ``(B, S, H, Dv)``, ``allowed``
    ``(B or 1, 1, T, S)``, ``bias`` ``(B, H, T, S)`` added to the scores after the positions (a
    forget gate's) or None. Returns o ``(B, T, H, Dv)`` in q's dtype."""
    table = _check_position_embeddings(q, position_embeddings)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dtype = compute_dtype(q.dtype)
    with torch.autocast(device_type=q.device.type, enabled=False):
        queries = q.to(dtype).transpose(1, 2)  # (B, H, T, D)
        logits = scale * (queries @ k.to(dtype).permute(0, 2, 3, 1))  # (B, H, T, S)
        positions = contextual_positions(logits, allowed, table.shape[1] - 1)
        # q . e[p] at the integer positions, then interpolated between floor and ceil.
        at_integers = queries @ table.to(dtype).mT  # (B, H, T, npos)
        low = positions.floor()
        below = at_integers.gather(-1, low.long())
        above = at_integers.gather(-1, positions.ceil().long())
        fraction = positions - low
        scores = logits + (1 - fraction) * below + fraction * above
        if bias is not None:
            scores = scores + bias.to(dtype)
        weights = scores.masked_fill(~allowed, -torch.inf).softmax(dim=-1)
        o = weights @ v.to(dtype).transpose(1, 2)
    return o.transpose(1, 2).to(q.dtype)


def cope_forgetting_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    position_embeddings: torch.Tensor,
    log_forget: torch.Tensor,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """CoPE inside FoX, all T tokens at once: ``cope_attention`` whose scores also get the
    forget-gate bias ``F_i - F_j`` (``ops.forgetting_attention``). The gates that count
    positions read the content logits alone, as in CoPE; the bias comes after the positions.

    Args:
        q, k, v, position_embeddings, scale, segment_ids: as in ``cope_attention``.
        log_forget: ``(B, T, H)`` log forget gates, <= 0.

    Returns:
        ``(B, T, H, Dv)`` outputs in q's dtype.
    """
    o, *_ = cope_forgetting_attention_with_cache(
        q, k, v, position_embeddings, log_forget, scale=scale, segment_ids=segment_ids
    )
    return o


def cope_forgetting_attention_with_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    position_embeddings: torch.Tensor,
    log_forget: torch.Tensor,
    cache_k: torch.Tensor | None = None,
    cache_v: torch.Tensor | None = None,
    cache_cumulative: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
    cache_visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``cope_forgetting_attention`` of T new tokens over P cached tokens plus themselves; the
    cache is FoX's (keys, values and every cached token's F).

    Args:
        q, k, v, position_embeddings, cache_k, cache_v, scale, segment_ids, cache_visible: as in
            ``cope_attention_with_cache``.
        log_forget: ``(B, T, H)`` log forget gates of the new tokens, <= 0.
        cache_cumulative: ``(B, P, H)`` F of earlier tokens (``forgetting_attention_with_cache``).

    Returns:
        ``(o, new_k, new_v, new_cumulative)`` as ``forgetting_attention_with_cache`` returns.
    """
    B, T, H, _ = check_attention(q, k, v, segment_ids)
    check_shape("log_forget", log_forget, (B, T, H), "(B, T, H)")
    k, v, P = append_kv_cache(k, v, cache_k, cache_v)
    check_key_visible(cache_visible, B, P)
    allowed = attention_mask(T, P, segment_ids, q.device, cache_visible)
    bias, keys_cumulative = forget_bias_with_cache(log_forget, cache_k, cache_cumulative, allowed)
    o = _cope_softmax(q, k, v, position_embeddings, allowed, scale, bias)
    return o, k, v, keys_cumulative
