"""PoPE: scores equal the paper's polar formula (a float64 loop); they depend only on relative
position; streaming and packed documents match one call and each document alone; gradients;
float32 angles under bf16 autocast; one-line config errors."""

from __future__ import annotations

import dataclasses
import importlib.util
import math

import pytest
import torch

from selrope.rotary import PoPE, PoPEConfig, RoPEState, build_rotary, parse_rotary_config

H, D, d = 2, 6, 8
BASE = 100.0


def qkx(T: int, B: int = 2, seed: int = 0, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, D, generator=gen, dtype=torch.float64).to(dtype)
    k = torch.randn(B, T, H, D, generator=gen, dtype=torch.float64).to(dtype)
    x = torch.randn(B, T, d, generator=gen, dtype=torch.float64).to(dtype)
    return q, k, x


def random_bias(seed: int, low: float = -2 * math.pi, high: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return low + (high - low) * torch.rand(H, D, generator=gen, dtype=torch.float64)


def pope(bias: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> PoPE:
    module = PoPE(H, D, base=BASE).to(dtype)
    if bias is not None:
        with torch.no_grad():
            module.bias.copy_(bias)
    return module


def offset(*positions: int) -> RoPEState:
    return RoPEState(torch.tensor(positions, dtype=torch.int64))


def scores(q_rot: torch.Tensor, k_rot: torch.Tensor) -> torch.Tensor:
    """``(B, H, T_query, T_key)`` dot products of every query with every key."""
    return torch.einsum("bihc,bjhc->bhij", q_rot, k_rot)


def float32_frequency(c: int, base: float = BASE) -> float:
    """``base^(-c/D)`` rounded to float32, as every selrope frequency is stored."""
    return torch.tensor(base ** (-c / D), dtype=torch.float32).item()


def reference_scores(
    q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor, offsets: list[int]
) -> torch.Tensor:
    """Eq. 6 of the paper by explicit loops in float64: query at position t = offset + i, key at
    s = offset + j, ``sum_c softplus(q_tc) softplus(k_sc) cos(s theta_c + delta_c - t theta_c)``
    with ``theta_c = base^(-c/D)`` (rounded to float32) and delta the bias clamped to
    [-2 pi, 0]."""
    B, T = q.shape[:2]
    out = torch.zeros(B, H, T, T, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                for j in range(T):
                    t, s = offsets[b] + i, offsets[b] + j
                    total = 0.0
                    for c in range(D):
                        theta = float32_frequency(c)
                        delta = min(max(float(bias[h, c]), -2 * math.pi), 0.0)
                        mu_q = math.log1p(math.exp(float(q[b, i, h, c])))
                        mu_k = math.log1p(math.exp(float(k[b, j, h, c])))
                        total += mu_q * mu_k * math.cos(s * theta + delta - t * theta)
                    out[b, h, i, j] = total
    return out


def test_scores_equal_the_polar_formula_in_a_float64_loop() -> None:
    bias = random_bias(1, low=-8.0, high=2.0)  # some entries beyond the clamp on both sides
    module = pope(bias)
    q, k, x = qkx(5)
    q_rot, k_rot, state = module(q, k, x, offset(0, 7))
    assert q_rot.shape == k_rot.shape == (2, 5, H, D * PoPE.output_head_dim_factor)
    assert q_rot.dtype == torch.float64
    expected = reference_scores(q, k, bias, [0, 7])
    torch.testing.assert_close(scores(q_rot, k_rot), expected, atol=1e-12, rtol=1e-12)
    assert state.offset.tolist() == [5, 12]


@pytest.mark.parametrize("base", [BASE, 10000.0])
def test_frequencies_are_base_to_minus_c_over_d(base: float) -> None:
    """D frequencies (one per channel, not per pair), the paper's theta_c; float32 values."""
    theta, _ = PoPE(H, D, base=base).angles(qkx(2)[2], None, torch.float64)
    assert theta.shape == (2, 2, 1, D)
    exact = base ** (-torch.arange(D, dtype=torch.float64) / D)
    torch.testing.assert_close(theta[0, 1, 0], exact, atol=0.0, rtol=1e-7)
    stored = torch.tensor([float32_frequency(c, base) for c in range(D)], dtype=torch.float64)
    assert torch.equal(theta[0, 1, 0], stored)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_scores_depend_only_on_relative_position(dtype: torch.dtype, tol: float) -> None:
    module = pope(random_bias(2), dtype)
    q, k, x = qkx(6, dtype=dtype)
    near = scores(*module(q, k, x)[:2])
    far = scores(*module(q, k, x, offset(10**6, 12345))[:2])
    torch.testing.assert_close(far, near, atol=tol, rtol=tol)


def test_streaming_in_two_calls_equals_one_call() -> None:
    module = pope(random_bias(3))
    q, k, x = qkx(7)
    q_all, k_all, state_all = module(q, k, x, offset(2, 0))
    q_a, k_a, state = module(q[:, :3], k[:, :3], x[:, :3], offset(2, 0))
    q_b, k_b, state = module(q[:, 3:], k[:, 3:], x[:, 3:], state)
    torch.testing.assert_close(torch.cat([q_a, q_b], 1), q_all, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(torch.cat([k_a, k_b], 1), k_all, atol=1e-12, rtol=1e-12)
    assert torch.equal(state.offset, state_all.offset)


def test_gradcheck_q_k_and_phase_bias() -> None:
    module = pope()
    q, k, x = qkx(3, B=1)
    bias = random_bias(5, low=-2 * math.pi + 0.3, high=-0.3)  # away from the clamp's kinks
    inputs = (q.requires_grad_(), k.requires_grad_(), bias.requires_grad_())

    def rotated(q, k, bias):
        params = {"bias": bias}
        return torch.func.functional_call(module, params, (q, k, x, offset(4)))[:2]

    assert torch.autograd.gradcheck(rotated, inputs)


def test_phase_bias_learns_from_zero_and_not_beyond_the_clamp() -> None:
    module = pope()  # zero init: on the clamp's upper end
    q, k, x = qkx(4)
    scores(*module(q, k, x)[:2]).tril().sum().backward()
    assert bool((module.bias.grad != 0).all())
    with torch.no_grad():
        module.bias.copy_(torch.tensor([-7.0, 1.0, -1.0]).repeat(H, 2))
    module.bias.grad = None
    scores(*module(q, k, x)[:2]).tril().sum().backward()
    outside = torch.tensor([True, True, False]).repeat(H, 2)
    assert bool((module.bias.grad[outside] == 0).all())
    assert bool((module.bias.grad[~outside] != 0).all())


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_fused_kernel_path_equals_the_torch_path() -> None:
    """On CUDA the 2D-wide rotation runs RoPE's fused kernel (here Triton's interpreter on CPU,
    switched on by tests/conftest.py, unless a GPU is present): same values and gradients."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    module = pope(random_bias(7), torch.float32).to(device)
    q, k, x = (t.to(device) for t in qkx(5, dtype=torch.float32))
    results = []
    for backend in ("torch", "triton"):
        module.rope.backend = backend
        q_in, k_in = q.clone().requires_grad_(), k.clone().requires_grad_()
        module.bias.grad = None
        q_rot, k_rot, state = module(q_in, k_in, x, offset(3, 1000))
        (q_rot.square().sum() + scores(q_rot, k_rot).sum()).backward()
        results.append((q_rot, k_rot, q_in.grad, k_in.grad, module.bias.grad, state.offset))
    for torch_value, kernel_value in zip(*results, strict=True):
        torch.testing.assert_close(kernel_value, torch_value, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_keeps_angles_float32() -> None:
    module = pope(random_bias(6), torch.float32)
    q, k, x = qkx(6, B=1, dtype=torch.bfloat16)
    far = offset(100_000)  # a bf16 angle there would be off by hundreds of radians
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q_rot, k_rot, _ = module(q, k, x, far)
    assert q_rot.dtype == k_rot.dtype == torch.bfloat16
    q_ref, k_ref, _ = module(q.float(), k.float(), x.float(), far)
    torch.testing.assert_close(q_rot.float(), q_ref, atol=3e-2, rtol=0.0)
    torch.testing.assert_close(k_rot.float(), k_ref, atol=3e-2, rtol=0.0)
    # float32 inputs: autocast is off inside, so the result is the float32 one exactly.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q_auto, k_auto, _ = module(q.float(), k.float(), x.float(), far)
    assert torch.equal(q_auto, q_ref) and torch.equal(k_auto, k_ref)


def test_config_round_trip_and_bias_init() -> None:
    config = PoPEConfig(base=500.0, bias_init="uniform")
    assert parse_rotary_config(dataclasses.asdict(config)) == config
    module = build_rotary(dataclasses.asdict(config), num_heads=H, head_dim=D, model_dim=d)
    assert isinstance(module, PoPE) and list(module.state_dict()) == ["bias"]
    assert bool(((module.bias >= -2 * math.pi) & (module.bias <= 0)).all())
    assert float(module.bias.detach().std()) > 0
    default = build_rotary({"type": "pope"}, num_heads=H, head_dim=D, model_dim=d)
    assert bool((default.bias == 0).all())
    theta, _ = module.angles(qkx(2)[2], None, torch.float64)
    stored = torch.tensor([float32_frequency(c, 500.0) for c in range(D)], dtype=torch.float64)
    assert torch.equal(theta[0, 1, 0], stored)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"type": "pope", "base": 0.5}, r"^pope\.base must be a number >= 1; got 0\.5$"),
        ({"type": "pope", "base": float("nan")}, r"^pope\.base must be a number >= 1; got nan$"),
        (
            {"type": "pope", "bias_init": "normal"},
            r"^pope\.bias_init must be one of \('zero', 'uniform'\); got 'normal'$",
        ),
        ({"type": "pope", "bias_init": True}, r"^pope\.bias_init must be one of .*; got True$"),
        ({"type": "pope", "interleaved": True}, r"^unknown key\(s\) \['interleaved'\]"),
    ],
)
def test_config_errors_are_one_line(config: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as error:
        parse_rotary_config(config)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: PoPE(0, D), r"^num_heads must be a positive integer; got 0$"),
        (lambda: PoPE(H, 5), r"^head_dim must be even and >= 2; got 5$"),
        (lambda: PoPE(H, D, bias_init="ones"), r"^pope\.bias_init must be one of"),
        (lambda: PoPE(H, D, base=0.0), r"^pope\.base must be a number >= 1; got 0\.0$"),
    ],
)
def test_module_errors_are_one_line(build, match: str) -> None:
    with pytest.raises(ValueError, match=match) as error:
        build()
    assert "\n" not in str(error.value)


def test_input_errors_are_one_line() -> None:
    module = pope()
    q, k, x = qkx(3)
    wide = torch.randn(2, 3, H, D + 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^q must have shape \(B, T, 2, 6\)") as error:
        module(wide, wide, x)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"^state\.offset must have shape \(2,\)") as error:
        module(q, k, x, offset(1))
    assert "\n" not in str(error.value)
