"""PaTH attention (Yang et al. 2025, arXiv 2505.16381) in layout ``(B, T, H, K)``.

Causal softmax attention whose query-key interaction passes through data-dependent
Householder-like transforms ``H_t = I - beta_t w_t w_t^T`` of the tokens after the key, up to and
including the query:

    s_ij = scale * q_i^T H_i H_{i-1} ... H_{j+1} k_j  (+ F_i - F_j with a forget gate),  j <= i,

followed by a causal softmax over j. ``w_t`` must be unit vectors: the caller l2-normalises them
(the paper's layer: a low-rank projection, a short convolution, an l2 norm); nothing here checks
or normalises them. ``beta_t`` lies in [0, 2] (the paper's ``2 sigmoid(.)``), so ``H_t`` has the
eigenvalue ``1 - beta_t`` in [-1, 1] along ``w_t`` and 1 elsewhere: a product of them never grows
a vector. A key's own transform never acts on it (j + 1 onwards), so the first token's ``w, beta``
never matter. With ``g`` (the log forget gate of FoX, ``<= 0``, ``(B, T, H)``) this is PaTH-FoX:
``F_t = sum_{l <= t} g_l`` and the score gets ``F_i - F_j``, unscaled as in
``ops.forgetting_attention`` (fla's kernel scales it with the scores; its call below divides g by
the scale to match).

- ``reference_path_attention``: float64, a loop over queries that multiplies the K x K matrices
  ``H_i ... H_{j+1}`` out explicitly, one key at a time. For tests.
- ``path_attention``: blockwise. In each chunk of C tokens the products of the chunk's transforms
  are held in the UT (WY) form ``H_r ... H_1 = I - W_{<=r}^T A_{<=r}``, ``A = (I + L)^-1 diag(beta)
  W`` with ``L = strictly_lower(diag(beta) W W^T)`` (one triangular solve per chunk); scores inside
  a chunk come from the same solve, queries are carried back to their chunk's start and keys to
  their chunk's end, and a loop over chunk distances carries the queries back through whole chunks
  (``r <- r - (r W^T) A``). Memory: the ``(B, H, T, T)`` scores (as an explicit softmax needs) plus
  ``T^2 K / (2C)`` carried queries per head; nothing is ``T^2 K^2``. Equal to the reference to
  float64 round-off, gradients by autograd. On CUDA with ``SELROPE_FLA=1`` and fla installed it
  calls fla's ``parallel_path_attn`` instead (``ops.fla_backend``; untested on this project's
  CPU-only machines; head dims 16, 32 and 64 only, other sizes stay on the PyTorch form).
- ``path_attention_with_cache``: new tokens over a cache; the cache keeps every key carried through
  all transforms after it (``PathAttentionCache``), so a decoding step applies its own rank-one
  ``H_t`` to the cached keys (``k <- k - beta (w . k) w``), appends its key and attends. Prefill +
  steps == one parallel pass.

Packed documents (``segment_ids``, see ``ops.segments``): a token attends only to earlier tokens
of its own document; for those pairs every transform between key and query belongs to that
document, so the products restart with each document.

Dtypes: the maths runs in float64 for float64 q and in float32 otherwise (autocast off);
outputs are in q's dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from selrope.common.dtypes import compute_dtype
from selrope.ops.attention_common import attention_mask, check_key_visible, reference_softmax
from selrope.ops.fla_backend import fla_path_attention, use_fla
from selrope.ops.forgetting_attention import cumulative_log_forget
from selrope.ops.recurrence import check_sequence, check_shape, effective_chunk_size, to_chunks

# Head dims fla's PaTH kernel accepts.
_FLA_HEAD_DIMS = (16, 32, 64)


class PathAttentionCache(NamedTuple):
    """What PaTH attention keeps of P earlier tokens; immutable, each call returns a new one.

    keys: ``(B, P, H, K)`` every cached key carried through the transforms of all later cached
        tokens (``H_{P-1} ... H_{j+1} k_j``), in the compute dtype (float64 for float64 q, else
        float32: the rank-one updates of each decoding step accumulate there).
    values: ``(B, P, H, V)`` the values, in v's dtype.
    cumulative: ``(B, P, H)`` F of the cached tokens (compute dtype) with a forget gate, else None.
    """

    keys: torch.Tensor
    values: torch.Tensor
    cumulative: torch.Tensor | None


def _check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    segment_ids: torch.Tensor | None,
) -> tuple[int, ...]:
    """Validate PaTH's inputs once; return ``(B, T, H, K, V)``."""
    per_head = {"beta": beta} if g is None else {"beta": beta, "g": g}
    dims = check_sequence(q, k, v, per_channel={"w": w}, per_head=per_head, segment_ids=segment_ids)
    in_range = (beta >= 0) & (beta <= 2)
    gates_ok = None if g is None else (g <= 0) & torch.isfinite(g)
    # As ops.recurrence.check_log_decay: values are read on the host only for CPU tensors outside
    # torch.compile; elsewhere an on-device assertion (no host sync, no graph break).
    if beta.device.type != "cpu" or torch.compiler.is_compiling():
        torch._assert_async(in_range.all(), "beta must lie in [0, 2]")
        if gates_ok is not None:
            torch._assert_async(gates_ok.all(), "g must hold finite log forget gates <= 0")
        return dims
    if not bool(in_range.all()):
        bad = beta[~in_range].flatten()[0].item()
        raise ValueError(f"beta must lie in [0, 2] (2 sigmoid(.) in the paper); got {bad}")
    if gates_ok is not None and not bool(gates_ok.all()):
        bad = g[~gates_ok].flatten()[0].item()
        raise ValueError(f"g must hold finite log forget gates <= 0; got {bad}")
    return dims


def reference_path_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """PaTH attention written out one query at a time in float64, the products built explicitly.

    For query i the keys are visited from j = i down to 0 while the K x K product
    ``H_i ... H_{j+1}`` grows by one factor on the right per key, and the forget bias by one gate.

    Args:
        q: ``(B, T, H, K)`` queries.
        k: ``(B, T, H, K)`` keys.
        v: ``(B, T, H, V)`` values.
        w: ``(B, T, H, K)`` unit Householder directions (l2-normalised by the caller).
        beta: ``(B, T, H)`` strengths in [0, 2].
        g: ``(B, T, H)`` log forget gates ``<= 0`` (PaTH-FoX), or None.
        scale: score scale; default ``K ** -0.5``.
        segment_ids: ``(B, T)`` integer ids of packed documents, or None (one document per row).

    Returns:
        ``(B, T, H, V)`` outputs, cast back to q's dtype.
    """
    B, T, H, K, _ = _check_inputs(q, k, v, w, beta, g, segment_ids)
    scale = K**-0.5 if scale is None else scale
    q64, k64, w64, beta64 = (x.double() for x in (q, k, w, beta))
    gates = q64.new_zeros(B, T, H) if g is None else g.double()
    eye = torch.eye(K, dtype=torch.float64, device=q.device)
    householder = eye - beta64[..., None, None] * w64[..., :, None] * w64[..., None, :]

    # Keys outside the query's document are masked (by reference_softmax), so every product
    # used holds only transforms of that document.
    def query_scores(i: int, _: torch.Tensor) -> torch.Tensor:
        product = eye.expand(B, H, K, K)  # H_i ... H_{j+1}: empty for j = i
        bias = q64.new_zeros(B, H)
        scores = []
        for j in range(i, -1, -1):
            bilinear = torch.einsum("bhk,bhkl,bhl->bh", q64[:, i], product, k64[:, j])
            scores.append(scale * bilinear + bias)
            product = product @ householder[:, j]
            bias = bias + gates[:, j]
        return torch.stack(scores[::-1], dim=1)  # (B, i + 1, H), keys 0..i

    return reference_softmax(q, v, segment_ids, query_scores)


def path_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> torch.Tensor:
    """PaTH attention of all T tokens at once (blockwise UT form, or fla's kernel on CUDA).

    Args:
        q: ``(B, T, H, K)`` queries.
        k: ``(B, T, H, K)`` keys.
        v: ``(B, T, H, V)`` values.
        w: ``(B, T, H, K)`` unit Householder directions (l2-normalised by the caller).
        beta: ``(B, T, H)`` strengths in [0, 2].
        g: ``(B, T, H)`` log forget gates ``<= 0`` (PaTH-FoX), or None.
        scale: score scale; default ``K ** -0.5``.
        segment_ids: ``(B, T)`` integer ids of packed documents, or None (one document per row).
        chunk_size: C of the PyTorch form, a power of two; T need not be a multiple of it. It
            changes round-off only (and is unused by fla's kernel, which picks its own).

    Returns:
        ``(B, T, H, V)`` outputs in q's dtype.
    """
    _, _, _, K, V = _check_inputs(q, k, v, w, beta, g, segment_ids)
    _check_chunk_size(chunk_size)
    scale = K**-0.5 if scale is None else scale
    if use_fla(q) and K in _FLA_HEAD_DIMS and V in _FLA_HEAD_DIMS:
        return fla_path_attention((q, k, v, w, beta), g, scale, segment_ids)
    o, _ = _path_attention(q, k, v, w, beta, g, None, scale, segment_ids, chunk_size, False)
    return o


def path_attention_with_cache(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    cache: PathAttentionCache | None = None,
    scale: float | None = None,
    segment_ids: torch.Tensor | None = None,
    chunk_size: int = 64,
    cache_visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, PathAttentionCache]:
    """PaTH attention of T new tokens over P cached tokens plus themselves.

    New token i sits at position P + i: its score on cached key j is
    ``q_i^T H_{P+i} ... H_P kc_j`` with ``kc_j`` the cached (already carried) key. Covers a prompt
    prefill (no cache), a multi-token chunk appended to a cache and one-token decoding steps alike;
    always the PyTorch form.

    Args:
        q, k, w: ``(B, T, H, K)`` queries, keys and unit directions of the new tokens.
        v: ``(B, T, H, V)`` values of the new tokens.
        beta: ``(B, T, H)`` strengths in [0, 2].
        g: ``(B, T, H)`` log forget gates ``<= 0``, or None; given or not as for the cache.
        cache: the ``PathAttentionCache`` of the earlier tokens, or None (P = 0).
        scale: score scale; default ``K ** -0.5``.
        segment_ids: ``(B, T)`` integer ids of packed documents among the new tokens, or None.
            The cached tokens count as the row's first document; later documents see only
            themselves (the returned cache still holds every key, as ``ops.attention``'s does).
        chunk_size: C of the blockwise form, a power of two.
        cache_visible: ``(B, P)`` bool, the cached keys that first document holds (never the
            pads of a padded batch; ``ops.attention_common.visible_keys``), or None (all).

    Returns:
        ``(o, new_cache)``: o ``(B, T, H, V)`` in q's dtype, new_cache holding P + T tokens, with
        every key carried through the new tokens' transforms (the cache passed in is not modified).
    """
    B, T, H, K, V = _check_inputs(q, k, v, w, beta, g, segment_ids)
    _check_chunk_size(chunk_size)
    if cache is not None:
        _check_cache(cache, q, v, g)
    check_key_visible(cache_visible, B, 0 if cache is None else cache.keys.shape[1])
    scale = K**-0.5 if scale is None else scale
    o, new_cache = _path_attention(
        q, k, v, w, beta, g, cache, scale, segment_ids, chunk_size, True, cache_visible
    )
    return o, new_cache


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size must be a power of two; got {chunk_size!r}")


def _check_cache(
    cache: PathAttentionCache, q: torch.Tensor, v: torch.Tensor, g: torch.Tensor | None
) -> None:
    """Raise a one-line ``ValueError`` unless ``cache`` fits the new tokens' q, v and g."""
    if not isinstance(cache, PathAttentionCache):
        raise ValueError(f"cache must be a PathAttentionCache or None; got {type(cache).__name__}")
    B, _, H, K = q.shape
    dtype = compute_dtype(q.dtype)
    P = cache.keys.shape[1] if cache.keys.dim() == 4 else -1
    check_shape("cache.keys", cache.keys, (B, P, H, K), "(B, P, H, K)")
    check_shape("cache.values", cache.values, (B, P, H, v.shape[-1]), "(B, P, H, V)")
    if cache.keys.dtype != dtype or cache.values.dtype != v.dtype:
        raise ValueError(
            f"cache.keys must be {dtype} and cache.values {v.dtype} for these inputs; "
            f"got {cache.keys.dtype}, {cache.values.dtype}"
        )
    if (g is None) != (cache.cumulative is None):
        raise ValueError(
            "g and cache.cumulative must be given together (a forget gate in every call) or "
            "both be None"
        )
    if cache.cumulative is not None:
        check_shape("cache.cumulative", cache.cumulative, (B, P, H), "(B, P, H)")
        if cache.cumulative.dtype != dtype:
            raise ValueError(
                f"cache.cumulative must be {dtype} for these inputs; got {cache.cumulative.dtype}"
            )


def _path_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None,
    cache: PathAttentionCache | None,
    scale: float,
    segment_ids: torch.Tensor | None,
    chunk_size: int,
    keep_cache: bool,
    cache_visible: torch.Tensor | None = None,
) -> tuple[torch.Tensor, PathAttentionCache | None]:
    """The PyTorch form behind ``path_attention`` and ``path_attention_with_cache`` (checked
    inputs): scores, forget bias, mask, an explicit softmax, and the new cache if asked."""
    B, T, H, _ = q.shape
    P = 0 if cache is None else cache.keys.shape[1]
    dtype, out_dtype = compute_dtype(q.dtype), q.dtype
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, w, beta = (x.to(dtype) for x in (q, k, w, beta))
        prefix = None if cache is None else cache.keys
        scores, keys = _path_scores(q, k, w, beta, prefix, chunk_size, keep_cache)
        scores = scale * scores
        cumulative = None
        if g is not None:
            last = cache.cumulative[:, -1] if cache is not None and P else None
            cumulative = cumulative_log_forget(g.to(dtype), last)
            if cache is not None:
                cumulative = torch.cat([cache.cumulative, cumulative], dim=1)
            new_part = cumulative[:, P:].transpose(1, 2)[..., :, None]
            scores = scores + (new_part - cumulative.transpose(1, 2)[..., None, :])
        allowed = attention_mask(T, P, segment_ids, q.device, cache_visible)
        weights = scores.masked_fill(~allowed, -torch.inf).softmax(dim=-1)
        values = v if cache is None else torch.cat([cache.values, v], dim=1)
        o = weights @ values.to(dtype).transpose(1, 2)
    o = o.transpose(1, 2).to(out_dtype)
    if not keep_cache:
        return o, None
    return o, PathAttentionCache(keys, values, cumulative)


def _path_scores(
    q: torch.Tensor,
    k: torch.Tensor,
    w: torch.Tensor,
    beta: torch.Tensor,
    prefix: torch.Tensor | None,
    chunk_size: int,
    keep_keys: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unscaled PaTH scores ``q_i^T H_i ... H_{j+1} k_j`` of T new tokens, blockwise.

    Per chunk of C tokens (local indices, rows of W are the w_t, "lower" = earlier):
    with ``U = I + strictly_lower(diag(beta) W W^T)``,

    - ``A = U^-1 diag(beta) W`` gives the products from the chunk start,
      ``H_r ... H_1 = I - W_{<=r}^T A_{<=r}``;
    - expanding ``H_i ... H_{j+1}`` over decreasing chains of indices in (j, i] gives the scores
      inside the chunk,
      ``q_i . k_j - sum_{s <= i, t > j} (q_i . w_s) [U^-1]_st beta_t (w_t . k_j)``, i.e.
      ``tril(Q K^T) - tril(Q W^T) U^-1 strictly_lower(diag(beta) W K^T)`` (one more solve);
    - the same two factors carry each query back to its chunk's start,
      ``(H_i ... H_1)^T q_i = q_i - tril(Q W^T) A``, and each key to its chunk's end,
      ``H_C ... H_{j+1} k_j = k_j - Y_j^T W`` with ``Y = U^-1 strictly_lower(diag(beta) W K^T)``.

    A query of chunk n scores a key of chunk m < n as ``r^T k_end`` once r, its carried form, has
    passed back through the whole chunks m+1 .. n-1 (``r <- r - (r W^T) A`` per chunk). The loop
    runs over the distance d = n - m for all chunks at once; a query carried back to position 0
    scores the prefix keys (a cache's, already carried up to the token before the first).

    Args:
        q, k, w: ``(B, T, H, K)`` in the compute dtype.
        beta: ``(B, T, H)`` in the compute dtype.
        prefix: ``(B, P, H, K)`` keys before the first token, carried up to it, or None (P = 0).
        chunk_size: C, a power of two.
        keep_keys: also return every key carried through all transforms after it.

    Returns:
        ``(scores, keys)``: scores ``(B, H, T, P + T)`` (entries of later keys are arbitrary:
        the caller masks them); keys ``(B, P + T, H, K)`` carried to the last token, or None.
    """
    B, T, H, K = q.shape
    P = 0 if prefix is None else prefix.shape[1]
    C = effective_chunk_size(T, chunk_size)
    # (B, H, N, C, K) chunks; the zero padding of the last one has w = 0, beta = 0 (H = I).
    qc, kc, wc = (to_chunks(x, C) for x in (q, k, w))
    bc = to_chunks(beta[..., None], C)
    N = qc.shape[2]
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    ut = eye + (bc * (wc @ wc.mT)).tril(-1)
    A = torch.linalg.solve_triangular(ut, bc * wc, upper=False, unitriangular=True)
    q_on_w = (qc @ wc.mT).tril()  # (q_i . w_s) for s <= i
    Y = torch.linalg.solve_triangular(
        ut, (bc * (wc @ kc.mT)).tril(-1), upper=False, unitriangular=True
    )
    blocks = [(qc @ kc.mT).tril() - q_on_w @ Y]  # distance 0: inside each chunk
    k_end = kc - Y.mT @ wc
    carried = qc - q_on_w @ A  # chunks 0..N-1, each back at its chunk's start
    at_start = []
    for d in range(1, N + 1):
        # carried holds chunks d-1 .. N-1, each back at the end of chunk n - d; chunk d-1 is at 0.
        if prefix is not None:
            at_start.append(carried[:, :, 0])
        carried = carried[:, :, 1:]
        if d == N:
            break
        blocks.append(carried @ k_end[:, :, : N - d].mT)  # query chunks n = d.., key chunks n - d
        if d < N - 1 or prefix is not None:
            carried = carried - (carried @ wc[:, :, : N - d].mT) @ A[:, :, : N - d]
    # Block (n, m) of the scores is blocks[n - m][m]; blocks after the query's are arbitrary.
    flat = torch.cat(blocks, dim=2)  # (B, H, N (N + 1) / 2, C, C)
    offsets = torch.tensor([d * N - d * (d - 1) // 2 for d in range(N)], device=q.device)
    n, m = torch.arange(N, device=q.device)[:, None], torch.arange(N, device=q.device)[None, :]
    index = torch.where(m <= n, offsets[(n - m).clamp(min=0)] + m, 0)
    scores = flat[:, :, index].transpose(3, 4).reshape(B, H, N * C, N * C)[:, :, :T, :T]
    if prefix is not None:
        queries_at_start = torch.stack(at_start, dim=2).reshape(B, H, N * C, K)[:, :, :T]
        scores = torch.cat([queries_at_start @ prefix.permute(0, 2, 3, 1), scores], dim=-1)
    if not keep_keys:
        return scores, None
    keys = q.new_zeros(B, H, 0, K) if prefix is None else prefix.transpose(1, 2)
    for chunk in range(N):  # carry the keys so far through chunk `chunk`, then add its own
        keys = keys - (keys @ A[:, :, chunk].mT) @ wc[:, :, chunk]
        keys = torch.cat([keys, k_end[:, :, chunk]], dim=2)
    return scores, keys[:, :, : P + T].transpose(1, 2)
