"""Configs, presets and build_rotary: round trips and clear errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from selrope.rotary import (
    SELECTIVE_COPYING_RECIPE,
    SELECTIVE_LM_RECIPE,
    SELECTIVE_STATE_TRACKING_RECIPE,
    CARoPE,
    CARoPEConfig,
    NoPE,
    RoPE,
    SelectiveRoPE,
    SelectiveRoPEConfig,
    build_rotary,
    parse_rotary_config,
)

DIMS = {"num_heads": 2, "head_dim": 8, "model_dim": 16}


@pytest.mark.parametrize(
    ("config", "cls"),
    [
        ({"type": "nope"}, NoPE),
        ({"type": "rope", "base": 500000.0}, RoPE),
        ({"type": "carope", "pair_start": 1}, CARoPE),
        (
            {"type": "selective", "projection": "full-rank", "conv_activation": "silu"},
            SelectiveRoPE,
        ),
        (SELECTIVE_LM_RECIPE, SelectiveRoPE),
        (SELECTIVE_STATE_TRACKING_RECIPE, SelectiveRoPE),
        (SELECTIVE_COPYING_RECIPE, SelectiveRoPE),
        (CARoPEConfig(rope_init=False), CARoPE),
    ],
)
def test_build_and_json_round_trip(config, cls):
    module = build_rotary(config, **DIMS)
    assert type(module) is cls
    parsed = parse_rotary_config(config)
    assert parse_rotary_config(json.loads(json.dumps(dataclasses.asdict(parsed)))) == parsed
    q = k = torch.randn(1, 3, 2, 8)
    q_rot, _, _ = module(q, k, torch.randn(1, 3, 16))
    assert q_rot.shape == q.shape


def test_presets_have_the_recipe_options():
    lm = build_rotary(SELECTIVE_LM_RECIPE, **DIMS)
    assert lm.config.projection == "full-rank" and lm.config.conv_activation == "silu"
    assert lm.config.gate == "standard" and not lm.config.use_bias
    assert lm.config.theta_base == 500000.0
    tracking = build_rotary(SELECTIVE_STATE_TRACKING_RECIPE, **DIMS)
    assert tracking.config.rank == 32 and tracking.config.use_bias and tracking.config.gate is None
    torch.testing.assert_close(tracking.frequencies(), torch.ones(4))


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (
            {"type": "alibi"},
            r"type must be one of \('nope', 'rope', 'carope', 'selective', 'pope'\)",
        ),
        ({"base": 10.0}, "type must be one of"),
        (
            {"type": "rope", "projection": "low-rank"},
            r"unknown key\(s\) \['projection'\].*allowed keys",
        ),
        (
            {"type": "selective", "projection": "dense"},
            r"selective.projection must be one of \('low-rank', 'full-rank'\)",
        ),
        (
            {"type": "selective", "conv_activation": "gelu"},
            r"conv_activation must be one of \(None, 'silu'\)",
        ),
        ({"type": "selective", "gate": "sigmoid"}, "selective.gate must be one of"),
        ({"type": "selective", "frequencies": "ntk"}, "selective.frequencies must be one of"),
        ({"type": "selective", "rfa_c": 1.5}, r"selective.rfa_c must be a number in \(0, 1\)"),
        ({"type": "selective", "theta_base": 0.5}, "selective.theta_base must be a number >= 1"),
        ({"type": "selective", "rank": 0}, "selective.rank must be"),
        ({"type": "selective", "rank": "32"}, "selective.rank must be"),
        (
            {"type": "selective", "conv_init_std": -0.1},
            "selective.conv_init_std must be a number >= 0",
        ),
        (
            {"type": "selective", "use_bias": 1},
            r"selective.use_bias must be one of \(False, True\)",
        ),
        (
            {"type": "selective", "skip_conv": True, "conv_activation": "silu"},
            "conv_activation must be None",
        ),
        ({"type": "carope", "pair_start": 2}, r"carope.pair_start must be one of \(0, 1\)"),
        ({"type": "rope", "base": "big"}, "rope.base must be a number"),
    ],
)
def test_invalid_configs_name_the_key(config, match):
    with pytest.raises(ValueError, match=match):
        build_rotary(config, **DIMS)


@pytest.mark.parametrize("std", [0.0, 0.02, 0.5])
def test_conv_init_std_sets_the_conv_weights_scale(std):
    torch.manual_seed(0)
    module = SelectiveRoPE(4, 32, 64, SelectiveRoPEConfig(conv_init_std=std))
    weights = module.conv.weight.detach()
    assert weights.numel() == 4 * 16 * 4
    assert weights.std().item() == pytest.approx(std, rel=0.1, abs=1e-12)


def test_module_level_errors():
    with pytest.raises(ValueError, match="n_heads must divide model_dim"):
        SelectiveRoPE(3, 8, 16)
    with pytest.raises(ValueError, match="head_dim must be even"):
        SelectiveRoPE(2, 7, 16)
    with pytest.raises(ValueError, match="head_dim for rfa frequencies must be even and >= 4"):
        SelectiveRoPE(2, 2, 16, SelectiveRoPEConfig(frequencies="rfa"))
    with pytest.raises(TypeError, match="config must be a dict"):
        build_rotary("rope", **DIMS)
