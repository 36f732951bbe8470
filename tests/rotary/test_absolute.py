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


def test_sinusoidal_scale_multiplies_the_sinusoids():
    x = torch.zeros(1, 7, 8)
    bare = SinusoidalPositionEmbedding(8)(x)
    torch.testing.assert_close(SinusoidalPositionEmbedding(8, scale=0.02)(x), 0.02 * bare)
    with pytest.raises(ValueError, match="scale must be"):
        SinusoidalPositionEmbedding(8, scale=0.0)


def test_language_model_sinusoids_stand_to_tokens_as_in_the_original_transformer():
    # Vaswani et al.: token entries of std 1 (d^-1/2 init times sqrt(d)) against sinusoid
    # entries of RMS 1/sqrt(2). With tokens of std init_std the sinusoids get scale init_std.
    from selrope.models import LanguageModel, LMConfig

    config = LMConfig(vocab_size=4096, d_model=128, absolute_position="sinusoidal")
    model = LanguageModel(config)
    x = torch.zeros(1, 512, 128)
    pe = model.position_embedding(x)
    token_std = model.embedding.weight.std().item()
    ratio = token_std / pe.pow(2).mean().sqrt().item()
    assert ratio == pytest.approx(math.sqrt(2), rel=0.05)
    explicit = LMConfig(vocab_size=8, absolute_position="sinusoidal", sinusoidal_scale=0.5)
    assert LanguageModel(explicit).position_embedding.scale == 0.5
    with pytest.raises(ValueError, match="sinusoidal_scale must be"):
        LMConfig(vocab_size=8, sinusoidal_scale=-1.0)


def test_config_json_written_before_sinusoidal_scale_keeps_unscaled_sinusoids():
    from selrope.models import LMConfig

    stored = {"model_type": "selrope", "vocab_size": 8, "absolute_position": "sinusoidal"}
    assert LMConfig.from_dict(stored).sinusoidal_scale == 1.0
    current = LMConfig(vocab_size=8, absolute_position="sinusoidal")
    assert LMConfig.from_dict({"model_type": "selrope", **current.to_dict()}) == current
    assert LMConfig.from_dict({"vocab_size": 8}).sinusoidal_scale is None
