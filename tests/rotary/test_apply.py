"""apply_rotary: values vs a float64 loop, relative positions, norms, broadcasting, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from selrope.rotary import apply_rotary, apply_rotary_qk


def reference_rotary(x: torch.Tensor, theta: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """Float64 loop over pairs, written from the equations."""
    x64, theta64 = x.double(), theta.double().expand(*x.shape[:-1], x.shape[-1] // 2)
    out = torch.empty_like(x64)
    R = x.shape[-1] // 2
    for i in range(R):
        a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + R)
        c, s = torch.cos(theta64[..., i]), torch.sin(theta64[..., i])
        out[..., a] = x64[..., a] * c - x64[..., b] * s
        out[..., b] = x64[..., a] * s + x64[..., b] * c
    return out


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("theta_shape", [(2, 5, 3, 4), (1, 5, 3, 4), (2, 5, 1, 4), (1, 5, 1, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_float64_loop(interleaved, theta_shape, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 8, generator=g, dtype=dtype)
    theta = torch.rand(theta_shape, generator=g) * 2 * math.pi
    out = apply_rotary(x, theta, interleaved)
    assert out.dtype == dtype and out.shape == x.shape
    atol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(
        out.double(), reference_rotary(x, theta, interleaved), atol=atol, rtol=0
    )


def test_interleaved_is_a_channel_permutation_of_half_split():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 3, 8, generator=g)
    theta = torch.randn(2, 4, 3, 4, generator=g)
    # interleaved channel 2i <-> half-split channel i, 2i+1 <-> i + R
    to_half = torch.cat([torch.arange(0, 8, 2), torch.arange(1, 8, 2)])
    half = apply_rotary(x[..., to_half], theta)
    inter = apply_rotary(x, theta, interleaved=True)
    torch.testing.assert_close(inter[..., to_half], half)


def test_relative_position_property():
    """q'_t . k'_s only depends on theta_t - theta_s: a constant shift changes no score."""
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 2, 7, 3, 16, generator=g, dtype=torch.float64)
    theta = torch.randn(2, 7, 3, 8, generator=g, dtype=torch.float64) * 10
    shift = torch.randn(1, 1, 3, 8, generator=g, dtype=torch.float64) * 100

    def scores(angles):
        return torch.einsum("bthd,bshd->bhts", apply_rotary(q, angles), apply_rotary(k, angles))

    torch.testing.assert_close(scores(theta + shift), scores(theta), atol=1e-10, rtol=0)
    assert not torch.allclose(scores(theta * 1.1), scores(theta))


def test_norm_preservation():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 6, 2, 10, generator=g)
    theta = torch.randn(3, 6, 2, 5, generator=g) * 50
    torch.testing.assert_close(apply_rotary(x, theta).norm(dim=-1), x.norm(dim=-1))


def test_bf16_input_keeps_float32_math_and_dtype():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 2, 8, generator=g).bfloat16()
    theta = torch.rand(1, 5, 2, 4, generator=g) * 6
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = apply_rotary(x, theta)
    assert out.dtype == torch.bfloat16
    expected = reference_rotary(x.float(), theta, False).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("theta_shape", [(2, 3, 2, 3), (1, 3, 1, 3)])
def test_gradcheck(interleaved, theta_shape):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 2, 6, generator=g, dtype=torch.float64, requires_grad=True)
    theta = torch.randn(theta_shape, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: apply_rotary(a, b, interleaved), (x, theta))


def test_gradients_of_float32_match_autograd_of_reference():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 3, 8, generator=g, requires_grad=True)
    theta = torch.randn(1, 4, 3, 4, generator=g, requires_grad=True)
    weight = torch.randn(2, 4, 3, 8, generator=g)
    (apply_rotary(x, theta) * weight).sum().backward()
    x64 = x.detach().double().requires_grad_()
    theta64 = theta.detach().double().requires_grad_()
    (reference_rotary(x64, theta64, False) * weight.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, atol=1e-5, rtol=0)
    torch.testing.assert_close(theta.grad.double(), theta64.grad, atol=1e-4, rtol=0)


def test_saves_only_x_and_theta_for_backward():
    x = torch.randn(2, 4, 3, 8, requires_grad=True)
    theta = torch.randn(1, 4, 3, 4, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        apply_rotary(x, theta)
    assert len(saved) == 2
    assert {t.data_ptr() for t in saved} == {x.data_ptr(), theta.data_ptr()}


@pytest.mark.parametrize(
    ("x", "theta", "error", "match"),
    [
        (
            torch.randn(2, 3, 8),
            torch.randn(2, 3, 4),
            ValueError,
            r"x must have shape \(B, T, H, D\)",
        ),
        (torch.randn(1, 3, 2, 7), torch.randn(1, 3, 2, 3), ValueError, "D even"),
        (torch.randn(1, 3, 2, 8), torch.randn(1, 4, 2, 4), ValueError, r"theta must have shape"),
        (torch.randn(1, 3, 2, 8), torch.randn(1, 3, 2, 3), ValueError, r"theta must have shape"),
        (torch.ones(1, 3, 2, 8, dtype=torch.int64), torch.randn(1, 3, 2, 4), TypeError, "x must"),
        (torch.randn(1, 3, 2, 8), torch.randn(1, 3, 2, 4).bfloat16(), TypeError, "theta must"),
    ],
)
def test_bad_inputs(x, theta, error, match):
    with pytest.raises(error, match=match):
        apply_rotary(x, theta)


@pytest.mark.parametrize("theta_shape", [(2, 5, 3, 4), (1, 5, 1, 4)])
@pytest.mark.parametrize("interleaved", [False, True])
def test_apply_rotary_qk_equals_two_apply_rotary(theta_shape, interleaved):
    """Sharing cos/sin between q and k changes nothing: values and every gradient."""
    g = torch.Generator().manual_seed(11)
    q, k = (torch.randn(2, 5, 3, 8, generator=g, dtype=torch.float64) for _ in range(2))
    theta = torch.randn(theta_shape, generator=g, dtype=torch.float64)
    leaves = [q.requires_grad_(), k.requires_grad_(), theta.requires_grad_()]
    joint = apply_rotary_qk(q, k, theta, interleaved)
    separate = (apply_rotary(q, theta, interleaved), apply_rotary(k, theta, interleaved))
    weights = [torch.randn(q.shape, generator=g, dtype=torch.float64) for _ in range(2)]
    for got, want in zip(joint, separate, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    got = torch.autograd.grad(
        sum((o * w).sum() for o, w in zip(joint, weights, strict=True)), leaves
    )
    want = torch.autograd.grad(
        sum((o * w).sum() for o, w in zip(separate, weights, strict=True)), leaves
    )
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *a: apply_rotary_qk(*a, interleaved), tuple(leaves))
