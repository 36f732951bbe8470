"""Plumbing shared by the recurrent ops: dtypes, input checks, chunking, the time loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from selrope.common import compute_dtype  # noqa: F401 - the ops' dtype rule, imported from here
from selrope.ops.segments import check_segment_ids, document_resets


def check_shape(name: str, x: torch.Tensor, expected: tuple[int, ...], layout: str) -> None:
    """Raise a ``ValueError`` naming ``name`` unless ``x`` is floating point with this shape."""
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape {layout} = {tuple(expected)}; got {tuple(x.shape)}"
        )


def check_sequence(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    per_channel: dict[str, torch.Tensor] | None = None,
    per_head: dict[str, torch.Tensor] | None = None,
    segment_ids: torch.Tensor | None = None,
) -> tuple[int, ...]:
    """Validate a sequence op's inputs; return ``(B, T, H, K, V)``.

    q, k ``(B, T, H, K)``, v ``(B, T, H, V)``, initial_state ``(B, H, K, V)`` or None,
    ``per_channel`` tensors (e.g. GLA's g) ``(B, T, H, K)``, ``per_head`` tensors (e.g. the
    delta rule's g and beta) ``(B, T, H)``, segment_ids ``(B, T)`` integers or None; errors name
    the argument and the expected shape.
    """
    if q.dim() != 4:
        raise ValueError(f"q must have shape (B, T, H, K); got {tuple(q.shape)}")
    B, T, H, K = q.shape
    if T < 1:
        raise ValueError(f"q must hold at least one time step; got shape {tuple(q.shape)}")
    check_shape("q", q, (B, T, H, K), "(B, T, H, K)")
    check_shape("k", k, (B, T, H, K), "(B, T, H, K)")
    if v.dim() != 4:
        raise ValueError(f"v must have shape (B, T, H, V); got {tuple(v.shape)}")
    V = v.shape[-1]
    check_shape("v", v, (B, T, H, V), "(B, T, H, V)")
    for name, x in (per_channel or {}).items():
        check_shape(name, x, (B, T, H, K), "(B, T, H, K)")
    for name, x in (per_head or {}).items():
        check_shape(name, x, (B, T, H), "(B, T, H)")
    if initial_state is not None:
        check_shape("initial_state", initial_state, (B, H, K, V), "(B, H, K, V)")
    if segment_ids is not None:
        check_segment_ids(segment_ids, B, T)
    return B, T, H, K, V


def check_log_decay(name: str, g: torch.Tensor, exact_resets: bool = False) -> bool:
    """Check that every log decay is ``<= 0`` (positive decays grow the state without bound,
    NaN poisons it); ``-inf`` is allowed: decay 0, a hard reset that forgets the state. Returns
    whether any entry is ``-inf`` (the chunked forms then run their loop form, exact there).

    Where the check reads the values on the host: only for CPU tensors outside torch.compile,
    where a host read costs nothing (CPU kernels have already run when they return). There a bad
    decay raises a ValueError naming ``g`` and the value. On an accelerator, reading a value back
    would stall the device queue once per ``chunk_gla`` / ``chunk_gated_delta_rule`` call (every
    layer of every training step), and under torch.compile it would break the graph; there the
    check is ``torch._assert_async`` on the device (no host sync; a bad decay fails the next
    synchronising call with a device-side assertion naming ``g``) and this returns False.

    Args:
        name: the argument's name, for messages.
        g: log decays, any shape.
        exact_resets: the caller computes ``-inf`` exactly (the loop and step forms), so the
            on-device assertion admits it; the chunked forms need finite decays there.
    """
    if g.device.type != "cpu" or torch.compiler.is_compiling():
        valid = (g <= 0).all() if exact_resets else ((g <= 0) & torch.isfinite(g)).all()
        torch._assert_async(valid, f"{name} must hold finite log decays <= 0 on this device")
        return False
    if not bool((g <= 0).all()):
        bad = g[~(g <= 0)].flatten()[0].item()
        raise ValueError(
            f"{name} must hold log decays <= 0 (-inf forgets the state); got {bad} at some step"
        )
    return bool(torch.isneginf(g).any())


def check_token(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, ...]:
    """Validate one token's q, k ``(B, H, K)`` and v ``(B, H, V)``; return ``(B, H, K, V)``."""
    if q.dim() != 3:
        raise ValueError(f"q must have shape (B, H, K) (one token); got {tuple(q.shape)}")
    B, H, K = q.shape
    check_shape("q", q, (B, H, K), "(B, H, K)")
    check_shape("k", k, (B, H, K), "(B, H, K)")
    if v.dim() != 3:
        raise ValueError(f"v must have shape (B, H, V) (one token); got {tuple(v.shape)}")
    check_shape("v", v, (B, H, v.shape[-1]), "(B, H, V)")
    return B, H, K, v.shape[-1]


def step_state(
    q: torch.Tensor, v: torch.Tensor, state: torch.Tensor | None, scale: float | None
) -> tuple[torch.Tensor, float]:
    """What a one-token step starts from, for checked q ``(B, H, K)`` and v ``(B, H, V)``.

    Returns:
        ``(state, scale)``: state ``(B, H, K, V)`` in the compute dtype (zeros for None, else
        checked and cast; the tensor passed in is not modified), scale default ``K ** -0.5``.
    """
    B, H, K = q.shape
    V = v.shape[-1]
    dtype = compute_dtype(q.dtype)
    if state is None:
        state = q.new_zeros(B, H, K, V, dtype=dtype)
    else:
        check_shape("state", state, (B, H, K, V), "(B, H, K, V)")
    return state.to(dtype), K**-0.5 if scale is None else scale


def step_output(
    q: torch.Tensor, new_state: torch.Tensor, scale: float, out_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(o, new_state)`` with ``o = scale * S'^T q`` ``(B, H, V)`` in ``out_dtype``, for q
    ``(B, H, K)`` and new_state ``(B, H, K, V)`` in the compute dtype."""
    o = scale * torch.einsum("bhk,bhkv->bhv", q, new_state)
    return o.to(out_dtype), new_state


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """``(B, T, H, *F)`` zero-padded at the end of time -> ``(B, H, N, C, *F)``, N = ceil(T / C).

    Zero padding is harmless for every op here: a padded step has k = v = 0 (adds nothing to
    the state), zero log decay and beta (changes nothing), and its output is cut off.
    """
    B, T, H = x.shape[:3]
    features = x.shape[3:]
    pad = -T % chunk_size
    if pad:
        x = torch.cat([x, x.new_zeros(B, pad, H, *features)], dim=1)
    x = x.reshape(B, (T + pad) // chunk_size, chunk_size, H, *features)
    return x.movedim(3, 1)


def from_chunks(x: torch.Tensor, T: int) -> torch.Tensor:
    """Inverse of ``to_chunks``: ``(B, H, N, C, F)`` -> ``(B, T, H, F)``."""
    B, H, N, C, Fdim = x.shape
    return x.movedim(1, 3).reshape(B, N * C, H, Fdim)[:, :T]


def effective_chunk_size(T: int, chunk_size: int) -> int:
    """Shrink the chunk to the next power of two >= T for short inputs (same maths, less work)."""
    return min(chunk_size, 1 << (T - 1).bit_length())


class ChunkSegments(NamedTuple):
    """Where packed documents cut the chunks of ``to_chunks``; every field broadcasts over H.

    same_document: ``(B, 1, N, C, C)`` bool, tokens i and j of a chunk are in one document.
    sees_state: ``(B, 1, N, C, 1)`` bool, no document starts in the chunk up to token i, so the
        state entering the chunk reaches it.
    to_state: ``(B, 1, N, C, 1)`` bool, token j is in the chunk's last document, so it enters the
        state the chunk hands on.
    carries_state: ``(B, 1, N, 1, 1)`` bool, no document starts in the chunk, so the entering
        state survives it.
    """

    same_document: torch.Tensor
    sees_state: torch.Tensor
    to_state: torch.Tensor
    carries_state: torch.Tensor


def chunk_segments(segment_ids: torch.Tensor, chunk_size: int) -> ChunkSegments:
    """The masks of ``ChunkSegments`` for segment ids ``(B, T)`` cut into chunks of ``chunk_size``.

    A document start at t = 0 is not a reset (the first document continues from the initial
    state); the zero padding of the last chunk continues the last document.
    """
    resets = to_chunks(document_resets(segment_ids)[:, :, None], chunk_size)  # (B, 1, N, C)
    # Starts so far in the chunk: equal counts mean the same document, 0 means the entering one.
    seen = resets.cumsum(dim=-1)
    return ChunkSegments(
        same_document=seen.unsqueeze(-1) == seen.unsqueeze(-2),
        sees_state=(seen == 0).unsqueeze(-1),
        to_state=(seen == seen[..., -1:]).unsqueeze(-1),
        carries_state=(seen[..., -1] == 0)[..., None, None],
    )


def scan(
    step: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    sequences: tuple[torch.Tensor, ...],
    state: torch.Tensor | None,
    scale: float | None,
    output_final_state: bool,
    segment_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``step(*token_tensors, state, scale) -> (o, state)`` over time: the reference loop.

    Args:
        step: a one-token op such as ``gla_step``.
        sequences: its per-token inputs, each ``(B, T, ...)``, in the step's argument order.
        state: the state before the first token (None: zeros, as the step decides).
        scale: passed to every step.
        output_final_state: return the state after the last token (else None).
        segment_ids: ``(B, T)`` packed-document ids, or None; the state is set to zero before
            every document start at t > 0.

    Returns:
        ``(o (B, T, ...), final_state or None)``.
    """
    T = sequences[0].shape[1]
    resets = [None] * T if segment_ids is None else document_resets(segment_ids).unbind(1)
    outputs = []
    # unbind, not x[:, t]: autograd would allocate a full-size zero gradient per indexed step.
    for *tokens, reset in zip(*(x.unbind(1) for x in sequences), resets, strict=True):
        if reset is not None and state is not None:
            state = torch.where(reset[:, None, None, None], 0.0, state)
        o, state = step(*tokens, state, scale)
        outputs.append(o)
    return torch.stack(outputs, dim=1), state if output_final_state else None
