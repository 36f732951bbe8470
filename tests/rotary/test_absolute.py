"""Absolute position baselines: values, offsets (streaming), errors."""

from __future__ import annotations

import math

import pytest
import torch

from selrope.rotary import LearnedPositionEmbedding, SinusoidalPositionEmbedding


def test_sinusoidal_values_and_offsets():
    module = SinusoidalPositionEmbedding(6, base=100.0)
    x = torch.zeros(2, 5, 6)
    pe = module(x)
    t, i = 3, 1
    assert pe[0, t, 2 * i].item() == pytest.approx(math.sin(t * 100.0 ** (-2 * i / 6)), abs=1e-6)
    assert pe[1, t, 2 * i + 1].item() == pytest.approx(
        math.cos(t * 100.0 ** (-2 * i / 6)), abs=1e-6
    )
    torch.testing.assert_close(module(x[:, 2:], offset=2), pe[:, 2:])
    per_row = module(x[:, :1], offset=torch.tensor([0, 4]))
    torch.testing.assert_close(per_row[1, 0], pe[0, 4])
    far = module(torch.zeros(1, 1, 6), offset=100_000)
    assert far[0, 0, 0].item() == pytest.approx(math.sin(100_000.0), abs=1e-6)


def test_learned_offsets_and_limit():
    module = LearnedPositionEmbedding(8, 4)
    x = torch.randn(2, 6, 4)
    full = module(x)
    torch.testing.assert_close(full - x, module.table.weight[:6].expand(2, 6, 4))
    torch.testing.assert_close(module(x[:, 3:], offset=3), full[:, 3:])
    with pytest.raises(ValueError, match="positions must be < max_positions = 8"):
        module(x, offset=3)
    with pytest.raises(
        ValueError, match=r"offset must be an int or an int64 tensor of shape \(B,\)"
    ):
        module(x, offset=torch.tensor([1]))
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, d\)"):
        module(x[0])
