"""Full pass == random-size chunks with the carried state == one token at a time, every option."""

from __future__ import annotations

import itertools

import pytest
import torch

from selrope.rotary import CARoPE, RoPE, SelectiveRoPE, SelectiveRoPEConfig

B, T, H, D, d = 2, 13, 2, 8, 8

CONV_MODES = {
    "linear": {"conv_activation": None},
    "silu": {"conv_activation": "silu"},
    "skip": {"skip_conv": True},
}
SELECTIVE_OPTIONS = [
    {"projection": projection, **CONV_MODES[conv], "use_bias": bias, "gate": gate, **freq}
    for projection, conv, bias, gate, freq in itertools.product(
        ["low-rank", "full-rank"],
        list(CONV_MODES),
        [False, True],
        [None, "standard", "low-rank", "gla"],
        [{"frequencies": "rope", "theta_base": 10.0}, {"frequencies": "rfa", "temp_max": 2.0}],
    )
]


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, T, H, D, generator=g),
        torch.randn(B, T, H, D, generator=g),
        torch.randn(B, T, d, generator=g),
    )


def _run_in_pieces(module, q, k, x, sizes):
    outputs_q, outputs_k, state, start = [], [], None, 0
    for size in sizes:
        piece = slice(start, start + size)
        q_rot, k_rot, state = module(q[:, piece], k[:, piece], x[:, piece], state)
        outputs_q.append(q_rot)
        outputs_k.append(k_rot)
        start += size
    assert start == q.shape[1]
    return torch.cat(outputs_q, 1), torch.cat(outputs_k, 1), state


def _random_sizes(seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    sizes, left = [], T
    while left:
        size = min(left, int(torch.randint(1, 6, (1,), generator=g)))
        sizes.append(size)
        left -= size
    return sizes


def _check_streaming(module, seed: int) -> None:
    q, k, x = _inputs(seed)
    full_q, full_k, full_state = module(q, k, x)
    for sizes in (_random_sizes(seed), [1] * T):
        chunk_q, chunk_k, chunk_state = _run_in_pieces(module, q, k, x, sizes)
        torch.testing.assert_close(chunk_q, full_q, atol=1e-5, rtol=0)
        torch.testing.assert_close(chunk_k, full_k, atol=1e-5, rtol=0)
        for chunk_tensor, full_tensor in zip(chunk_state, full_state, strict=True):
            torch.testing.assert_close(chunk_tensor, full_tensor, atol=1e-5, rtol=0)
    # The rotation is not the identity, so the test above compares something.
    assert not torch.allclose(full_q, q, atol=1e-3)


@pytest.mark.parametrize(
    "options", SELECTIVE_OPTIONS, ids=lambda o: "-".join(str(v) for v in o.values())
)
def test_selective_streaming(options, randomise):
    module = randomise(SelectiveRoPE(H, D, d, SelectiveRoPEConfig(**options)), seed=1)
    _check_streaming(module, seed=2)


@pytest.mark.parametrize("rope_init", [False, True])
@pytest.mark.parametrize("pair_start", [0, 1])
def test_carope_streaming(rope_init, pair_start, randomise):
    module = randomise(CARoPE(H, D, d, rope_init=rope_init, pair_start=pair_start), seed=3)
    _check_streaming(module, seed=4)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_streaming(interleaved):
    _check_streaming(RoPE(D, base=100.0, interleaved=interleaved), seed=5)


def test_states_are_new_tensors_and_inputs_untouched(randomise):
    module = randomise(SelectiveRoPE(H, D, d, SelectiveRoPEConfig(use_bias=True)), seed=6)
    q, k, x = _inputs(7)
    _, _, state = module(q[:, :5], k[:, :5], x[:, :5])
    before = [tensor.clone() for tensor in state]
    _, _, next_state = module(q[:, 5:], k[:, 5:], x[:, 5:], state)
    for old, kept in zip(state, before, strict=True):
        torch.testing.assert_close(old, kept, atol=0, rtol=0)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(state, next_state, strict=True))
    assert all(tensor.shape[0] == B for tensor in next_state)
