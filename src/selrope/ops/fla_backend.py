"""flash-linear-attention (fla) kernels as the CUDA backend of ``chunk_gla``, ``path_attention``,
``chunk_gated_delta_rule`` and ``causal_depthwise_conv``.

fla (the ``fla-core`` package, the ``gpu`` extra) is the field's Triton kernel library for linear
recurrences. The PyTorch forms in this package stay the reference and the CPU path; each op asks
``use_fla`` on every call, from its tensors: CUDA, not float64 (fla computes in float32 with
bf16/fp16/fp32 inputs), fla importable, and ``SELROPE_FLA=1``. Never decided at import. The switch
is opt-in until tests/ops/test_fla_backend.py has passed on a GPU (its first run there was cut
short by fla's kernel compilation time).

Conventions translated here, once:

- Packed documents. selrope gives ``segment_ids`` ``(B, T)``; fla takes one row ``(1, B*T)`` with
  ``cu_seqlens`` over every document of every row. The row's initial state belongs to its first
  document, the state handed back is its last document's.
- States. fla returns float32 states (selrope's compute dtype for non-float64 inputs); the conv
  state is fla's ``(N, C, W)`` window whose last W-1 columns are selrope's ``(B, C, W-1)`` cache.
- Chunk size. fla chooses its own (64); ``chunk_size`` changes only round-off in the PyTorch form.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import NamedTuple

import torch

from selrope.ops.segments import segment_starts

FLA_SWITCH = "SELROPE_FLA"  # "1": fla's kernels on CUDA


@functools.cache
def fla_available() -> bool:
    """Whether the fla kernels can be imported (``pip install selrope[gpu]``)."""
    return importlib.util.find_spec("fla") is not None


def use_fla(x: torch.Tensor) -> bool:
    """True when the call with tensor ``x`` should run fla's kernels (see the module docstring)."""
    return (
        x.is_cuda
        and x.dtype != torch.float64
        and os.environ.get(FLA_SWITCH) == "1"
        and fla_available()
    )


class PackedRows(NamedTuple):
    """Where the documents of a ``(B, T)`` batch sit once its rows are laid end to end.

    cu_seqlens: ``(N+1,)`` int64 document boundaries in the flattened ``B*T`` tokens.
    first_document: ``(B,)`` index (among the N) of each row's first document.
    last_document: ``(B,)`` index of each row's last document.
    """

    cu_seqlens: torch.Tensor
    first_document: torch.Tensor
    last_document: torch.Tensor


def pack_rows(segment_ids: torch.Tensor) -> PackedRows:
    """``segment_ids`` ``(B, T)`` -> the documents of all rows as one varlen sequence."""
    B, T = segment_ids.shape
    starts = segment_starts(segment_ids)
    flat_starts = starts.flatten().nonzero().squeeze(1)
    end = torch.full((1,), B * T, dtype=torch.long, device=segment_ids.device)
    cu_seqlens = torch.cat([flat_starts, end])
    per_row = starts.sum(dim=1)
    last_document = per_row.cumsum(dim=0) - 1
    return PackedRows(cu_seqlens, last_document - per_row + 1, last_document)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``(B, T, ...)`` -> ``(1, B*T, ...)``."""
    return x.reshape(1, x.shape[0] * x.shape[1], *x.shape[2:])


def _per_document_state(
    initial_state: torch.Tensor | None, rows: PackedRows | None
) -> torch.Tensor | None:
    """Row states ``(B, ...)`` -> document states ``(N, ...)`` (zeros after each row's first)."""
    if initial_state is None or rows is None:
        return initial_state
    N = rows.cu_seqlens.numel() - 1
    zeros = initial_state.new_zeros(N, *initial_state.shape[1:])
    return zeros.index_copy(0, rows.first_document, initial_state)


def _per_row_state(state: torch.Tensor | None, rows: PackedRows | None) -> torch.Tensor | None:
    """Document states ``(N, ...)`` -> each row's last document's state ``(B, ...)``."""
    if state is None or rows is None:
        return state
    return state.index_select(0, rows.last_document)


# op -> (fla module, its chunked kernel, the dtype its log decays need; None: as given)
_RECURRENCES = {
    "gla": ("fla.ops.gla", "chunk_gla", None),
    "gated_delta_rule": ("fla.ops.gated_delta_rule", "chunk_gated_delta_rule", torch.float32),
}


def fla_chunk_recurrence(
    op: str,
    sequences: tuple[torch.Tensor, ...],
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    segment_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``chunk_gla`` (op "gla") or ``chunk_gated_delta_rule`` (op "gated_delta_rule") on fla's
    chunked kernel, with selrope's packed rows, initial and final states translated.

    Args:
        op: a key of ``_RECURRENCES``.
        sequences: the op's per-token inputs in its argument order, ``(q, k, v, g, ...)``, each
            ``(B, T, H, ...)`` (validated by the op). q and k are used as given (fla's in-kernel
            l2 norm stays off: the Gated DeltaNet layer normalises them).
        scale, initial_state ``(B, H, K, V)`` or None, output_final_state, segment_ids
            ``(B, T)`` or None: as for the op.

    Returns:
        ``(o (B, T, H, V) in v's dtype, final state (B, H, K, V) float32 or None)``.
    """
    module, name, decay_dtype = _RECURRENCES[op]
    kernel = getattr(importlib.import_module(module), name)
    q, k, v, g, *rest = sequences
    B, T = q.shape[:2]
    # fla's matmuls need one dtype (autocast may mix them)
    g = g if decay_dtype is None else g.to(decay_dtype)
    sequences = (q.to(v.dtype), k.to(v.dtype), v, g, *(x.to(v.dtype) for x in rest))
    rows = None if segment_ids is None else pack_rows(segment_ids)
    if rows is not None:
        sequences = tuple(_flat(x) for x in sequences)
    h0 = _per_document_state(initial_state, rows)
    o, state = kernel(
        *sequences,
        scale=scale,
        initial_state=None if h0 is None else h0.float(),
        output_final_state=output_final_state,
        cu_seqlens=None if rows is None else rows.cu_seqlens,
    )
    state = _per_row_state(state, rows)
    return o.reshape(B, T, *o.shape[2:]).to(v.dtype), None if state is None else state.float()


def fla_causal_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    cache: torch.Tensor | None,
    activation: str | None,
    segment_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``causal_depthwise_conv`` on fla's kernel: x ``(B, T, C)``, weight ``(C, W)``, cache
    ``(B, C, W-1)`` or None -> ``(y (B, T, C), new_cache (B, C, W-1))`` (validated there)."""
    from fla.modules.causal_conv1d import causal_conv1d

    B, T, C = x.shape
    rows = None if segment_ids is None else pack_rows(segment_ids)
    window = None if cache is None else torch.nn.functional.pad(cache.to(x.dtype), (1, 0))
    y, state = causal_conv1d(
        _flat(x) if rows is not None else x,
        weight.to(x.dtype),
        initial_state=_per_document_state(window, rows),
        output_final_state=True,
        activation=activation,
        cu_seqlens=None if rows is None else rows.cu_seqlens,
    )
    new_cache = _per_row_state(state, rows)[:, :, 1:]
    return y.reshape(B, T, C), new_cache.to(x.dtype).contiguous()


def fla_path_attention(
    sequences: tuple[torch.Tensor, ...],
    g: torch.Tensor | None,
    scale: float,
    segment_ids: torch.Tensor | None,
) -> torch.Tensor:
    """``path_attention`` on fla's ``parallel_path_attn`` kernel: ``sequences`` are its
    ``(q, k, v, w, beta)``; arguments and returns as there (validated there; head dims 16, 32 or
    64). fla scales the forget bias together with the
    scores, ``scale * (q^T P k + F_i - F_j)``; selrope adds it unscaled (as FoX), so the gates go
    in divided by ``scale``. Not yet run on a GPU in this project."""
    from fla.ops.path_attn import parallel_path_attn

    q, k, v, w, beta = sequences
    B, T = q.shape[:2]
    rows = None if segment_ids is None else pack_rows(segment_ids)
    # fla's matmuls need one dtype (autocast may mix them); its gate cumulative sum is float32
    tensors = [q.to(v.dtype), k.to(v.dtype), v, w.to(v.dtype), beta.to(v.dtype)]
    gates = None if g is None else g.float() / scale
    if rows is not None:
        tensors = [_flat(x) for x in tensors]
        gates = None if gates is None else _flat(gates)
    o, _ = parallel_path_attn(
        *tensors,
        g=gates,
        scale=scale,
        cu_seqlens=None if rows is None else rows.cu_seqlens,
    )
    return o.reshape(B, T, *o.shape[2:]).to(q.dtype)
