"""RoPE context extension: position interpolation and YaRN against written-out formulas."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from selrope.rotary import RoPE, RoPEConfig, build_rotary, parse_rotary_config, rope_frequencies

DIMS = {"num_heads": 2, "head_dim": 32, "model_dim": 16}


def _rotate(rope: RoPE, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q_rot, k_rot, _ = rope(q, k, torch.zeros(*q.shape[:2], 16, dtype=q.dtype))
    return q_rot, k_rot


def test_plain_rope_is_unchanged_and_factor_one_is_plain():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 7, 2, 32, generator=generator)
    plain = build_rotary({"type": "rope", "base": 100.0}, **DIMS)
    reference = RoPE(32, base=100.0)
    assert plain.attention_factor == 1.0
    torch.testing.assert_close(plain.frequencies(), rope_frequencies(32, 100.0), rtol=0, atol=0)
    for scaling in (
        {"kind": "linear", "factor": 1},
        {"kind": "yarn", "factor": 1.0, "original_max_position": 4},
    ):
        scaled = build_rotary({"type": "rope", "base": 100.0, "scaling": scaling}, **DIMS)
        torch.testing.assert_close(_rotate(scaled, q, k), _rotate(reference, q, k), rtol=0, atol=0)


def test_linear_rotates_position_factor_t_as_rope_rotates_t():
    # factor 4 is a power of two, so the frequencies and angles match bit for bit.
    generator = torch.Generator().manual_seed(1)
    T, factor = 9, 4
    q, k = torch.randn(2, 1, factor * T, 2, 32, generator=generator)
    linear = RoPE(32, base=500.0, scaling={"kind": "linear", "factor": factor})
    plain = RoPE(32, base=500.0)
    q_lin, k_lin = _rotate(linear, q, k)
    q_ref, k_ref = _rotate(plain, q[:, ::factor].contiguous(), k[:, ::factor].contiguous())
    torch.testing.assert_close(q_lin[:, ::factor], q_ref, rtol=0, atol=0)
    torch.testing.assert_close(k_lin[:, ::factor], k_ref, rtol=0, atol=0)


def test_linear_frequencies_at_any_factor():
    linear = RoPE(32, base=500.0, scaling={"kind": "linear", "factor": 3})
    expected = [500.0 ** (-2 * i / 32) / 3 for i in range(16)]
    torch.testing.assert_close(
        linear.frequencies().double(),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-7,
        atol=0,
    )
    assert linear.attention_factor == 1.0


def _yarn_by_hand(D, base, factor, original, beta_fast, beta_slow):
    """YaRN frequencies written out per pair (float64)."""

    def pair(rotations):
        return D * math.log(original / (2 * math.pi * rotations)) / (2 * math.log(base))

    low = max(math.floor(pair(beta_fast)), 0)
    high = min(math.ceil(pair(beta_slow)), D - 1)
    out = []
    for i in range(D // 2):
        frequency = base ** (-2 * i / D)
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        out.append((1 - ramp) * frequency + ramp * frequency / factor)
    return out, low, high


@pytest.mark.parametrize(
    ("D", "base", "factor", "original", "beta_fast", "beta_slow"),
    [(32, 10000.0, 4, 4096, 32, 1), (64, 500000.0, 8, 1024, 32, 1), (16, 1000.0, 2.5, 1024, 8, 2)],
)
def test_yarn_frequencies_per_pair(D, base, factor, original, beta_fast, beta_slow):
    scaling = {
        "kind": "yarn",
        "factor": factor,
        "original_max_position": original,
        "beta_fast": beta_fast,
        "beta_slow": beta_slow,
    }
    yarn = RoPE(D, base=base, scaling=scaling)
    expected, low, high = _yarn_by_hand(D, base, factor, original, beta_fast, beta_slow)
    got = yarn.frequencies().double()
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-7, atol=0)
    plain = rope_frequencies(D, base).double()
    # pairs turning more than beta_fast times over the original context keep their frequency;
    # pairs turning fewer than beta_slow times are divided by the factor; the ramp lies between.
    assert 0 < low < high < D // 2, "the cases should exercise all three regimes"
    torch.testing.assert_close(got[: low + 1], plain[: low + 1], rtol=0, atol=0)
    torch.testing.assert_close(got[high:], plain[high:] / factor, rtol=1e-7, atol=0)
    ratio = plain[low + 1 : high] / got[low + 1 : high]
    assert bool(((ratio > 1) & (ratio < factor)).all())
    rotations = plain * original / (2 * math.pi)
    assert bool((rotations[:low] > beta_fast).all()) and bool((rotations[high:] < beta_slow).all())


def test_yarn_multiplies_q_and_k_by_the_attention_factor():
    generator = torch.Generator().manual_seed(2)
    q, k = torch.randn(2, 1, 5, 2, 32, generator=generator)
    scaling = {"kind": "yarn", "factor": 8, "original_max_position": 256}
    yarn = RoPE(32, base=10000.0, scaling=scaling)
    mscale = 0.1 * math.log(8) + 1
    assert yarn.attention_factor == pytest.approx(mscale)
    # the same frequencies without the factor: rotate with a copy whose factor is 1
    unscaled = RoPE(32, base=10000.0, scaling=scaling)
    unscaled.attention_factor = 1.0
    q_ref, k_ref = _rotate(unscaled, q, k)
    q_rot, k_rot = _rotate(yarn, q, k)
    torch.testing.assert_close(q_rot, q_ref * mscale)
    torch.testing.assert_close(k_rot, k_ref * mscale)
    logits, logits_ref = q_rot[0, 0] @ k_rot[0, 0].T, q_ref[0, 0] @ k_ref[0, 0].T
    torch.testing.assert_close(logits, logits_ref * mscale**2)


@pytest.mark.parametrize(
    ("scaling", "message"),
    [
        ("yarn", "rope.scaling must be None or a dict"),
        ({"factor": 2}, "rope.scaling.kind must be one of ('linear', 'yarn')"),
        ({"kind": "ntk", "factor": 2}, "rope.scaling.kind must be one of"),
        ({"kind": "linear"}, "rope.scaling.factor is required"),
        ({"kind": "linear", "factor": 0.5}, "rope.scaling.factor must be a number >= 1"),
        ({"kind": "linear", "factor": True}, "rope.scaling.factor must be a number"),
        ({"kind": "linear", "factor": 2, "beta_fast": 32}, "rope.scaling.beta_fast is not an"),
        ({"kind": "yarn", "factor": 2}, "rope.scaling.original_max_position is required"),
        (
            {"kind": "yarn", "factor": 2, "original_max_position": 25.5},
            "rope.scaling.original_max_position must be a number >= 1 (integer)",
        ),
        (
            {"kind": "yarn", "factor": 2, "original_max_position": 256, "beta_slow": 0},
            "rope.scaling.beta_slow must be a number > 0",
        ),
        (
            {"kind": "yarn", "factor": 2, "original_max_position": 256, "beta_fast": 1},
            "rope.scaling.beta_fast must be a number > beta_slow",
        ),
        ({"kind": "yarn", "factor": 2, "original_max_position": 256, "mscale": 1}, "mscale"),
    ],
)
def test_bad_scaling_is_rejected(scaling, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_rotary_config({"type": "rope", "scaling": scaling})


def test_yarn_needs_a_base_above_one():
    with pytest.raises(ValueError, match="rope.base must be > 1 with yarn"):
        RoPEConfig(base=1.0, scaling={"kind": "yarn", "factor": 2, "original_max_position": 8})


@pytest.mark.parametrize(
    "scaling",
    [
        None,
        {"kind": "linear", "factor": 4},
        {"kind": "yarn", "factor": 4, "original_max_position": 64},
    ],
)
def test_config_round_trip(scaling):
    config = parse_rotary_config({"type": "rope", "base": 500.0, "scaling": scaling})
    as_dict = json.loads(json.dumps(dataclasses.asdict(config)))
    assert parse_rotary_config(as_dict) == config
    if scaling is not None and scaling["kind"] == "yarn":
        assert as_dict["scaling"]["beta_fast"] == 32 and as_dict["scaling"]["beta_slow"] == 1
    hash(config)  # usable as a key like the other rotary configs
    rebuilt, direct = build_rotary(as_dict, **DIMS), RoPE(32, base=500.0, scaling=scaling)
    torch.testing.assert_close(rebuilt.frequencies(), direct.frequencies(), rtol=0, atol=0)
    assert rebuilt.attention_factor == direct.attention_factor
    assert not any(True for _ in rebuilt.state_dict()), "RoPE must keep no weights"
