"""selrope analyze complex: the extracted eigenvalues are those of the complex recurrence."""

from __future__ import annotations

import pytest
import torch
from parity_models import PARITY_ROTARY, random_parity_model

from selrope.analysis.eigenvalues import (
    complex_recurrence,
    model_eigenvalues,
    recurrence_mismatch,
    token_eigenvalues,
)
from selrope.analysis.probes import mixer_inputs, selective_rotary
from selrope.ops import recurrent_gla
from selrope.rotary import apply_rotary


def words(seed: int = 0, batch: int = 3, length: int = 17) -> torch.Tensor:
    ids = torch.randint(0, 2, (batch, length), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 2
    return ids


@pytest.mark.parametrize("rotary_source", ["layer", "embedding"])
def test_gla_layers_are_the_complex_recurrence_of_the_extracted_eigenvalues(
    rotary_source: str,
) -> None:
    model = random_parity_model(n_layers=2, rotary_source=rotary_source)
    assert recurrence_mismatch(model, words()) < 1e-10
    eigenvalues = model_eigenvalues(model, words())
    assert eigenvalues.shape == (2, 3, 17, 2, 4) and eigenvalues.dtype == torch.complex128
    assert bool((eigenvalues.abs() <= 1).all())
    # Not trivially real or constant: angles differ between the tokens.
    assert float(eigenvalues.angle().std()) > 0.1


def test_complex_recurrence_is_gla_on_rotated_q_and_k_and_needs_the_right_phases() -> None:
    g = torch.Generator().manual_seed(0)
    B, T, H, D, V = 2, 9, 2, 6, 3
    q, k = (torch.randn(B, T, H, D, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, T, H, V, generator=g, dtype=torch.float64)
    log_alpha = -torch.rand(B, T, H, D // 2, generator=g, dtype=torch.float64)
    steps = 2 * torch.randn(B, T, H, D // 2, generator=g, dtype=torch.float64)
    theta = steps.cumsum(1)
    expected, _ = recurrent_gla(
        apply_rotary(q, theta), apply_rotary(k, theta), v, torch.cat([log_alpha] * 2, dim=-1)
    )
    eigenvalues = torch.polar(log_alpha.exp(), steps)
    torch.testing.assert_close(complex_recurrence(q, k, v, eigenvalues), expected)
    wrong = complex_recurrence(q, k, v, eigenvalues.conj())
    assert float((wrong - expected).abs().max()) > 1e-2


def test_token_eigenvalues_are_the_step_eigenvalues_at_the_end_of_a_run() -> None:
    model = random_parity_model(seed=4)
    per_token = token_eigenvalues(model)
    assert per_token.shape == (1, 2, 2, 4)
    for token in (0, 1):
        run = torch.tensor([[2] + [token] * 16])
        torch.testing.assert_close(per_token[:, token], model_eigenvalues(model, run)[:, 0, -1])
    # The decay of a token is its GLA gate: alpha = exp(log_decay(x)) of that token's input.
    record = mixer_inputs(model, torch.tensor([[2, 1]]))[0]
    alpha = record.mixer.log_decay(record.x)[0, -1, :, :4].exp().double()
    torch.testing.assert_close(per_token[0, 1].abs(), alpha, rtol=1e-6, atol=1e-7)
    assert selective_rotary(record.mixer) is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tie_pair_decay": False}, "not tied"),
        ({"mixer": "attention"}, "expected GLA layers"),
        ({"mixer": "gdn"}, "expected GLA layers"),
        ({"rotary": {"type": "rope"}}, "expected GLA layers"),
        ({"rotary": {**PARITY_ROTARY, "interleaved": True}}, "interleaved"),
    ],
)
def test_layers_that_are_not_a_complex_recurrence_are_refused(overrides, message) -> None:
    model = random_parity_model(**overrides)
    with pytest.raises(ValueError, match=message):
        token_eigenvalues(model)
