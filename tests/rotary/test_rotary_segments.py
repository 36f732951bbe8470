"""Packed documents in the rotary embeddings: each document gets the angles it gets alone."""

from __future__ import annotations

import pytest
import torch

from selrope.rotary import (
    SELECTIVE_LM_RECIPE,
    CARoPE,
    LearnedPositionEmbedding,
    NoPE,
    SinusoidalPositionEmbedding,
    build_rotary,
    cumulative_angles,
)

H, D, d = 2, 8, 8
LENGTHS = [4, 1, 6, 2]
CONFIGS = {
    "rope": {"type": "rope", "base": 100.0},
    "carope": {"type": "carope"},
    "selective": SELECTIVE_LM_RECIPE,
    "selective-skip-conv": {"type": "selective", "skip_conv": True, "use_bias": True},
    "selective-gated": {"type": "selective", "gate": "standard", "conv_size": 3},
    "pope": {"type": "pope", "base": 100.0},  # q and k come out 2D wide; its bias randomised
}


def packed_ids(lengths: list[int]) -> torch.Tensor:
    return torch.arange(len(lengths)).repeat_interleave(torch.tensor(lengths))[None]


def qkx(T: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, T, H, D, dtype=torch.float64, generator=gen)
    k = torch.randn(1, T, H, D, dtype=torch.float64, generator=gen)
    x = torch.randn(1, T, d, dtype=torch.float64, generator=gen)
    return q, k, x


def embedding(name: str, randomise) -> torch.nn.Module:
    module = build_rotary(CONFIGS[name], num_heads=H, head_dim=D, model_dim=d)
    return randomise(module, seed=3) if name != "rope" else module


@pytest.mark.parametrize("name", list(CONFIGS))
def test_packed_equals_each_document_alone(name: str, randomise) -> None:
    module = embedding(name, randomise)
    q, k, x = qkx(sum(LENGTHS))
    # The first document continues from a state (a prefix of 5 tokens); the rest start fresh.
    _, _, state = module(*qkx(5, seed=1))
    q_rot, k_rot, packed_state = module(q, k, x, state, segment_ids=packed_ids(LENGTHS))
    expected_q, expected_k = [], []
    pieces = zip(*(t.split(LENGTHS, dim=1) for t in (q, k, x)), strict=True)
    for n, piece in enumerate(pieces):
        q_n, k_n, state_n = module(*piece, state if n == 0 else None)
        expected_q.append(q_n)
        expected_k.append(k_n)
    torch.testing.assert_close(q_rot, torch.cat(expected_q, dim=1), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(k_rot, torch.cat(expected_k, dim=1), atol=1e-12, rtol=1e-12)
    # The returned state continues the row's last document.
    for got, want in zip(packed_state, state_n, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_streaming_after_a_packed_call_continues_the_last_document(name: str, randomise) -> None:
    module = embedding(name, randomise)
    q, k, x = qkx(sum(LENGTHS) + 3)
    _, _, state = module(q[:, :-3], k[:, :-3], x[:, :-3], segment_ids=packed_ids(LENGTHS))
    q_next, _, _ = module(q[:, -3:], k[:, -3:], x[:, -3:], state)
    start = sum(LENGTHS[:-1])
    q_alone, _, _ = module(q[:, start:], k[:, start:], x[:, start:])
    torch.testing.assert_close(q_next, q_alone[:, -3:], atol=1e-12, rtol=1e-12)


def test_batch_rows_with_different_documents() -> None:
    module = CARoPE(H, D, d, rope_init=False)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 7, d, generator=gen)
    ids = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [3, 3, 3, 3, 3, 2, 2]])
    theta, _ = module.angles(x, None, torch.float32, ids)
    for row, starts in ((0, [0, 2]), (1, [0, 5])):
        for begin, end in zip(starts, [*starts[1:], 7], strict=True):
            alone, _ = module.angles(x[row : row + 1, begin:end], None, torch.float32)
            torch.testing.assert_close(theta[row : row + 1, begin:end], alone)


def test_cumulative_angles_restart_keeps_float64_and_initial_phase() -> None:
    increments = torch.ones(1, 5, 1, 1, dtype=torch.float32)
    initial = torch.full((1, 1, 1), 10.0, dtype=torch.float64)
    ids = torch.tensor([[0, 0, 1, 1, 1]])
    theta, final = cumulative_angles(increments, None, initial, ids)
    expected = torch.tensor([11.0 - 2 * torch.pi, 12.0 - 2 * torch.pi, 1.0, 2.0, 3.0])
    torch.testing.assert_close(theta.flatten(), expected)
    assert final.dtype == torch.float64
    assert final.flatten().tolist() == [3.0]


def test_nope_ignores_segment_ids() -> None:
    q, k, x = qkx(5)
    assert NoPE()(q, k, x, segment_ids=packed_ids([2, 3]))[:2] == (q, k)


@pytest.mark.parametrize(
    "module", [SinusoidalPositionEmbedding(d), LearnedPositionEmbedding(16, d)]
)
def test_absolute_positions_restart_per_document(module: torch.nn.Module) -> None:
    x = torch.randn(1, sum(LENGTHS), d, generator=torch.Generator().manual_seed(5))
    offset = torch.tensor([3])
    packed = module(x, offset, segment_ids=packed_ids(LENGTHS))
    pieces = x.split(LENGTHS, dim=1)
    alone = [module(piece, offset if n == 0 else 0) for n, piece in enumerate(pieces)]
    torch.testing.assert_close(packed, torch.cat(alone, dim=1))


def test_segment_ids_are_checked() -> None:
    module = build_rotary({"type": "rope"}, num_heads=H, head_dim=D, model_dim=d)
    q, k, x = qkx(5)
    with pytest.raises(ValueError, match="segment_ids"):
        module(q, k, x, segment_ids=torch.zeros(1, 4, dtype=torch.long))
