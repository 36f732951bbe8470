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

Packed documents (``segment_ids``, see ``ops.segments``): a token attends only to earlier tokens of
its own document, and the gates of other documents are 0, so positions count within a document.
"""

from __future__ import annotations

import torch

from selrope.common.dtypes import compute_dtype
from selrope.ops.attention import attention_mask, check_kv_cache, check_qkv
from selrope.ops.segments import check_segment_ids, document_index


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
) -> torch.Tensor:
    """CoPE attention written out one query at a time, in float64.

    For query i each allowed key's position is the sum of the gates of the keys j..i, and the
    embedding at that position is interpolated from the table before the dot product with q.

    Args:
        q: ``(B, T, H, D)`` queries.
        k: ``(B, T, H, D)`` keys.
        v: ``(B, T, H, Dv)`` values.
        position_embeddings: ``(npos, D)`` table shared by the heads, or ``(H, npos, D)``.
        scale: logit scale; default ``D ** -0.5``.
        segment_ids: ``(B, T)`` integer ids of packed documents, or None (one document per row).

    Returns:
        ``(B, T, H, Dv)`` outputs, cast back to q's dtype.
    """
    check_qkv(q, k, v)
    B, T, H, D = q.shape
    table = _check_position_embeddings(q, position_embeddings).double().expand(H, -1, -1)
    max_position = table.shape[1] - 1
    scale = D**-0.5 if scale is None else scale
    q64, k64, v64 = q.double(), k.double(), v.double()
    if segment_ids is None:
        document = torch.zeros(B, T, dtype=torch.int64, device=q.device)
    else:
        check_segment_ids(segment_ids, B, T)
        document = document_index(segment_ids)
    heads = torch.arange(H, device=q.device)
    outputs = []
    for i in range(T):
        logits = scale * torch.einsum("bhd,bjhd->bjh", q64[:, i], k64[:, : i + 1])
        same_document = (document[:, : i + 1] == document[:, i : i + 1])[..., None]
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
        weights = scores.masked_fill(~same_document, -torch.inf).softmax(dim=1)
        outputs.append(torch.einsum("bjh,bjhv->bhv", weights, v64[:, : i + 1]))
    return torch.stack(outputs, dim=1).to(q.dtype)


def cope_attention_with_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    position_embeddings: torch.Tensor,
    cache_k: torch.Tensor | None = None,
    cache_v: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
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
        segment_ids: ``(B, T)`` integer ids of packed documents among the new tokens, or None.
            The cached tokens count as the row's first document; later documents see only
            themselves.

    Returns:
        ``(o, new_k, new_v)``: o ``(B, T, H, Dv)`` in q's dtype; new_k ``(B, P + T, H, D)`` and
        new_v ``(B, P + T, H, Dv)``, new tensors (the caches passed in are not modified).
    """
    check_qkv(q, k, v)
    B, T, H, D = q.shape
    table = _check_position_embeddings(q, position_embeddings)
    P = check_kv_cache(k, v, cache_k, cache_v)
    if segment_ids is not None:
        check_segment_ids(segment_ids, B, T)
    scale = D**-0.5 if scale is None else scale
    if cache_k is not None:
        k = torch.cat([cache_k, k], dim=1)
        v = torch.cat([cache_v, v], dim=1)
    dtype = compute_dtype(q.dtype)
    allowed = attention_mask(T, P, segment_ids, q.device)
    with torch.autocast(device_type=q.device.type, enabled=False):
        queries = q.to(dtype).transpose(1, 2)  # (B, H, T, D)
        logits = scale * (queries @ k.to(dtype).permute(0, 2, 3, 1))  # (B, H, T, P + T)
        positions = contextual_positions(logits, allowed, table.shape[1] - 1)
        # q . e[p] at the integer positions, then interpolated between floor and ceil.
        at_integers = queries @ table.to(dtype).mT  # (B, H, T, npos)
        low = positions.floor()
        below = at_integers.gather(-1, low.long())
        above = at_integers.gather(-1, positions.ceil().long())
        fraction = positions - low
        scores = logits + (1 - fraction) * below + fraction * above
        weights = scores.masked_fill(~allowed, -torch.inf).softmax(dim=-1)
        o = weights @ v.to(dtype).transpose(1, 2)
    return o.transpose(1, 2).to(q.dtype), k, v
