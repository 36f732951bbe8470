"""cumulative_angles: blockwise float32 sums with float64 carries against float64 references."""

from __future__ import annotations

import math

import pytest
import torch

from selrope.rotary import SELECTIVE_STATE_TRACKING_RECIPE, build_rotary
from selrope.rotary import cumulative as cumulative_module
from selrope.rotary.cumulative import cumulative_angles

MILLION = 1_000_000


def _circular_error(theta: torch.Tensor, reference: torch.Tensor) -> float:
    """max |theta - reference| modulo 2 pi, in radians."""
    difference = torch.remainder(theta.double() - reference + math.pi, 2 * math.pi) - math.pi
    return difference.abs().max().item()


def _reference(increments, frequencies=None, initial_phase=None):
    """Float64 cumulative sum over the whole tensor (the pre-blockwise implementation)."""
    phase = torch.cumsum(increments.double(), 1)
    if initial_phase is not None:
        phase = phase + initial_phase.unsqueeze(1)
    theta = phase if frequencies is None else phase * frequencies.double()
    return theta, phase[:, -1]


def _inputs(T, dtype, with_frequencies, with_initial, seed=0):
    g = torch.Generator().manual_seed(seed)
    increments = (1.0 + 0.5 * torch.randn(2, T, 3, 4, generator=g, dtype=torch.float64)).to(dtype)
    frequencies = torch.rand(4, generator=g) * 2 if with_frequencies else None
    initial = torch.randn(2, 3, 4, generator=g, dtype=torch.float64) * 1e3 if with_initial else None
    return increments, frequencies, initial


@pytest.mark.parametrize("T", [1, 5, 64, 65, 127, 200])
@pytest.mark.parametrize("with_frequencies", [False, True])
@pytest.mark.parametrize("with_initial", [False, True])
def test_float32_values_match_float64_reference(T, with_frequencies, with_initial):
    increments, frequencies, initial = _inputs(T, torch.float32, with_frequencies, with_initial)
    theta, final = cumulative_angles(increments, frequencies, initial)
    reference, reference_final = _reference(increments, frequencies, initial)
    assert theta.dtype == torch.float32 and theta.shape == increments.shape
    assert final.dtype == torch.float64
    assert theta.min() >= 0 and theta.max() < 2 * math.pi  # reduced mod 2 pi
    assert _circular_error(theta, reference) < 2e-5
    torch.testing.assert_close(final, reference_final, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("T", [1, 63, 130])
def test_float64_in_float64_out_without_reduction(T):
    increments, frequencies, initial = _inputs(T, torch.float64, True, True)
    theta, final = cumulative_angles(increments, frequencies, initial)
    reference, reference_final = _reference(increments, frequencies, initial)
    assert theta.dtype == torch.float64
    assert theta.abs().max() > 2 * math.pi  # not reduced
    torch.testing.assert_close(theta, reference, rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(final, reference_final, rtol=1e-13, atol=1e-10)


@pytest.mark.parametrize("T", [3, 8, 11])
def test_gradcheck_float64_blockwise(T, monkeypatch):
    """Small blocks so that several blocks, and one that straddles the end, are exercised."""
    monkeypatch.setattr(cumulative_module, "BLOCK", 4)
    increments, frequencies, initial = _inputs(T, torch.float64, True, True)
    inputs = (
        increments[:1, :, :2, :3].clone().requires_grad_(),
        frequencies[:3].double().requires_grad_(),
        initial[:1, :2, :3].clone().requires_grad_(),
    )
    assert torch.autograd.gradcheck(lambda *a: cumulative_angles(*a), inputs)
    # Without frequencies / initial phase, and through theta or the final phase alone.
    assert torch.autograd.gradcheck(lambda x: cumulative_angles(x)[0], inputs[:1])
    assert torch.autograd.gradcheck(lambda x: cumulative_angles(x, None, inputs[2])[1], inputs[:1])


@pytest.mark.parametrize("T", [5, 64, 200])
def test_float32_gradients_match_float64_autograd(T):
    increments, frequencies, initial = _inputs(T, torch.float32, True, True, seed=1)
    leaves = [increments.requires_grad_(), frequencies.requires_grad_(), initial.requires_grad_()]
    g = torch.Generator().manual_seed(2)
    grad_theta = torch.randn(increments.shape, generator=g)
    grad_final = torch.randn(initial.shape, generator=g, dtype=torch.float64)
    theta, final = cumulative_angles(*leaves)
    grads = torch.autograd.grad((theta * grad_theta).sum() + (final * grad_final).sum(), leaves)
    reference, reference_final = _reference(*leaves)
    loss = (reference * grad_theta.double()).sum() + (reference_final * grad_final).sum()
    expected = torch.autograd.grad(loss, leaves)
    for got, want in zip(grads, expected, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-5)


def test_bias_drift_over_a_million_tokens_stays_exact():
    """+1 per token through Selective RoPE (zero projection, b = 0): theta_t = omega (t + 1)."""
    module = build_rotary(SELECTIVE_STATE_TRACKING_RECIPE, num_heads=1, head_dim=4, model_dim=4)
    with torch.no_grad():
        module.projection[1].weight.zero_()
        module.frequencies.values.copy_(torch.tensor([1.0, 1.0001]))
        x = torch.randn(1, MILLION, 4, generator=torch.Generator().manual_seed(0))
        theta, state = module.angles(x, None, torch.float32)
    steps = torch.arange(1, MILLION + 1, dtype=torch.float64)[None, :, None, None]
    exact = steps * module.frequencies().double()
    error = _circular_error(theta, exact)
    assert error < 1e-3, error
    assert state.phase.dtype == torch.float64 and state.phase[0, 0, 0].item() == MILLION
    # The naive float32 running sum fails the same check.
    naive = torch.cumsum(torch.ones(1, MILLION, 1, 2), 1) * module.frequencies()
    assert _circular_error(naive, exact) > 1e-3


def test_random_increments_over_a_million_tokens():
    g = torch.Generator().manual_seed(3)
    increments = 1.0 + 0.5 * torch.randn(1, MILLION, 1, 2, generator=g)
    frequencies = torch.tensor([1.0, 0.37])
    theta, final = cumulative_angles(increments, frequencies)
    reference, reference_final = _reference(increments, frequencies)
    assert reference.abs().max() > 5e5
    error = _circular_error(theta, reference)
    assert error < 1e-3, error
    torch.testing.assert_close(final, reference_final, rtol=1e-12, atol=1e-6)
    naive = torch.cumsum(increments, 1) * frequencies
    assert _circular_error(naive, reference) > 1e-3


def _reference_with_restarts(increments, frequencies, initial_phase, segment_ids):
    """Float64, one document at a time: every document sums from its own start."""
    phase = torch.zeros(increments.shape, dtype=torch.float64)
    for row in range(increments.shape[0]):
        ids = segment_ids[row]
        starts = [0] + [t for t in range(1, len(ids)) if ids[t] != ids[t - 1]] + [len(ids)]
        for number, (start, end) in enumerate(zip(starts[:-1], starts[1:], strict=True)):
            carried = initial_phase[row] if initial_phase is not None and number == 0 else 0.0
            phase[row, start:end] = torch.cumsum(increments[row, start:end].double(), 0) + carried
    theta = phase if frequencies is None else phase * frequencies.double()
    return theta, phase[:, -1]


def _segment_ids(T, block, seed):
    g = torch.Generator().manual_seed(seed)
    random_documents = (torch.rand(T, generator=g) < 0.2).cumsum(0)
    at_block_starts = torch.arange(T) // block  # documents that start exactly at block starts
    return torch.stack([random_documents, torch.zeros(T, dtype=torch.int64), at_block_starts])


@pytest.mark.parametrize("block", [4, 64])
@pytest.mark.parametrize("T", [1, 9, 64, 130])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_restarts_match_per_document_reference(block, T, dtype, monkeypatch):
    monkeypatch.setattr(cumulative_module, "BLOCK", block)
    g = torch.Generator().manual_seed(T)
    increments = (1.0 + 0.5 * torch.randn(3, T, 2, 3, generator=g, dtype=torch.float64)).to(dtype)
    frequencies = torch.rand(3, generator=g) * 2
    initial = torch.randn(3, 2, 3, generator=g, dtype=torch.float64) * 1e3
    ids = _segment_ids(T, block, seed=T)
    leaves = [increments.requires_grad_(), frequencies.requires_grad_(), initial.requires_grad_()]
    theta, final = cumulative_angles(*leaves, ids)
    reference, reference_final = _reference_with_restarts(*leaves, ids)
    assert theta.dtype == dtype and final.dtype == torch.float64
    if dtype == torch.float32:
        assert _circular_error(theta, reference) < 2e-5
    else:
        torch.testing.assert_close(theta, reference, rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(final, reference_final, rtol=1e-12, atol=1e-9)
    weights = torch.randn(theta.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((theta * weights.to(dtype)).sum() + final.sum(), leaves)
    expected = torch.autograd.grad((reference * weights).sum() + reference_final.sum(), leaves)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-4)


def test_restarts_gradcheck_float64(monkeypatch):
    monkeypatch.setattr(cumulative_module, "BLOCK", 4)
    g = torch.Generator().manual_seed(7)
    increments = torch.randn(2, 11, 1, 2, generator=g, dtype=torch.float64).requires_grad_()
    frequencies = torch.rand(2, generator=g, dtype=torch.float64).requires_grad_()
    initial = torch.randn(2, 1, 2, generator=g, dtype=torch.float64).requires_grad_()
    ids = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2], [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]])
    inputs = (increments, frequencies, initial)
    assert torch.autograd.gradcheck(lambda *a: cumulative_angles(*a, ids), inputs)


def test_restarts_bias_drift_over_a_million_tokens():
    """+1 per token in three packed documents: theta = position in document + 1, to < 1e-3."""
    lengths = [300_001, 450_000, MILLION - 750_001]
    ids = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))[None]
    frequencies = torch.tensor([1.0, 1.0001])
    theta, final = cumulative_angles(torch.ones(1, MILLION, 1, 2), frequencies, None, ids)
    positions = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) for n in lengths])
    exact = positions[None, :, None, None] * frequencies.double()
    assert _circular_error(theta, exact) < 1e-3
    assert final[0, 0, 0].item() == lengths[-1]
