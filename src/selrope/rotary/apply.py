"""The one rotation of the library: rotate channel pairs of q or k by per-token angles.

Every rotary embedding (RoPE, CARoPE, Selective RoPE) only makes angles ``theta``; this module
turns them into rotated q and k. Pairing is half-split by default (channel i with channel i + R,
R = D/2, the NeoX / fla convention); interleaved pairing (channel 2i with 2i + 1) is an option for
checkpoints from libraries that use it.
"""

from __future__ import annotations

import torch

from selrope.common import compute_dtype


def _split(x: torch.Tensor, interleaved: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The two members of each rotation pair, each ``(..., R)``."""
    if interleaved:
        return x[..., 0::2], x[..., 1::2]
    half = x.shape[-1] // 2
    return x[..., :half], x[..., half:]


def _merge(first: torch.Tensor, second: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Inverse of ``_split``."""
    if interleaved:
        return torch.stack((first, second), dim=-1).flatten(-2)
    return torch.cat((first, second), dim=-1)


def _rotated(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool, inverse: bool = False
) -> torch.Tensor:
    """``(a, b) -> (a cos - b sin, a sin + b cos)`` per pair (by -theta when ``inverse``), in
    cos's dtype: a product and a fused multiply-add per half.

    Eager, both halves are written straight into one output tensor: no temporaries and no
    concatenation, which matters on a CPU, where every fresh tensor the size of q costs about as
    much as the arithmetic on it. Dynamo cannot trace ``out=`` into a view, so under
    torch.compile the halves are concatenated instead (inductor fuses that into one kernel).
    """
    x = x.to(cos.dtype)
    first, second = _split(x, interleaved)
    sign = 1.0 if inverse else -1.0
    if torch.compiler.is_compiling():
        out_first = torch.addcmul(first * cos, second, sin, value=sign)
        out_second = torch.addcmul(second * cos, first, sin, value=-sign)
        return _merge(out_first, out_second, interleaved)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    out_first, out_second = _split(out, interleaved)
    torch.mul(first, cos, out=out_first).addcmul_(second, sin, value=sign)
    torch.mul(second, cos, out=out_second).addcmul_(first, sin, value=-sign)
    return out


def _cos_sin(theta: torch.Tensor, compute: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin in the wider of theta's dtype and the compute dtype, cast to the compute dtype."""
    angles = theta.to(torch.promote_types(theta.dtype, compute))
    return angles.cos().to(compute), angles.sin().to(compute)


class _RotaryFunction(torch.autograd.Function):
    """Rotation of one or more tensors (q and k) by the same angles, with a hand-written
    backward that recomputes cos/sin.

    ``apply(theta, interleaved, *xs) -> tuple of rotated xs``. Saved for backward: the xs (in
    their own dtype) and ``theta`` once, nothing of size ``(B, T, H, R)`` in float32 beyond theta
    itself; cos and sin are computed once per call in forward and once in backward (for q and k
    together), which costs two elementwise transcendental ops and saves two angle-sized float32
    tensors per call.
    """

    @staticmethod
    def forward(ctx, theta: torch.Tensor, interleaved: bool, *xs: torch.Tensor):
        ctx.save_for_backward(theta, *xs)
        ctx.interleaved = interleaved
        compute = compute_dtype(xs[0].dtype)
        cos, sin = _cos_sin(theta, compute)
        return tuple(_rotated(x, cos, sin, interleaved).to(x.dtype) for x in xs)

    @staticmethod
    def backward(ctx, *grad_outs: torch.Tensor):
        theta, *xs = ctx.saved_tensors
        interleaved = ctx.interleaved
        compute = compute_dtype(xs[0].dtype)
        grad_xs: list[torch.Tensor | None] = [None] * len(xs)
        grad_angle = None
        with torch.autocast(device_type=theta.device.type, enabled=False):
            cos, sin = _cos_sin(theta, compute)
            for index, (x, grad_out) in enumerate(zip(xs, grad_outs, strict=True)):
                if grad_out is None:
                    continue
                # The transpose of a rotation is the rotation by -theta.
                rotated_back = _rotated(grad_out, cos, sin, interleaved, inverse=True)
                if ctx.needs_input_grad[2 + index]:
                    grad_xs[index] = rotated_back.to(x.dtype)
                if ctx.needs_input_grad[0]:
                    # dL/dtheta = cross(out, grad) = g2 out1 - g1 out2; a rotation keeps the 2-D
                    # cross product, so it equals cross(x, R(-theta) grad): no need to rebuild out.
                    first, second = _split(x.to(compute), interleaved)
                    back_first, back_second = _split(rotated_back, interleaved)
                    if grad_angle is None:
                        grad_angle = torch.mul(back_second, first)
                    else:
                        grad_angle.addcmul_(back_second, first)
                    grad_angle.addcmul_(back_first, second, value=-1.0)
        grad_theta = None
        if grad_angle is not None:
            grad_theta = grad_angle.sum_to_size(theta.shape).to(theta.dtype)
        return grad_theta, None, *grad_xs


def apply_rotary(x: torch.Tensor, theta: torch.Tensor, interleaved: bool = False) -> torch.Tensor:
    """Rotate each channel pair of ``x`` by the angles ``theta``.

    For pair i (half-split: channels i and i + R; interleaved: channels 2i and 2i + 1)
    ``(a, b) -> (a cos theta_i - b sin theta_i, a sin theta_i + b cos theta_i)``.
    The angle math (cos, sin, products) runs in float32, or float64 when x is float64, with
    autocast disabled; the result is cast back to x's dtype. Angles should be small (the rotary
    modules reduce them modulo 2 pi) so that float32 cos/sin stay accurate.

    Memory: the autograd graph saves only ``x`` and ``theta``; cos/sin are recomputed in backward.
    Gradients flow to both ``x`` and ``theta``.

    Args:
        x: ``(B, T, H, D)`` floating tensor, D even.
        theta: ``(B or 1, T, H or 1, D/2)`` float32 or float64 angles in radians.
        interleaved: pair channel 2i with 2i + 1 instead of i with i + D/2.

    Returns:
        ``(B, T, H, D)`` rotated x, in x's dtype.
    """
    _check(x, theta)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _RotaryFunction.apply(theta, interleaved, x)[0]


def apply_rotary_qk(
    q: torch.Tensor, k: torch.Tensor, theta: torch.Tensor, interleaved: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(apply_rotary(q, theta), apply_rotary(k, theta))`` with cos/sin computed once for both
    (in forward and in backward); same values, shapes and gradients. q and k: ``(B, T, H, D)``
    of one dtype."""
    _check(q, theta)
    _check(k, theta)
    if k.dtype != q.dtype:
        raise TypeError(f"k must have the dtype of q ({q.dtype}); got {k.dtype}")
    with torch.autocast(device_type=q.device.type, enabled=False):
        return _RotaryFunction.apply(theta, interleaved, q, k)


def _check(x: torch.Tensor, theta: torch.Tensor) -> None:
    """Raise TypeError/ValueError unless x is ``(B, T, H, D)`` and theta fits it."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got {getattr(x, 'dtype', type(x))}")
    if not torch.is_tensor(theta) or theta.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"theta must be a float32 or float64 tensor; got {getattr(theta, 'dtype', type(theta))}"
        )
    if x.dim() != 4 or x.shape[-1] % 2 != 0:
        raise ValueError(f"x must have shape (B, T, H, D) with D even; got {tuple(x.shape)}")
    B, T, H, D = x.shape
    if (
        theta.dim() != 4
        or theta.shape[0] not in (1, B)
        or theta.shape[1] != T
        or theta.shape[2] not in (1, H)
        or theta.shape[3] != D // 2
    ):
        raise ValueError(
            f"theta must have shape (B or 1, T, H or 1, D/2) = ({B} or 1, {T}, {H} or 1, "
            f"{D // 2}); got {tuple(theta.shape)}"
        )
