"""Fused cumulative rotation in Triton: increments -> running phase -> sin/cos -> rotated q and k.

Imported only by ``selrope.rotary.fused`` when the Triton backend is chosen (never at package
import), so CPU installs without Triton work. Time is cut into tiles of ``BLOCK_T`` tokens and
every (batch, head, block of ``BLOCK_R`` pairs, tile) is its own program, so the whole GPU works
at once whatever B and H are:

- forward: PyTorch sums each tile's increments in float64 and takes the exclusive cumulative sum
  over tiles (a tensor 1/BLOCK_T the size of the increments): the phase before every tile. The
  kernel sums the increments inside its tile in float32 (``tl.cumsum``), multiplies the float64
  phase before the tile by the frequency and reduces it mod 2 pi in float64, then reduces the
  float32 angle ``base + frequency * local_sum`` mod 2 pi again, so ``tl.cos`` / ``tl.sin``
  (exact, not ``.approx``) always see an angle in [0, 2 pi) whatever T is (the precision argument
  of ``cumulative.py``, tile = block). Angles are never written to memory.
- backward: the same programs recompute cos/sin (cheaper than storing them), write
  ``dq = R(-theta) dq_out`` (and dk), and for ``s = frequency * dtheta`` with
  ``dtheta = sum over q, k of (g2 * out1 - g1 * out2)`` write the in-tile suffix sums of s
  (float32) and each tile's total; PyTorch adds the float64 reverse cumulative sum of the totals
  of the later tiles (plus the gradient of the final phase): the gradient of each increment.

Half-split pairing (channel i with i + R) only; the dispatcher falls back to PyTorch otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
def _tile_angles(
    INC, FREQ, BASE, b, h, n, r, mask, row, tiles, H, R,
    HAS_INC: tl.constexpr, HAS_FREQ: tl.constexpr,
):  # fmt: skip
    """(BLOCK_T, BLOCK_R) float32 angles in [0, 2 pi) of tile n, and the (BLOCK_R,) frequencies."""
    r_mask = r < R
    if HAS_FREQ:
        freq = tl.load(FREQ + r, mask=r_mask, other=0.0)
    else:
        freq = tl.full(r.shape, 1.0, tl.float32)
    if HAS_INC:
        inc = tl.load(INC + row[:, None] * R + r[None, :], mask=mask, other=0.0)
    else:  # RoPE: +1 per token (closed-form angles, nothing read)
        inc = tl.where(mask, 1.0, 0.0)
    before = tl.load(BASE + ((b * tiles + n) * H + h) * R + r, mask=r_mask, other=0.0)
    base = _wrap64(before * freq.to(tl.float64)).to(tl.float32)
    return _wrap32(base[None, :] + freq[None, :] * tl.cumsum(inc, axis=0)), freq


@triton.jit
def _rotate_tile(X, XO, offset, R, mask, cos, sin):
    """Store the tile of X rotated by theta into XO (pairs (r, r + R))."""
    x1 = tl.load(X + offset, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + offset + R, mask=mask, other=0.0).to(tl.float32)
    tl.store(XO + offset, (x1 * cos - x2 * sin).to(XO.dtype.element_ty), mask=mask)
    tl.store(XO + offset + R, (x1 * sin + x2 * cos).to(XO.dtype.element_ty), mask=mask)


@triton.jit
def _rotate_tile_backward(X, GXO, GX, offset, R, mask, cos, sin):
    """Store the input gradient (the output gradient rotated by -theta) into GX; return the
    tile's gradient with respect to theta, float32."""
    x1 = tl.load(X + offset, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(X + offset + R, mask=mask, other=0.0).to(tl.float32)
    g1 = tl.load(GXO + offset, mask=mask, other=0.0).to(tl.float32)
    g2 = tl.load(GXO + offset + R, mask=mask, other=0.0).to(tl.float32)
    tl.store(GX + offset, (g1 * cos + g2 * sin).to(GX.dtype.element_ty), mask=mask)
    tl.store(GX + offset + R, (g2 * cos - g1 * sin).to(GX.dtype.element_ty), mask=mask)
    return g2 * (x1 * cos - x2 * sin) - g1 * (x1 * sin + x2 * cos)


@triton.jit
def _fused_cumulative_rotary_forward(
    Q, K, INC, FREQ, BASE, QO, KO,
    T, H, R, D,
    HAS_INC: tl.constexpr, HAS_FREQ: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    n = tl.program_id(2)
    t = n * BLOCK_T + tl.arange(0, BLOCK_T)
    mask = (t < T)[:, None] & (r < R)[None, :]
    row = (b * T + t) * H + h
    theta, _ = _tile_angles(
        INC, FREQ, BASE, b, h, n, r, mask, row, tl.cdiv(T, BLOCK_T), H, R, HAS_INC, HAS_FREQ
    )
    cos = tl.cos(theta)
    sin = tl.sin(theta)
    offset = row[:, None] * D + r[None, :]
    _rotate_tile(Q, QO, offset, R, mask, cos, sin)
    _rotate_tile(K, KO, offset, R, mask, cos, sin)


@triton.jit
def _fused_cumulative_rotary_backward(
    Q, K, INC, FREQ, BASE, GQO, GKO, GQ, GK, GINC, TILE_TOTAL,
    T, H, R, D,
    HAS_INC: tl.constexpr, HAS_FREQ: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    r = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)
    n = tl.program_id(2)
    t = n * BLOCK_T + tl.arange(0, BLOCK_T)
    mask = (t < T)[:, None] & (r < R)[None, :]
    row = (b * T + t) * H + h
    tiles = tl.cdiv(T, BLOCK_T)
    theta, freq = _tile_angles(
        INC, FREQ, BASE, b, h, n, r, mask, row, tiles, H, R, HAS_INC, HAS_FREQ
    )
    cos = tl.cos(theta)
    sin = tl.sin(theta)
    offset = row[:, None] * D + r[None, :]
    grad_theta = _rotate_tile_backward(Q, GQO, GQ, offset, R, mask, cos, sin)
    grad_theta += _rotate_tile_backward(K, GKO, GK, offset, R, mask, cos, sin)
    scaled = tl.where(mask, grad_theta * freq[None, :], 0.0)
    tile_total = tl.sum(scaled, axis=0)
    if HAS_INC:  # sum over s >= t inside the tile; the later tiles are added by the caller
        suffix = tile_total[None, :] - tl.cumsum(scaled, axis=0) + scaled
        tl.store(GINC + row[:, None] * R + r[None, :], suffix, mask=mask)
    r_mask = r < R
    tl.store(TILE_TOTAL + ((b * tiles + n) * H + h) * R + r, tile_total, mask=r_mask)


def _launch_shape(R: int, block_t: int) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_R): tiles of block_t tokens, up to 64 pairs per program."""
    return block_t, min(64, triton.next_power_of_2(R))


def _tile_sums(x: torch.Tensor, block_t: int) -> torch.Tensor:
    """``(B, T, H, R)`` -> ``(B, N, H, R)`` float64 sums over tiles of block_t tokens."""
    B, T, H, R = x.shape
    N = triton.cdiv(T, block_t)
    padded = F.pad(x, (0, 0, 0, 0, 0, N * block_t - T))
    return padded.view(B, N, block_t, H, R).sum(dim=2, dtype=torch.float64)


def _phase_before_tiles(
    increments: torch.Tensor | None,
    initial_phase: torch.Tensor | None,
    shape: tuple[int, int, int, int],
    block_t: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phase before each tile (B, N, H, R), final phase (B, H, R))``, both float64."""
    B, T, H, R = shape
    N = triton.cdiv(T, block_t)
    if increments is None:  # +1 per token: tile n starts n * block_t tokens in
        counts = torch.full((N,), float(block_t), dtype=torch.float64, device=device)
        counts[-1] = T - (N - 1) * block_t
        totals = counts[None, :, None, None].expand(B, N, H, R)
    else:
        totals = _tile_sums(increments, block_t)
    inclusive = totals.cumsum(dim=1)
    if initial_phase is not None:
        inclusive = inclusive + initial_phase[:, None]
    before = (inclusive - totals).contiguous()
    return before, inclusive[:, -1].contiguous()


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
        block_t, block_r = _launch_shape(R, block_t)
        before, final_phase = _phase_before_tiles(
            increments, initial_phase, (B, T, H, R), block_t, q.device
        )
        grid = (B * H, triton.cdiv(R, block_r), triton.cdiv(T, block_t))
        freq = None if frequencies is None else frequencies.float().contiguous()
        _fused_cumulative_rotary_forward[grid](
            q, k, increments if increments is not None else q, freq if freq is not None else q,
            before, q_rot, k_rot,
            T, H, R, D,
            HAS_INC=increments is not None, HAS_FREQ=freq is not None,
            BLOCK_T=block_t, BLOCK_R=block_r,
        )  # fmt: skip
        ctx.save_for_backward(q, k, increments, freq, before)
        ctx.block_t = block_t
        ctx.set_materialize_grads(False)
        return q_rot, k_rot, final_phase

    @staticmethod
    def backward(ctx, grad_q_rot, grad_k_rot, grad_final):
        q, k, increments, freq, before = ctx.saved_tensors
        B, T, H, D = q.shape
        R = D // 2
        grad_q_rot = torch.zeros_like(q) if grad_q_rot is None else grad_q_rot.contiguous()
        grad_k_rot = torch.zeros_like(k) if grad_k_rot is None else grad_k_rot.contiguous()
        grad_q, grad_k = torch.empty_like(q), torch.empty_like(k)
        grad_increments = None if increments is None else torch.empty_like(increments)
        tile_totals = torch.empty(before.shape, dtype=torch.float32, device=q.device)
        block_t, block_r = _launch_shape(R, ctx.block_t)
        grid = (B * H, triton.cdiv(R, block_r), triton.cdiv(T, block_t))
        _fused_cumulative_rotary_backward[grid](
            q, k, increments if increments is not None else q, freq if freq is not None else q,
            before, grad_q_rot, grad_k_rot,
            grad_q, grad_k, grad_increments if increments is not None else grad_q, tile_totals,
            T, H, R, D,
            HAS_INC=increments is not None, HAS_FREQ=freq is not None,
            BLOCK_T=block_t, BLOCK_R=block_r,
        )  # fmt: skip
        # The gradient reaching the phase after tile n: every later tile's total, plus the final
        # phase's own gradient (float64 sums across tiles).
        totals = tile_totals.double()
        after = totals.flip(1).cumsum(dim=1).flip(1) - totals  # (B, N, H, R)
        if grad_final is not None:
            after = after + grad_final[:, None]
        if grad_increments is not None:
            N = after.shape[1]
            padded = F.pad(grad_increments, (0, 0, 0, 0, 0, N * block_t - T))
            padded = padded.view(B, N, block_t, H, R) + after.float()[:, :, None]
            grad_increments = padded.view(B, N * block_t, H, R)[:, :T]
        grad_initial = None
        if ctx.needs_input_grad[4]:
            grad_initial = after[:, 0] + totals[:, 0]
        return grad_q, grad_k, grad_increments, None, grad_initial, None
