"""Fused cumulative rotation in Triton: increments -> running phase -> sin/cos -> rotated q and k.

Imported only by ``selrope.rotary.fused`` when the Triton backend is chosen (never at package
import), so CPU installs without Triton work. One program owns one (batch, head) and a block of
``BLOCK_R`` rotation pairs and scans time in tiles of ``BLOCK_T`` tokens:

- forward: the tile's increments are summed in float32 inside the tile (``tl.cumsum``); the
  running phase before the tile is carried in float64, multiplied by the frequency and reduced
  mod 2 pi in float64, then the float32 angle ``base + frequency * local_sum`` is reduced mod
  2 pi again, so ``tl.cos`` / ``tl.sin`` (exact, not ``.approx``) always see an angle in
  [0, 2 pi) whatever T is (the precision argument of ``cumulative.py``, tile = block);
- backward: the tiles in reverse order; the phase before a tile is the carried phase minus the
  tile's float64 total; cos/sin are recomputed rather than stored; ``dq = R(-theta) dq_out``,
  ``dtheta = sum over q, k of (g2 * out1 - g1 * out2)``, and the gradient of each increment is
  the reverse cumulative sum of ``frequency * dtheta`` (float32 in the tile, float64 carry) plus
  the gradient of the final phase.

Half-split pairing (channel i with i + R) only; the dispatcher falls back to PyTorch otherwise.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _wrap64(x):
    """x mod 2 pi in float64."""
    return x - tl.floor(x / 6.283185307179586) * 6.283185307179586


@triton.jit
def _wrap32(x):
    """x mod 2 pi in float32 (x is at most a tile's worth of increments past [0, 2 pi))."""
    return x - tl.floor(x / 6.2831855) * 6.2831855


@triton.jit
def _fused_cumulative_rotary_forward(
    Q, K, INC, FREQ, INIT, QO, KO, FINAL,
    T, H, R, D,
    HAS_INC: tl.constexpr, HAS_FREQ: tl.constexpr, HAS_INIT: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_mask = r < R
    if HAS_FREQ:
        freq = tl.load(FREQ + r, mask=r_mask, other=0.0)
    else:
        freq = tl.full((BLOCK_R,), 1.0, tl.float32)
    if HAS_INIT:
        carry = tl.load(INIT + bh * R + r, mask=r_mask, other=0.0)
    else:
        carry = tl.zeros((BLOCK_R,), tl.float64)
    for t0 in range(0, T, BLOCK_T):
        t = t0 + tl.arange(0, BLOCK_T)
        mask = (t < T)[:, None] & r_mask[None, :]
        row = (b * T + t) * H + h
        if HAS_INC:
            inc = tl.load(INC + row[:, None] * R + r[None, :], mask=mask, other=0.0)
        else:  # RoPE: +1 per token (closed-form angles, nothing read)
            inc = tl.where(mask, 1.0, 0.0)
        base = _wrap64(carry * freq.to(tl.float64)).to(tl.float32)
        theta = _wrap32(base[None, :] + freq[None, :] * tl.cumsum(inc, axis=0))
        cos = tl.cos(theta)
        sin = tl.sin(theta)
        offset = row[:, None] * D + r[None, :]
        q1 = tl.load(Q + offset, mask=mask, other=0.0).to(tl.float32)
        q2 = tl.load(Q + offset + R, mask=mask, other=0.0).to(tl.float32)
        tl.store(QO + offset, (q1 * cos - q2 * sin).to(QO.dtype.element_ty), mask=mask)
        tl.store(QO + offset + R, (q1 * sin + q2 * cos).to(QO.dtype.element_ty), mask=mask)
        k1 = tl.load(K + offset, mask=mask, other=0.0).to(tl.float32)
        k2 = tl.load(K + offset + R, mask=mask, other=0.0).to(tl.float32)
        tl.store(KO + offset, (k1 * cos - k2 * sin).to(KO.dtype.element_ty), mask=mask)
        tl.store(KO + offset + R, (k1 * sin + k2 * cos).to(KO.dtype.element_ty), mask=mask)
        carry += tl.sum(inc.to(tl.float64), axis=0)
    tl.store(FINAL + bh * R + r, carry, mask=r_mask)


@triton.jit
def _fused_cumulative_rotary_backward(
    Q, K, INC, FREQ, FINAL, GQO, GKO, GFINAL, GQ, GK, GINC, GINIT,
    T, H, R, D,
    HAS_INC: tl.constexpr, HAS_FREQ: tl.constexpr, HAS_GFINAL: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_mask = r < R
    if HAS_FREQ:
        freq = tl.load(FREQ + r, mask=r_mask, other=0.0)
    else:
        freq = tl.full((BLOCK_R,), 1.0, tl.float32)
    carry = tl.load(FINAL + bh * R + r, mask=r_mask, other=0.0)  # phase after the current tile
    if HAS_GFINAL:
        grad_carry = tl.load(GFINAL + bh * R + r, mask=r_mask, other=0.0)
    else:
        grad_carry = tl.zeros((BLOCK_R,), tl.float64)
    tiles = tl.cdiv(T, BLOCK_T)
    for i in range(0, tiles):
        t = (tiles - 1 - i) * BLOCK_T + tl.arange(0, BLOCK_T)
        mask = (t < T)[:, None] & r_mask[None, :]
        row = (b * T + t) * H + h
        if HAS_INC:
            inc = tl.load(INC + row[:, None] * R + r[None, :], mask=mask, other=0.0)
        else:  # RoPE: +1 per token (closed-form angles, nothing read)
            inc = tl.where(mask, 1.0, 0.0)
        carry -= tl.sum(inc.to(tl.float64), axis=0)  # now the phase before the tile
        base = _wrap64(carry * freq.to(tl.float64)).to(tl.float32)
        theta = _wrap32(base[None, :] + freq[None, :] * tl.cumsum(inc, axis=0))
        cos = tl.cos(theta)
        sin = tl.sin(theta)
        offset = row[:, None] * D + r[None, :]
        x1 = tl.load(Q + offset, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(Q + offset + R, mask=mask, other=0.0).to(tl.float32)
        g1 = tl.load(GQO + offset, mask=mask, other=0.0).to(tl.float32)
        g2 = tl.load(GQO + offset + R, mask=mask, other=0.0).to(tl.float32)
        tl.store(GQ + offset, (g1 * cos + g2 * sin).to(GQ.dtype.element_ty), mask=mask)
        tl.store(GQ + offset + R, (g2 * cos - g1 * sin).to(GQ.dtype.element_ty), mask=mask)
        grad_theta = g2 * (x1 * cos - x2 * sin) - g1 * (x1 * sin + x2 * cos)
        x1 = tl.load(K + offset, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(K + offset + R, mask=mask, other=0.0).to(tl.float32)
        g1 = tl.load(GKO + offset, mask=mask, other=0.0).to(tl.float32)
        g2 = tl.load(GKO + offset + R, mask=mask, other=0.0).to(tl.float32)
        tl.store(GK + offset, (g1 * cos + g2 * sin).to(GK.dtype.element_ty), mask=mask)
        tl.store(GK + offset + R, (g2 * cos - g1 * sin).to(GK.dtype.element_ty), mask=mask)
        grad_theta += g2 * (x1 * cos - x2 * sin) - g1 * (x1 * sin + x2 * cos)
        scaled = grad_theta * freq[None, :]
        tile_total = tl.sum(scaled, axis=0)
        # sum over s >= t inside the tile, plus everything after the tile (float64 carry)
        suffix = tile_total[None, :] - tl.cumsum(scaled, axis=0) + scaled
        grad_inc = suffix + grad_carry.to(tl.float32)[None, :]
        if HAS_INC:
            tl.store(GINC + row[:, None] * R + r[None, :], grad_inc, mask=mask)
        grad_carry += tile_total.to(tl.float64)
    tl.store(GINIT + bh * R + r, grad_carry, mask=r_mask)


def _launch_shape(R: int, block_t: int) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_R): tiles of block_t tokens, up to 64 pairs per program."""
    return block_t, min(64, triton.next_power_of_2(R))


class FusedCumulativeRotary(torch.autograd.Function):
    """Autograd wrapper of the two kernels: ``(q, k, increments, frequencies, initial_phase) ->
    (q_rot, k_rot, final_phase)``; gradients to q, k, increments and initial_phase (not to the
    frequencies: the dispatcher uses the PyTorch path when they need one). ``increments=None``
    means +1 per token for every head (RoPE, with ``initial_phase`` = position - 1)."""

    @staticmethod
    def forward(ctx, q, k, increments, frequencies, initial_phase, block_t=64):
        B, T, H, D = q.shape
        R = D // 2
        q, k = q.contiguous(), k.contiguous()
        increments = None if increments is None else increments.contiguous()
        q_rot, k_rot = torch.empty_like(q), torch.empty_like(k)
        final_phase = torch.empty(B, H, R, dtype=torch.float64, device=q.device)
        block_t, block_r = _launch_shape(R, block_t)
        grid = (B * H, triton.cdiv(R, block_r))
        freq = None if frequencies is None else frequencies.float().contiguous()
        init = None if initial_phase is None else initial_phase.contiguous()
        _fused_cumulative_rotary_forward[grid](
            q, k, increments if increments is not None else q, freq if freq is not None else q,
            init if init is not None else final_phase, q_rot, k_rot, final_phase,
            T, H, R, D,
            HAS_INC=increments is not None, HAS_FREQ=freq is not None, HAS_INIT=init is not None,
            BLOCK_T=block_t, BLOCK_R=block_r,
        )  # fmt: skip
        ctx.save_for_backward(q, k, increments, freq, final_phase)
        ctx.block_t = block_t
        ctx.set_materialize_grads(False)
        return q_rot, k_rot, final_phase

    @staticmethod
    def backward(ctx, grad_q_rot, grad_k_rot, grad_final):
        q, k, increments, freq, final_phase = ctx.saved_tensors
        B, T, H, D = q.shape
        R = D // 2
        grad_q_rot = torch.zeros_like(q) if grad_q_rot is None else grad_q_rot.contiguous()
        grad_k_rot = torch.zeros_like(k) if grad_k_rot is None else grad_k_rot.contiguous()
        grad_q, grad_k = torch.empty_like(q), torch.empty_like(k)
        grad_increments = None if increments is None else torch.empty_like(increments)
        grad_initial = torch.empty_like(final_phase)
        block_t, block_r = _launch_shape(R, ctx.block_t)
        grid = (B * H, triton.cdiv(R, block_r))
        _fused_cumulative_rotary_backward[grid](
            q, k, increments if increments is not None else q, freq if freq is not None else q,
            final_phase, grad_q_rot, grad_k_rot,
            grad_final.contiguous() if grad_final is not None else final_phase,
            grad_q, grad_k, grad_increments if increments is not None else grad_q, grad_initial,
            T, H, R, D,
            HAS_INC=increments is not None, HAS_FREQ=freq is not None,
            HAS_GFINAL=grad_final is not None,
            BLOCK_T=block_t, BLOCK_R=block_r,
        )  # fmt: skip
        grad_initial = grad_initial if ctx.needs_input_grad[4] else None
        return grad_q, grad_k, grad_increments, None, grad_initial, None
