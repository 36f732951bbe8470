"""Rotate q and k by cumulative angles: one entry point, backend chosen per call.

``cumulative_rotary`` is ``cumulative_angles`` followed by ``apply_rotary`` on q and k. On CUDA
with Triton importable it runs the fused kernel of ``triton_cumulative.py`` instead (increments
in, rotated q and k out, angles never written to memory; ``SELROPE_TRITON=0`` turns it off);
everywhere else, and for what the kernel does not cover (float64, interleaved pairs, packed
documents, trainable frequencies), the PyTorch path. The choice is made from the tensors of each
call, never at import.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Literal

import torch

from selrope.common import compute_dtype
from selrope.rotary.apply import apply_rotary_qk
from selrope.rotary.cumulative import cumulative_angles, wrap_angles

Backend = Literal["torch", "triton"]
TRITON_SWITCH = "SELROPE_TRITON"  # "0": the PyTorch path on CUDA too


@functools.cache
def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (the ``gpu`` extra)."""
    return importlib.util.find_spec("triton") is not None


def triton_unsupported(
    q: torch.Tensor,
    increments: torch.Tensor | None,
    frequencies: torch.Tensor | None,
    segment_ids: torch.Tensor | None,
    interleaved: bool,
) -> str | None:
    """Why the fused kernel cannot take this call (None: it can), whatever the device."""
    if segment_ids is not None:
        return "packed documents (segment_ids) are not supported by the kernel"
    if interleaved:
        return "the kernel pairs channels half-split only"
    if q.dtype == torch.float64 or (increments is not None and increments.dtype != torch.float32):
        return "the kernel takes float32 increments and non-float64 q, k"
    if frequencies is not None and frequencies.requires_grad and torch.is_grad_enabled():
        return "the kernel gives no gradient to trainable frequencies"
    return None


def choose_backend(
    q: torch.Tensor,
    increments: torch.Tensor | None,
    frequencies: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    interleaved: bool = False,
) -> Backend:
    """``"triton"`` for CUDA tensors when Triton is importable, the kernel covers the call and
    ``SELROPE_TRITON`` is not ``0`` (read on every call), else ``"torch"``."""
    if (
        q.is_cuda
        and os.environ.get(TRITON_SWITCH, "1") != "0"
        and triton_available()
        and triton_unsupported(q, increments, frequencies, segment_ids, interleaved) is None
    ):
        return "triton"
    return "torch"


def cumulative_rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    increments: torch.Tensor,
    frequencies: torch.Tensor | None = None,
    initial_phase: torch.Tensor | None = None,
    segment_ids: torch.Tensor | None = None,
    interleaved: bool = False,
    backend: Backend | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotate q and k by ``theta = frequencies * (initial_phase + cumsum(increments))``.

    Same angles and precision as ``cumulative_angles`` (float64 carries, reduced mod 2 pi), same
    rotation as ``apply_rotary``; gradients flow to q, k, increments and initial_phase (and to
    the frequencies on the PyTorch path).

    Args:
        q, k: ``(B, T, H, D)`` any float dtype, D = 2R.
        increments: ``(B, T, H, R)`` float32 or float64 angle increments.
        frequencies: ``(R,)`` or None (1).
        initial_phase: ``(B, H, R)`` float64 carried phase, or None (0).
        segment_ids: ``(B, T)`` packed-document ids, or None.
        interleaved: pair channels (2i, 2i + 1) instead of (i, i + R).
        backend: None chooses per call (``choose_backend``); ``"torch"`` or ``"triton"`` force
            one (``"triton"`` on CPU tensors needs ``TRITON_INTERPRET=1``: tests only).

    Returns:
        ``(q_rot, k_rot, final_phase)``: q_rot, k_rot in q's dtype, final_phase ``(B, H, R)``
        float64.
    """
    if backend is None:
        backend = choose_backend(q, increments, frequencies, segment_ids, interleaved)
    if backend == "triton":
        reason = triton_unsupported(q, increments, frequencies, segment_ids, interleaved)
        if reason is not None:
            raise ValueError(f"backend='triton' cannot be used here: {reason}")
        from selrope.rotary.triton_cumulative import FusedCumulativeRotary

        return FusedCumulativeRotary.apply(q, k, increments, frequencies, initial_phase)
    if backend != "torch":
        raise ValueError(f"backend must be one of (None, 'torch', 'triton'); got {backend!r}")
    theta, final_phase = cumulative_angles(increments, frequencies, initial_phase, segment_ids)
    return (*apply_rotary_qk(q, k, theta, interleaved), final_phase)


def rope_rotary(
    q: torch.Tensor,
    k: torch.Tensor,
    frequencies: torch.Tensor,
    offset: torch.Tensor,
    interleaved: bool = False,
    backend: Backend | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k by RoPE's closed-form angles ``theta[b, t] = (offset[b] + t) * frequencies``.

    The PyTorch path forms the exact int64 positions, ``wrap_angles`` them (float64 product,
    reduced mod 2 pi) and calls ``apply_rotary``; the Triton path runs the cumulative kernel with
    +1 per token from a carried phase ``offset - 1`` (nothing of size (B, T, R) is written).

    Args:
        q, k: ``(B, T, H, D)``.
        frequencies: ``(R,)``.
        offset: ``(B,)`` int64 position of each row's first token.
        interleaved, backend: as in ``cumulative_rotary``.

    Returns:
        ``(q_rot, k_rot)`` in q's dtype.
    """
    if backend is None:
        backend = choose_backend(q, None, frequencies, None, interleaved)
    if backend == "triton":
        reason = triton_unsupported(q, None, frequencies, None, interleaved)
        if reason is not None:
            raise ValueError(f"backend='triton' cannot be used here: {reason}")
        from selrope.rotary.triton_cumulative import FusedCumulativeRotary

        B, _, H, D = q.shape
        start = (offset.to(torch.float64) - 1.0)[:, None, None].expand(B, H, D // 2)
        q_rot, k_rot, _ = FusedCumulativeRotary.apply(q, k, None, frequencies, start.contiguous())
        return q_rot, k_rot
    if backend != "torch":
        raise ValueError(f"backend must be one of (None, 'torch', 'triton'); got {backend!r}")
    positions = offset[:, None] + torch.arange(q.shape[1], device=q.device)  # (B, T) exact
    theta = wrap_angles(
        positions.to(torch.float64)[:, :, None, None], frequencies, compute_dtype(q.dtype)
    )
    return apply_rotary_qk(q, k, theta, interleaved)
