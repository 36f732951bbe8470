"""Gated delta rule (Gated DeltaNet): a delta-rule state with a scalar per-head decay.

The recurrence, per batch element and head, with state ``S_t`` of shape ``(K, V)``::

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t = scale * S_t^T q_t

``g_t`` is a scalar log decay (``<= 0``) per head, ``beta_t`` in (0, 1) the write strength,
``scale`` defaults to ``K**-0.5``. q and k are used as given: they are NOT l2-normalised here (the
Gated DeltaNet layer normalises them; the delta rule is only a stable projection for unit keys).
Three forms with the same argument order ``(q, k, v, g, beta)``:

- ``recurrent_gated_delta_rule``: a loop over time of ``gated_delta_rule_step``; the reference.
- ``chunk_gated_delta_rule``: chunked WY/UT form, for training and prefill.
- ``gated_delta_rule_step``: one token, for decoding.

Dtypes: the maths runs in float64 for float64 inputs and in float32 otherwise; ``o`` is returned
in ``v``'s dtype and the state in the compute dtype.
"""

from __future__ import annotations

import torch

from selrope.common import check_positive_int
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


def gated_delta_rule_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    state: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: ``S' = exp(g) (I - beta k k^T) S + beta k v^T``, ``o = scale * S'^T q``.

    Args:
        q: ``(B, H, K)`` query of the current token.
        k: ``(B, H, K)`` key (not normalised here).
        v: ``(B, H, V)`` value.
        g: ``(B, H)`` log decay (``<= 0``) per head.
        beta: ``(B, H)`` write strength in (0, 1).
        state: ``(B, H, K, V)`` state before this token; ``None`` means zeros.
        scale: query scale; default ``K ** -0.5``.

    Returns:
        ``(o, new_state)``: o ``(B, H, V)`` in v's dtype, new_state ``(B, H, K, V)`` in the compute
        dtype (float64 for float64 inputs, else float32). ``state`` is not modified.
    """
    B, H, _, _ = check_token(q, k, v)
    check_shape("g", g, (B, H), "(B, H)")
    check_shape("beta", beta, (B, H), "(B, H)")
    check_log_decay("g", g, exact_resets=True)
    state, scale = step_state(q, v, state, scale)
    q, k, vc, g, beta = (x.to(state.dtype) for x in (q, k, v, g, beta))
    decayed = g.exp()[..., None, None] * state
    # Delta rule: replace what the decayed state recalls for k by v, at rate beta.
    recalled = torch.einsum("bhk,bhkv->bhv", k, decayed)
    new_state = decayed + (beta.unsqueeze(-1) * k).unsqueeze(-1) * (vc - recalled).unsqueeze(-2)
    return step_output(q, new_state, scale, v.dtype)


def recurrent_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule by a loop over time (``gated_delta_rule_step`` per token): the reference.

    Args:
        q: ``(B, T, H, K)`` queries.
        k: ``(B, T, H, K)`` keys (not normalised here).
        v: ``(B, T, H, V)`` values.
        g: ``(B, T, H)`` log decays (``<= 0``) per head.
        beta: ``(B, T, H)`` write strengths in (0, 1).
        scale: query scale; default ``K ** -0.5``.
        initial_state: ``(B, H, K, V)`` state before the first token; ``None`` means zeros.
        output_final_state: whether to return the state after the last token.
        segment_ids: ``(B, T)`` integer ids of packed documents (see ``ops.segments``), or None:
            the state restarts from zero at every document start after the first.

    Returns:
        ``(o, final_state)``: o ``(B, T, H, V)`` in v's dtype; final_state ``(B, H, K, V)`` in the
        compute dtype, or ``None`` unless ``output_final_state``.
    """
    check_sequence(q, k, v, initial_state, per_head={"g": g, "beta": beta}, segment_ids=segment_ids)
    check_log_decay("g", g, exact_resets=True)
    sequences = (q, k, v, g, beta)
    return scan(
        gated_delta_rule_step, sequences, initial_state, scale, output_final_state, segment_ids
    )


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule in chunked WY/UT form; equal to the recurrent form up to round-off.

    On CUDA with the ``gpu`` extra, fla's Triton kernel runs instead (``ops.fla_backend``; same
    arguments, ``chunk_size`` then unused). Within a chunk of C tokens starting from state S, write
    the update as ``S_t = e^{g_t} S_{t-1} + k_t u_t^T`` with ``u_t = beta_t (v_t - e^{g_t} S_{t-1}^T
    k_t)``. Unrolling gives a unit lower-triangular system ``(I + A) U = beta V - beta e^{G} K S``
    with ``A_tj = beta_t e^{G_t - G_j} k_t . k_j`` (j < t) and G the in-chunk cumulative log decay.
    One batched ``solve_triangular`` over all chunks gives ``U = W_v - W_k S``; a short loop over
    chunks then carries S. All exponentials have non-positive arguments (pairwise decays are masked
    before ``exp``), so strong decays are safe. Packed documents (``segment_ids``) are masks in the
    same maths: pairs across documents leave the mask of A and of the intra-chunk scores, the
    entering state S reaches (in the right-hand side and the output) only the tokens before the
    chunk's first document start, only the chunk's last document writes the state it hands on, and a
    chunk holding a start does not carry S through. Differentiable by autograd.

    Args:
        q: ``(B, T, H, K)`` queries.
        k: ``(B, T, H, K)`` keys (not normalised here).
        v: ``(B, T, H, V)`` values.
        g: ``(B, T, H)`` log decays (``<= 0``) per head; a ``-inf`` (a hard reset) makes the call
            run the loop of ``recurrent_gated_delta_rule``, exact where the chunked maths is not.
        beta: ``(B, T, H)`` write strengths in (0, 1).
        scale: query scale; default ``K ** -0.5``.
        initial_state: ``(B, H, K, V)`` state before the first token; ``None`` means zeros.
        output_final_state: whether to return the state after the last token.
        chunk_size: chunk length C (64 is fastest on CPU); T need not be a multiple of it.
        segment_ids: ``(B, T)`` integer ids of packed documents (see ``ops.segments``), or None:
            the state restarts from zero at every document start after the first.

    Returns:
        ``(o, final_state)``: o ``(B, T, H, V)`` in v's dtype; final_state ``(B, H, K, V)`` in the
        compute dtype, or ``None`` unless ``output_final_state``.
    """
    B, T, H, K, V = check_sequence(
        q, k, v, initial_state, per_head={"g": g, "beta": beta}, segment_ids=segment_ids
    )
    check_positive_int("chunk_size", chunk_size)
    if check_log_decay("g", g):
        # A -inf (reset) makes in-chunk decay differences -inf - -inf = NaN; the loop is exact
        # there (decay 0), and resets are rare.
        return recurrent_gated_delta_rule(
            q, k, v, g, beta, scale, initial_state, output_final_state, segment_ids=segment_ids
        )
    scale = K**-0.5 if scale is None else scale
    if use_fla(q):
        return fla_chunk_recurrence(
            "gated_delta_rule",
            (q, k, v, g, beta),
            scale,
            initial_state,
            output_final_state,
            segment_ids,
        )
    dtype = compute_dtype(q.dtype)
    C = effective_chunk_size(T, chunk_size)
    qc = to_chunks(q.to(dtype) * scale, C)  # (B, H, N, C, K)
    kc = to_chunks(k.to(dtype), C)
    vc = to_chunks(v.to(dtype), C)
    G = to_chunks(g.to(dtype), C).cumsum(dim=3)  # (B, H, N, C)
    b = to_chunks(beta.to(dtype), C).unsqueeze(-1)  # (B, H, N, C, 1)

    segments = None if segment_ids is None else chunk_segments(segment_ids, C)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    if segments is not None:
        causal = causal & segments.same_document
    # Pairwise decays exp(G_t - G_j) for j <= t; masking before exp keeps every argument <= 0.
    pair_decay = torch.where(causal, G.unsqueeze(-1) - G.unsqueeze(-2), -torch.inf).exp()
    # solve_triangular(unitriangular=True) reads only the strictly lower part: I + A.
    A = b * (kc @ kc.transpose(-1, -2)) * pair_decay
    decay_from_start = G.exp().unsqueeze(-1)  # (B, H, N, C, 1): how the entering S reaches t
    if segments is not None:
        decay_from_start = decay_from_start * segments.sees_state
    rhs = torch.cat([b * vc, b * decay_from_start * kc], dim=-1)
    W = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)
    W_v, W_k = W.split([V, K], dim=-1)  # u = W_v - W_k S for the state S entering the chunk

    qk = (qc @ kc.transpose(-1, -2)) * pair_decay  # intra-chunk scores, causal incl. diagonal
    k_to_end = kc * (G[..., -1:] - G).exp().unsqueeze(-1)
    chunk_decay = G[..., -1].exp()[..., None, None]  # (B, H, N, 1, 1)
    if segments is not None:
        k_to_end = k_to_end * segments.to_state
        chunk_decay = chunk_decay * segments.carries_state
    state = (
        q.new_zeros(B, H, K, V, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    )
    states_before, updates = [], []
    # unbind once: indexing inside the loop would make autograd allocate full-size zero
    # gradients per chunk.
    for W_v_n, W_k_n, k_n, decay_n in zip(
        W_v.unbind(2), W_k.unbind(2), k_to_end.unbind(2), chunk_decay.unbind(2), strict=True
    ):
        states_before.append(state)
        u = W_v_n - W_k_n @ state
        updates.append(u)
        state = decay_n * state + k_n.transpose(-1, -2) @ u
    u = torch.stack(updates, dim=2)
    o = (qc * decay_from_start) @ torch.stack(states_before, dim=2) + qk @ u
    return from_chunks(o, T).to(v.dtype), state if output_final_state else None
