"""One rotation path: the embeddings reduce to each other where the maths says they must."""

from __future__ import annotations

import math

import pytest
import torch

from selrope.rotary import (
    CARoPE,
    NoPE,
    RoPE,
    SelectiveRoPE,
    SelectiveRoPEConfig,
    rope_frequencies,
    rope_init_bias,
)

B, T, H, D, d = 2, 48, 3, 16, 12


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, T, H, D, generator=g),
        torch.randn(B, T, H, D, generator=g),
        torch.randn(B, T, d, generator=g),
    )


def _scores(q, k):
    return torch.einsum("bthd,bshd->bhts", q.double(), k.double())


@pytest.mark.parametrize("projection", ["low-rank", "full-rank"])
def test_selective_with_zero_projection_and_bias_is_rope(projection):
    """Research G.1: zero projection, bias b = 0, no gate: increments are exactly 1, so
    theta_t = omega (t + 1), RoPE up to a constant offset, hence identical scores."""
    config = SelectiveRoPEConfig(projection=projection, use_bias=True, theta_base=500000.0)
    selective = SelectiveRoPE(H, D, d, config)
    with torch.no_grad():
        for parameter in selective.projection.parameters():
            parameter.zero_()
    rope = RoPE(D, base=500000.0)
    q, k, x = _inputs()
    q_s, k_s, _ = selective(q, k, x)
    q_r, k_r, _ = rope(q, k, x)
    torch.testing.assert_close(_scores(q_s, k_s), _scores(q_r, k_r), atol=1e-4, rtol=0)
    theta_s, _ = selective.angles(x, None, torch.float64)
    theta_r, _ = rope.angles(x, None, torch.float64)
    torch.testing.assert_close(
        theta_s - theta_r, rope_frequencies(D, 500000.0).double().expand_as(theta_s)
    )


def test_carope_rope_init_is_rope():
    carope = CARoPE(H, D, d, base=10000.0, rope_init=True)
    rope = RoPE(D, base=10000.0)
    q, k, x = _inputs(1)
    torch.testing.assert_close(
        _scores(*carope(q, k, x)[:2]), _scores(*rope(q, k, x)[:2]), atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("f", [0.3, 0.75, 0.95])
def test_carope_with_constant_frequency_is_rope_with_that_frequency(f):
    """A content-free CARoPE (W = 0, bias giving f) is RoPE with base f^(-D/2)."""
    carope = CARoPE(H, D, d, rope_init=True)
    with torch.no_grad():
        carope.proj.bias.fill_(math.log(math.expm1(1.0 / f - 1.0)))
    rope = RoPE(D, base=f ** (-D / 2))
    q, k, x = _inputs(2)
    theta_c, _ = carope.angles(x, None, torch.float64)
    theta_r, _ = rope.angles(x, None, torch.float64)
    # f is set through a float32 bias, hence the tolerance.
    torch.testing.assert_close(
        theta_c - theta_r,
        (f ** torch.arange(D // 2.0, dtype=torch.float64)).expand_as(theta_c),
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close(
        _scores(*carope(q, k, x)[:2]), _scores(*rope(q, k, x)[:2]), atol=1e-4, rtol=0
    )


def test_rope_init_bias_values():
    assert rope_init_bias(64, 10000.0) == pytest.approx(-0.9267, abs=1e-3)
    assert rope_init_bias(128, 10000.0) == pytest.approx(-1.7873, abs=1e-3)


def test_carope_without_rope_init_is_not_rope_and_pair_start_one_shifts_exponent(randomise):
    q, k, x = _inputs(3)
    plain = CARoPE(H, D, d, rope_init=False)
    assert plain.proj.bias is None
    theta0, _ = CARoPE(H, D, d, rope_init=False, pair_start=0).angles(x, None, torch.float64)
    assert torch.allclose(theta0[..., 0], torch.arange(1, T + 1, dtype=torch.float64).view(1, T, 1))
    shifted = CARoPE(H, D, d, rope_init=False, pair_start=1)
    randomise(shifted)
    theta1, _ = shifted.angles(x, None, torch.float64)
    log_f = -torch.log1p(torch.nn.functional.softplus(shifted.proj(x.double())))
    expected = torch.cumsum(torch.exp(log_f[..., None] * torch.arange(1, D // 2 + 1)), dim=1)
    torch.testing.assert_close(theta1, expected)


def test_nope_is_identity():
    q, k, x = _inputs(4)
    q_n, k_n, state = NoPE()(q, k, x)
    assert q_n is q and k_n is k and state is None


def test_rope_angles_are_position_times_frequency():
    rope = RoPE(D, base=10000.0)
    _, _, x = _inputs(5)
    theta, state = rope.angles(x, None, torch.float64)
    expected = torch.arange(T, dtype=torch.float64)[:, None] * rope_frequencies(D, 10000.0).double()
    torch.testing.assert_close(theta, expected[None, :, None].expand(B, T, 1, D // 2))
    assert state.offset.tolist() == [T] * B
