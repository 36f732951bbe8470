"""Gated linear attention (GLA): linear attention with a per-key-channel decay.

The recurrence, per batch element and head, with state ``S_t`` of shape ``(K, V)``::

    S_t = Diag(exp(g_t)) S_{t-1} + k_t v_t^T
    o_t = scale * S_t^T q_t

``g_t`` is the log decay (``<= 0``, one value per key channel), ``scale`` defaults to ``K**-0.5``.
Three forms with the same keyword signature:

- ``recurrent_gla``: a loop over time of ``gla_step``; the obviously-correct reference.
- ``chunk_gla``: chunked-parallel, for training and prefill.
- ``gla_step``: one token, for decoding.

Dtypes: the maths runs in float64 for float64 inputs and in float32 otherwise (bf16/fp16 inputs
are upcast); ``o`` is returned in ``v``'s dtype and the state in the compute dtype.
"""

from __future__ import annotations

import torch

from selrope.ops.recurrence import (
    check_sequence,
    check_shape,
    check_token,
    compute_dtype,
    effective_chunk_size,
    from_chunks,
    scan,
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
    B, H, K, V = check_token(q, k, v)
    check_shape("g", g, (B, H, K), "(B, H, K)")
    dtype = compute_dtype(q.dtype)
    if state is None:
        state = q.new_zeros(B, H, K, V, dtype=dtype)
    else:
        check_shape("state", state, (B, H, K, V), "(B, H, K, V)")
    scale = K**-0.5 if scale is None else scale
    out_dtype = v.dtype
    q, k, v, g, state = (x.to(dtype) for x in (q, k, v, g, state))
    new_state = g.exp().unsqueeze(-1) * state + k.unsqueeze(-1) * v.unsqueeze(-2)
    o = scale * torch.einsum("bhk,bhkv->bhv", q, new_state)
    return o.to(out_dtype), new_state


def recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
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

    Returns:
        ``(o, final_state)``: o ``(B, T, H, V)`` in v's dtype; final_state ``(B, H, K, V)`` in the
        compute dtype, or ``None`` unless ``output_final_state``.
    """
    check_sequence(q, k, v, initial_state, per_channel={"g": g})
    return scan(gla_step, (q, k, v, g), initial_state, scale, output_final_state)


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA in chunked-parallel form; equal to ``recurrent_gla`` up to round-off.

    Within a chunk the outputs come from batched matmuls; across chunks a short loop carries the
    state. When a chunk's accumulated decay is too strong for the dense intra-chunk matmul (see
    ``_DENSE_MAX_CHUNK_DECAY``), the call switches to ``_intra_chunk_output``, whose
    exponentials all have non-positive arguments, so any finite log decay (e.g. -20 per step)
    gives finite results, in float32 too. Differentiable by autograd.

    Args:
        q: ``(B, T, H, K)`` queries.
        k: ``(B, T, H, K)`` keys.
        v: ``(B, T, H, V)`` values.
        g: ``(B, T, H, K)`` log decays (``<= 0``, finite) per key channel.
        scale: query scale; default ``K ** -0.5``.
        initial_state: ``(B, H, K, V)`` state before the first token; ``None`` means zeros.
        output_final_state: whether to return the state after the last token.
        chunk_size: chunk length C, a power of two (64 is fastest on CPU). T need not be a
            multiple of it.

    Returns:
        ``(o, final_state)``: o ``(B, T, H, V)`` in v's dtype; final_state ``(B, H, K, V)`` in the
        compute dtype, or ``None`` unless ``output_final_state``.
    """
    B, T, H, K, V = check_sequence(q, k, v, initial_state, per_channel={"g": g})
    if chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two; got {chunk_size}")
    dtype = compute_dtype(q.dtype)
    scale = K**-0.5 if scale is None else scale
    C = effective_chunk_size(T, chunk_size)
    # (B, H, N, C, F) chunks; G is the log decay accumulated from the chunk start (inclusive).
    qc = to_chunks(q.to(dtype) * scale, C)
    kc = to_chunks(k.to(dtype), C)
    vc = to_chunks(v.to(dtype), C)
    G = to_chunks(g.to(dtype), C).cumsum(dim=3)
    G_last = G[:, :, :, -1]  # (B, H, N, K): log decay across the whole chunk

    # Inter-chunk part. The state entering chunk n reaches position i decayed by exp(G_i); the
    # chunk's own contribution to the state it hands on is sum_j exp(G_last - G_j) k_j v_j^T.
    q_from_start = qc * G.exp()
    k_to_end = kc * (G_last.unsqueeze(3) - G).exp()
    chunk_updates = k_to_end.transpose(-1, -2) @ vc  # (B, H, N, K, V)
    state = (
        q.new_zeros(B, H, K, V, dtype=dtype) if initial_state is None else initial_state.to(dtype)
    )
    states_before = []
    # unbind once: indexing inside the loop would make autograd allocate a full-size zero
    # gradient per chunk.
    for decay, update in zip(
        G_last.exp().unsqueeze(-1).unbind(dim=2), chunk_updates.unbind(dim=2), strict=True
    ):
        states_before.append(state)
        state = decay * state + update
    o = q_from_start @ torch.stack(states_before, dim=2)
    if G_last.detach().min() > -_DENSE_MAX_CHUNK_DECAY[dtype]:
        # Common case, one dense matmul: exp(G_i - G_j) = exp(G_i) * exp(-G_j), with exp(-G) at
        # most exp(limit) (finite) and exp(G) at least exp(-limit) (no underflow).
        scores = q_from_start @ (kc * (-G).exp()).transpose(-1, -2)
        o = o + scores.tril() @ vc
    else:
        o = o + _intra_chunk_output(qc, kc, vc, G)
    return from_chunks(o, T).to(v.dtype), state if output_final_state else None


def _intra_chunk_output(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, G: torch.Tensor
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
        if size <= 4:
            # Tiny blocks: broadcasting beats tens of thousands of 4x4 matmuls.
            scores = (q_late.unsqueeze(-2) * k_early.unsqueeze(-3)).sum(-1)
            late_out = (scores.unsqueeze(-1) * v_early.unsqueeze(-3)).sum(-2)
        else:
            late_out = (q_late @ k_early.transpose(-1, -2)) @ v_early
        # In place into the later halves (autograd handles it: nothing saved `out` itself).
        out.view(*blocks, out.shape[-1])[..., 1, :, :] += late_out
        size *= 2
    return out
