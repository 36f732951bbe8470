"""Selective RoPE: research checklist G.6-G.8, pipeline order, initialisation, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from selrope.rotary import SelectiveRoPE, SelectiveRoPEConfig, rfa_frequencies, rope_frequencies
from selrope.rotary.selective import head_l2_normalize, per_head_matmul

B, T, H, D, d = 2, 9, 2, 8, 8


def _x(seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(B, T, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _projection(module: SelectiveRoPE, x: torch.Tensor) -> torch.Tensor:
    """p_t (B, T, H, R) from the per-head l2-normalised x, written out independently."""
    x_heads = x.unflatten(-1, (H, -1))
    x_heads = x_heads / torch.sqrt((x_heads**2).sum(-1, keepdim=True) + 1e-6)
    if module.config.projection == "low-rank":
        down, up = module.projection
        p = x_heads.flatten(2) @ down.weight.double().T @ up.weight.double().T
        return p.unflatten(-1, (H, -1))
    weight = module.projection.weight.double()
    unit = weight / weight.norm(dim=1, keepdim=True)
    return torch.einsum("bthc,hcr->bthr", x_heads, unit) * module.projection.scale.double()[:, None]


@pytest.mark.parametrize("projection", ["low-rank", "full-rank"])
@pytest.mark.parametrize("use_bias", [False, True])
def test_skip_conv_gives_absolute_angles(projection, use_bias, randomise):
    """G.6: skip conv, no gate: theta_t = omega p_t, and omega (p_t + (t+1) e^b) with the bias."""
    config = SelectiveRoPEConfig(
        projection=projection, skip_conv=True, use_bias=use_bias, theta_base=100.0
    )
    module = randomise(SelectiveRoPE(H, D, d, config), seed=1)
    x = _x()
    theta, _ = module.angles(x, None, torch.float64)
    expected = _projection(module, x)
    if use_bias:
        steps = torch.arange(1, T + 1, dtype=torch.float64)[:, None, None]
        expected = expected + steps * module.log_bias.double().exp()
    omega = rope_frequencies(D, 100.0).double()
    torch.testing.assert_close(theta, omega * expected, atol=1e-10, rtol=0)


def test_rfa_frequencies_of_the_copying_config():
    """G.7: D = 32, c = 0.9999, max 0.25 -> about [0, 4.5e-6, 9.2e-6, ..., 2.0e-4, 4.1e-4, 0.25].

    We compute tan(a/2) exactly (float64). The research values come from the official formula
    sqrt((1 - cos a) / (1 + cos a)) in float32, where 1 + cos(0.9999 pi) = 4.93e-8 rounds to
    5.96e-8: the largest tan is then 9 % too small, and after rescaling to max 0.25 every other
    entry is about 10 % larger than the exact value. Both are checked here.
    """
    omega = rfa_frequencies(32, 0.9999, 0.25)
    assert omega.shape == (16,) and omega.dtype == torch.float32
    assert omega[0] == 0 and omega[-1] == pytest.approx(0.25)
    angles = torch.linspace(0, 0.9999 * math.pi, 16, dtype=torch.float64)
    exact = 0.25 * torch.tan(angles / 2) / math.tan(angles[-1].item() / 2)
    torch.testing.assert_close(omega.double(), exact, atol=1e-9, rtol=1e-6)
    float32_ratio = math.sqrt((1 + math.cos(0.9999 * math.pi)) / 2.0**-24)  # 0.91
    for index, value in [(1, 4.5e-6), (2, 9.2e-6), (-3, 2.0e-4), (-2, 4.1e-4)]:
        assert omega[index].item() == pytest.approx(value * float32_ratio, rel=0.03)
    assert torch.all(omega[1:] > omega[:-1])


def test_rope_frequencies_with_base_one_are_all_temp_max():
    torch.testing.assert_close(rope_frequencies(8, 1.0, 0.5), torch.full((4,), 0.5))


@pytest.mark.parametrize("gate", ["standard", "low-rank", "gla"])
def test_pipeline_order_conv_bias_gate_cumsum(gate, randomise):
    """Increments are sigmoid(gate(x)) * (conv(p) + exp(b)), with the gate after conv and bias."""
    config = SelectiveRoPEConfig(conv_activation="silu", use_bias=True, gate=gate, theta_base=50.0)
    module = randomise(SelectiveRoPE(H, D, d, config), seed=2)
    x = _x(3)
    p = _projection(module, x).flatten(2)
    width = config.conv_size
    padded = torch.nn.functional.pad(p, (0, 0, width - 1, 0))
    weight = module.conv.weight.double()
    conv = sum(padded[:, w : w + T] * weight[:, w] for w in range(width))
    conv = torch.nn.functional.silu(conv).unflatten(-1, (H, -1))
    x_unit = (
        x.unflatten(-1, (H, -1))
        / torch.sqrt((x.unflatten(-1, (H, -1)) ** 2).sum(-1, keepdim=True) + 1e-6)
    ).flatten(2)
    layers = [module.gate] if gate == "standard" else list(module.gate)
    logits = x_unit
    for layer in layers:
        logits = logits @ layer.weight.double().T + (
            0 if layer.bias is None else layer.bias.double()
        )
    gate_values = torch.sigmoid(logits).unflatten(-1, (H, -1))
    increments = gate_values * (conv + module.log_bias.double().exp())
    expected = torch.cumsum(increments, 1) * rope_frequencies(D, 50.0).double()
    theta, state = module.angles(x, None, torch.float64)
    torch.testing.assert_close(theta, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(state.phase, torch.cumsum(increments, 1)[:, -1])


def test_initialisation():
    lm = SelectiveRoPE(
        4,
        16,
        32,
        SelectiveRoPEConfig(
            projection="full-rank", conv_activation="silu", gate="standard", use_bias=True
        ),
    )
    assert torch.all(lm.projection.scale == 1) and lm.projection.scale._no_weight_decay
    assert torch.all(lm.log_bias == 0) and torch.all(lm.gate.bias == 0)
    assert lm.conv.weight.std().item() == pytest.approx(0.02, rel=0.3)
    low = SelectiveRoPE(4, 64, 256, SelectiveRoPEConfig(gate="gla"))
    for layer in [*low.projection, *low.gate]:
        assert layer.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.all(low.gate[1].bias == 0)
    assert [name for name, _ in low.named_buffers()] == ["frequencies.values"]
    assert "frequencies.values" not in low.state_dict()


def test_frequencies_stay_float32_under_bf16_cast_unless_trainable():
    frozen = SelectiveRoPE(H, D, d).to(torch.bfloat16)
    assert frozen.frequencies().dtype == torch.float32
    torch.testing.assert_close(frozen.frequencies(), rope_frequencies(D, 500000.0), atol=0, rtol=0)
    trainable = SelectiveRoPE(H, D, d, SelectiveRoPEConfig(trainable_frequencies=True))
    assert [name for name, _ in trainable.named_parameters() if "frequencies" in name] == [
        "frequencies.values"
    ]


@pytest.mark.parametrize(
    "options",
    [
        {
            "projection": "low-rank",
            "rank": 3,
            "conv_activation": "silu",
            "use_bias": True,
            "gate": "gla",
            "gate_rank": 3,
        },
        {
            "projection": "full-rank",
            "skip_conv": True,
            "use_bias": True,
            "gate": "standard",
            "trainable_frequencies": True,
            "theta_base": 10.0,
        },
        {
            "projection": "full-rank",
            "gate": "low-rank",
            "gate_rank": 2,
            "frequencies": "rfa",
            "trainable_frequencies": True,
        },
    ],
)
def test_gradcheck_parameters(options, randomise):
    """G.8: float64 gradcheck of q/k outputs and the carried phase w.r.t. every parameter."""
    Bs, Ts, Hs, Ds, ds = 1, 4, 2, 4, 4
    module = randomise(SelectiveRoPE(Hs, Ds, ds, SelectiveRoPEConfig(**options)), seed=4).double()
    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(2, Bs, Ts, Hs, Ds, generator=g, dtype=torch.float64)
    x = torch.randn(Bs, Ts, ds, generator=g, dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in module.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_() for p in module.parameters())

    def run(x_in, *values):
        q_rot, k_rot, state = functional_call(
            module, dict(zip(names, values, strict=True)), (q, k, x_in)
        )
        return q_rot, k_rot, state.phase

    assert torch.autograd.gradcheck(run, (x, *params))


def test_head_l2_normalize_values_and_gradients():
    """The hand-written backward of the per-head normalisation: gradcheck (an all-zero slice
    included, where only eps keeps the norm away from 0) and the plain formula's values."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 2, 5, generator=g, dtype=torch.float64)
    x[0, 1, 1] = 0.0
    expected = x / torch.sqrt(x.square().sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(head_l2_normalize(x), expected, atol=0, rtol=0)
    assert torch.autograd.gradcheck(head_l2_normalize, (x.requires_grad_(),))


def test_per_head_matmul_values_gradients_and_compiler_registration():
    """The full-rank projection's custom op: each head's slice times its own matrix, gradcheck,
    and torch.library.opcheck (schema, fake tensor shapes, autograd registration), with a
    non-contiguous x as a compiled graph may pass it."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 4, 6, generator=g, dtype=torch.float64)
    expected = torch.stack([x[:, :, h] @ weight[h] for h in range(3)], dim=2)
    out = per_head_matmul(x, weight)
    assert out.is_contiguous() and out.shape == (2, 5, 3, 6)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    strided = torch.randn(3, 5, 2, 4, generator=g, dtype=torch.float64).permute(2, 1, 0, 3)
    args = (strided.requires_grad_(), weight.requires_grad_())
    assert torch.autograd.gradcheck(per_head_matmul, args)
    torch.library.opcheck(per_head_matmul, args)
