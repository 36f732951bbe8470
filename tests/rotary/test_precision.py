"""Angles stay float32-or-better: long sequences, bf16 inputs, bf16 autocast."""

from __future__ import annotations

import math

import pytest
import torch

from selrope.rotary import (
    SELECTIVE_STATE_TRACKING_RECIPE,
    CARoPE,
    RoPE,
    SelectiveRoPE,
    apply_rotary,
    build_rotary,
)

LONG_T = 65_536


def _circular_error(theta: torch.Tensor, reference: torch.Tensor) -> float:
    """max |theta - reference| modulo 2 pi, in radians."""
    difference = torch.remainder(theta.double() - reference + math.pi, 2 * math.pi) - math.pi
    return difference.abs().max().item()


def _long_selective(H: int = 1, D: int = 4, d: int = 4) -> SelectiveRoPE:
    return build_rotary(SELECTIVE_STATE_TRACKING_RECIPE, num_heads=H, head_dim=D, model_dim=d)


def test_bias_drift_over_65536_tokens_stays_exact():
    """+1 per token (zero projection, b = 0, frequency 1): theta_t = t + 1 to < 1e-3 rad."""
    module = _long_selective()
    with torch.no_grad():
        module.projection[1].weight.zero_()
    x = torch.randn(1, LONG_T, 4, generator=torch.Generator().manual_seed(0))
    theta, state = module.angles(x, None, torch.float32)
    assert theta.dtype == torch.float32
    steps = torch.arange(1, LONG_T + 1, dtype=torch.float64)[None, :, None, None]
    assert _circular_error(theta, steps) < 1e-3
    assert state.phase.dtype == torch.float64 and state.phase[0, 0, 0].item() == LONG_T
    # The naive float32 running sum the design avoids is not accurate enough (the test can fail).
    naive = torch.cumsum(torch.ones(LONG_T, dtype=torch.float32), 0) * torch.tensor(1.0001)
    assert _circular_error(naive, torch.arange(1, LONG_T + 1, dtype=torch.float64) * 1.0001) > 1e-3


def test_random_increments_with_bias_over_65536_tokens_in_two_chunks(randomise):
    module = randomise(_long_selective(H=2, D=8, d=8), seed=1, std=0.3)
    x = torch.randn(1, LONG_T, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        increments, _ = module.angle_increments(x, None, torch.float32)
        reference = torch.cumsum(increments.double(), 1) * module.frequencies().double()
        first, state = module.angles(x[:, :40_000], None, torch.float32)
        second, _ = module.angles(x[:, 40_000:], state, torch.float32)
    assert reference.abs().max() > 1e4  # large angles, where float32 would lose 1e-3
    assert _circular_error(torch.cat([first, second], 1), reference) < 1e-3


def test_rope_and_carope_at_long_positions():
    x = torch.zeros(1, LONG_T, 8)
    rope = RoPE(8, base=10000.0)
    theta, _ = rope.angles(x, None, torch.float32)
    reference = torch.arange(LONG_T, dtype=torch.float64)[:, None] * rope.frequencies().double()
    assert _circular_error(theta[0, :, 0], reference) < 1e-5
    carope = CARoPE(2, 8, 8)
    theta, _ = carope.angles(x, None, torch.float32)
    assert _circular_error(theta[0, :, 0, 0], torch.arange(1, LONG_T + 1.0).double()) < 1e-5


@pytest.mark.parametrize(
    "config",
    [{"type": "rope"}, {"type": "carope"}, {"type": "selective", "use_bias": True, "gate": "gla"}],
)
def test_bf16_inputs_under_autocast_keep_float32_angles(config, randomise):
    module = build_rotary(config, num_heads=2, head_dim=8, model_dim=8)
    randomise(module, seed=3, std=0.3)
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(2, 2, 600, 2, 8, generator=g).bfloat16()
    x = torch.randn(2, 600, 8, generator=g).bfloat16()
    with torch.no_grad():
        theta, _ = module.angles(x, None, torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            q_rot, k_rot, state = module(q, k, x)
    assert theta.dtype == torch.float32
    assert q_rot.dtype == k_rot.dtype == torch.bfloat16
    torch.testing.assert_close(q_rot, apply_rotary(q, theta), atol=0, rtol=0)
    torch.testing.assert_close(k_rot, apply_rotary(k, theta), atol=0, rtol=0)
    assert all(tensor.dtype != torch.bfloat16 for tensor in state)
