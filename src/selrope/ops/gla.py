"""Gated linear attention (GLA): linear attention with a per-key-channel decay.

The recurrence, per batch element and head, with state ``S_t`` of shape ``(K, V)``::

    S_t = Diag(exp(g_t)) S_{t-1} + k_t v_t^T
    o_t = scale * S_t^T q_t

``g_t`` is the log decay (``<= 0``, one value per key channel; ``-inf`` resets the state; positive
or NaN values raise ValueError), ``scale`` defaults to ``K**-0.5``.
Three forms with the same keyword signature:

- ``recurrent_gla``: a loop over time of ``gla_step``; the obviously-correct reference.
- ``chunk_gla``: chunked-parallel, for training and prefill.
- ``gla_step``: one token, for decoding.

Dtypes: the maths runs in float64 for float64 inputs and in float32 otherwise (bf16/fp16 inputs
are upcast); ``o`` is returned in ``v``'s dtype and the state in the compute dtype.
"""

from __future__ import annotations

import torch

from selrope.ops.fla_backend import fla_chunk_recurrence, use_fla
from selrope.ops.recurrence import (
    check_log_decay,
    check_sequence,
    check_shape,
    check_token,
    chunk_segments,
    compute_dtype,
    effective_chunk_size,
    from_chunks,
    scan,
    step_output,
    step_state,
    to_chunks,
)

# Largest in-chunk accumulated decay (-sum of g over one chunk) for which chunk_gla uses the dense
# intra-chunk matmul; beyond it, the overflow-free but ~5x slower binary-tree form. The choice is
# made per call from the data (one host sync on GPU) and changes nothing but round-off.
_DENSE_MAX_CHUNK_DECAY = {torch.float32: 60.0, torch.float64: 600.0}


def gla_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    state: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GLA step: ``S' = Diag(exp(g)) S + k v^T``, ``o = scale * S'^T q``.

    Args:
        q: ``(B, H, K)`` query of the current token.
        k: ``(B, H, K)`` key.
        v: ``(B, H, V)`` value.
        g: ``(B, H, K)`` log decay (``<= 0``) per key channel.
        state: ``(B, H, K, V)`` state before this token; ``None`` means zeros.
        scale: query scale; default ``K ** -0.5``.

    Returns:
        ``(o, new_state)``: o ``(B, H, V)`` in v's dtype, new_state ``(B, H, K, V)`` in the compute
        dtype (float64 for float64 inputs, else float32). ``state`` is not modified.
    """
    B, H, K, _ = check_token(q, k, v)
    check_shape("g", g, (B, H, K), "(B, H, K)")
    check_log_decay("g", g, exact_resets=True)
    state, scale = step_state(q, v, state, scale)
    q, k, vc, g = (x.to(state.dtype) for x in (q, k, v, g))
    new_state = g.exp().unsqueeze(-1) * state + k.unsqueeze(-1) * vc.unsqueeze(-2)
    return step_output(q, new_state, scale, v.dtype)


def recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA by a loop over time (``gla_step`` per token): the reference for ``chunk_gla``.

    Args:
        q: ``(B, T, H, K)`` queries.
        k: ``(B, T, H, K)`` keys.
        v: ``(B, T, H, V)`` values.
        g: ``(B, T, H, K)`` log decays (``<= 0``) per key channel.
        scale: query scale; default ``K ** -0.5``.
        initial_state: ``(B, H, K, V)`` state before the first token; ``None`` means zeros.
        output_final_state: whether to return the state after the last token.
        segment_ids: ``(B, T)`` integer ids of packed documents (see ``ops.segments``), or None:
            the state restarts from zero at every document start after the first.

    Returns:
        ``(o, final_state)``: o ``(B, T, H, V)`` in v's dtype; final_state ``(B, H, K, V)`` in the
        compute dtype, or ``None`` unless ``output_final_state``.
    """
    check_sequence(q, k, v, initial_state, per_channel={"g": g}, segment_ids=segment_ids)
    check_log_decay("g", g, exact_resets=True)
    return scan(gla_step, (q, k, v, g), initial_state, scale, output_final_state, segment_ids)


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA in chunked-parallel form; equal to ``recurrent_gla`` up to round-off.

    On CUDA with the ``gpu`` extra, fla's Triton kernel runs instead (``ops.fla_backend``; same
    arguments, ``chunk_size`` then unused). Within a chunk the outputs come from batched matmuls;
    across chunks a short loop carries the state. When a chunk's accumulated decay is too strong for
    the dense intra-chunk matmul (see ``_DENSE_MAX_CHUNK_DECAY``), the call switches to
    ``_intra_chunk_output``, whose exponentials all have non-positive arguments, so any finite log
    decay (e.g. -20 per step) gives finite results, in float32 too. Packed documents
    (``segment_ids``) are masks inside the same chunked maths: intra-chunk scores across documents
    are dropped, the entering state reaches only the tokens before the chunk's first document start,
    only the chunk's last document writes the state it hands on, and a chunk holding a start does
    not carry the state through. Differentiable by autograd.

    Args:
        q: ``(B, T, H, K)`` queries.
        k: ``(B, T, H, K)`` keys.
        v: ``(B, T, H, V)`` values.
        g: ``(B, T, H, K)`` log decays (``<= 0``) per key channel; a ``-inf`` (a hard reset)
            makes the call run the loop of ``recurrent_gla``, exact where the chunked maths is not.
        scale: query scale; default ``K ** -0.5``.
        initial_state: ``(B, H, K, V)`` state before the first token; ``None`` means zeros.
        output_final_state: whether to return the state after the last token.
        chunk_size: chunk length C, a power of two (64 is fastest on CPU). T need not be a
            multiple of it.
        segment_ids: ``(B, T)`` integer ids of packed documents (see ``ops.segments``), or None:
            the state restarts from zero at every document start after the first.

    Returns:
        ``(o, final_state)``: o ``(B, T, H, V)`` in v's dtype; final_state ``(B, H, K, V)`` in the
        compute dtype, or ``None`` unless ``output_final_state``.
    """
    B, T, H, K, V = check_sequence(
        q, k, v, initial_state, per_channel={"g": g}, segment_ids=segment_ids
    )
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two; got {chunk_size}")
    if check_log_decay("g", g):
        # A -inf (reset) makes exp(G_i - G_j) = exp(-inf + inf) NaN in the chunked maths; the
        # loop is exact there (decay 0), and resets are rare.
        return recurrent_gla(
            q, k, v, g, scale, initial_state, output_final_state, segment_ids=segment_ids
        )
    scale = K**-0.5 if scale is None else scale
    if use_fla(q):
        return fla_chunk_recurrence(
            "gla", (q, k, v, g), scale, initial_state, output_final_state, segment_ids
        )
    dtype = compute_dtype(q.dtype)
    C = effective_chunk_size(T, chunk_size)
    # (B, H, N, C, F) chunks; G is the log decay accumulated from the chunk start (inclusive).
    qc = to_chunks(q.to(dtype) * scale, C)
    kc = to_chunks(k.to(dtype), C)
    vc = to_chunks(v.to(dtype), C)
    G = to_chunks(g.to(dtype), C).cumsum(dim=3)
    G_last = G[:, :, :, -1]  # (B, H, N, K): log decay across the whole chunk
    segments = None if segment_ids is None else chunk_segments(segment_ids, C)

    # Inter-chunk part. The state entering chunk n reaches position i decayed by exp(G_i); the
    # chunk's own contribution to the state it hands on is sum_j exp(G_last - G_j) k_j v_j^T.
    q_from_start = qc * G.exp()
    k_to_end = kc * (G_last.unsqueeze(3) - G).exp()
    chunk_decay = G_last.exp().unsqueeze(-1)  # (B, H, N, K, 1)
    q_inter = q_from_start
    if segments is not None:
        q_inter = q_from_start * segments.sees_state
        k_to_end = k_to_end * segments.to_state
        chunk_decay = chunk_decay * segments.carries_state
    chunk_updates = k_to_end.transpose(-1, -2) @ vc  # (B, H, N, K, V)
    state = (
        q.new_zeros(B, H, K, V, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    )
    states_before = []
    # unbind once: indexing inside the loop would make autograd allocate a full-size zero
    # gradient per chunk.
    for decay, update in zip(chunk_decay.unbind(dim=2), chunk_updates.unbind(dim=2), strict=True):
        states_before.append(state)
        state = decay * state + update
    o = q_inter @ torch.stack(states_before, dim=2)
    same_document = None if segments is None else segments.same_document
    # Inside torch.compile the overflow-free form always runs: choosing by the data needs the host
    # (a graph break), and torch.cond cannot yet differentiate two branches whose gradients are
    # laid out differently.
    if not torch.compiler.is_compiling() and G_last.min() > -_DENSE_MAX_CHUNK_DECAY[dtype]:
        o = o + _dense_intra_chunk_output(q_from_start, kc, vc, G, same_document)
    else:
        o = o + _intra_chunk_output(qc, kc, vc, G, same_document)
    return from_chunks(o, T).to(v.dtype), state if output_final_state else None


def _dense_intra_chunk_output(
    q_from_start: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    G: torch.Tensor,
    same_document: torch.Tensor | None = None,
) -> torch.Tensor:
    """``o_i = sum_{j <= i, same document} (q_i * exp(G_i - G_j)) . k_j  v_j`` by one matmul.

    exp(G_i - G_j) = exp(G_i) * exp(-G_j), with exp(-G) at most exp(limit) (finite) and exp(G) at
    least exp(-limit) (no underflow) for chunks within ``_DENSE_MAX_CHUNK_DECAY``.

    Args:
        q_from_start: ``(..., C, K)`` scaled queries times exp(G).
        k, G: ``(..., C, K)`` keys and in-chunk cumulative log decays.
        v: ``(..., C, V)`` values.
        same_document: ``(..., C, C)`` bool pairs in one packed document, or None (all pairs).

    Returns:
        ``(..., C, V)`` the intra-chunk outputs.
    """
    scores = (q_from_start @ (k * (-G).exp()).transpose(-1, -2)).tril()
    if same_document is not None:
        scores = scores * same_document
    return scores @ v


def _intra_chunk_output(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    G: torch.Tensor,
    same_document: torch.Tensor | None = None,
) -> torch.Tensor:
    """``o_i = sum_{j <= i} (q_i * exp(G_i - G_j)) . k_j  v_j`` within each chunk, overflow-free.

    The usual matmul form ``(q e^G)(k e^-G)^T`` overflows once a chunk's decay passes ~-88 (fp32).
    Instead the chunk is split as a binary tree: at each level, every block of 2s positions has
    its later half (queries i) attend to its earlier half (keys j) with one small matmul, using
    the reference point r = G at the first position of the later half. Since G only decreases,
    G_i - r <= 0 and r - G_j <= 0, so both exponentials lie in [0, 1] and the product
    exp(G_i - r) exp(r - G_j) = exp(G_i - G_j) is exact; strong decays just underflow to 0.
    Every pair j < i is covered once (at the level of the highest bit where i and j differ), the
    diagonal j = i has no decay. Flops are about half of one dense C x C matmul.

    Args:
        q, k, G: ``(..., C, K)`` scaled queries, keys and in-chunk cumulative log decays.
        v: ``(..., C, V)`` values.
        same_document: ``(..., C, C)`` bool (broadcasting over q's leading dims), pairs i, j in
            one packed document, or None (all pairs).

    Returns:
        ``(..., C, V)`` the intra-chunk outputs.
    """
    C = q.shape[-2]
    out = (q * k).sum(-1, keepdim=True) * v
    size = 1  # half-block size s at the current level
    while size < C:
        blocks = (*q.shape[:-2], C // (2 * size), 2, size)
        qb, kb, Gb = (x.reshape(*blocks, x.shape[-1]) for x in (q, k, G))
        vb = v.reshape(*blocks, v.shape[-1])
        ref = Gb[..., 1, :1, :]  # (..., P, 1, K)
        q_late = qb[..., 1, :, :] * (Gb[..., 1, :, :] - ref).exp()
        k_early = kb[..., 0, :, :] * (ref - Gb[..., 0, :, :]).exp()
        v_early = vb[..., 0, :, :]
        if same_document is not None:
            # Rows of the later halves against columns of the earlier halves: (..., P, s, s).
            pairs = same_document.unflatten(-2, (C // (2 * size), 2, size))[..., 1, :, :]
            mask = pairs.unflatten(-1, (C // (2 * size), 2, size))[..., 0, :]
            mask = mask.diagonal(dim1=-4, dim2=-2).movedim(-1, -3)
            scores = (q_late @ k_early.transpose(-1, -2)) * mask
            late_out = scores @ v_early
        elif size <= 4:
            # Tiny blocks: broadcasting beats tens of thousands of 4x4 matmuls.
            scores = (q_late.unsqueeze(-2) * k_early.unsqueeze(-3)).sum(-1)
            late_out = (scores.unsqueeze(-1) * v_early.unsqueeze(-3)).sum(-2)
        else:
            late_out = (q_late @ k_early.transpose(-1, -2)) @ v_early
        # In place into the later halves (autograd handles it: nothing saved `out` itself).
        out.view(*blocks, out.shape[-1])[..., 1, :, :] += late_out
        size *= 2
    return out
