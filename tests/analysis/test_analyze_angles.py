"""selrope analyze angles: the per-token angle increments are what Selective RoPE computes."""

from __future__ import annotations

import math

import pytest
import torch
from parity_models import PARITY_ROTARY, random_parity_model

from selrope.analysis.angles import (
    near,
    parity_pairs,
    phase_drift,
    run_inputs,
    selective_layers,
    step_increments,
    token_increments,
    wrap,
)
from selrope.analysis.parity_model import BOS
from selrope.analysis.probes import mixer_inputs, selective_rotary
from selrope.rotary import apply_rotary


def test_step_increments_rotate_q_as_the_module_does() -> None:
    """Their running sum, as angles, turns q into the module's own rotated q (any layer)."""
    model = random_parity_model(n_layers=2)
    ids = torch.randint(0, 3, (2, 21), generator=torch.Generator().manual_seed(0))
    calls, outputs = [], []
    hooks = []
    for block in model.blocks:
        rotary = selective_rotary(block.mixer)
        hooks.append(rotary.register_forward_pre_hook(lambda _, args: calls.append(args)))
        hooks.append(rotary.register_forward_hook(lambda _, args, out: outputs.append(out)))
    with torch.no_grad():
        model(ids)
    for hook in hooks:
        hook.remove()
    records = mixer_inputs(model, ids)
    assert len(calls) == len(records) == 2
    for (q, _, x, *_), (q_rotated, *_), record in zip(calls, outputs, records, strict=True):
        rotary = selective_rotary(record.mixer)
        torch.testing.assert_close(record.rotary_input, x)
        theta = step_increments(rotary, record.rotary_input).cumsum(1)
        torch.testing.assert_close(apply_rotary(q.double(), theta).float(), q_rotated,
                                   atol=1e-4, rtol=1e-4)  # fmt: skip


def test_token_increment_is_the_tokens_contribution_to_every_later_phase() -> None:
    """Linear conv, no gate: flipping one token (not among the last conv_size - 1) moves the
    final phase by the difference of the two tokens' increments."""
    model = random_parity_model(seed=1)
    increments = token_increments(model)  # (1, 2, H, R)
    rotary = selective_rotary(model.blocks[0].mixer)
    g = torch.Generator().manual_seed(3)
    base = torch.randint(0, 2, (1, 30), generator=g)
    base[0, 0] = BOS
    base[0, 12] = 0
    flipped = base.clone()
    flipped[0, 12] = 1
    phases = []
    for ids in (base, flipped):
        record = mixer_inputs(model, ids)[0]
        _, state = rotary.angles(record.rotary_input.double(), None, torch.float64)
        phases.append(state.phase * rotary.frequencies().double())
    moved = wrap(phases[1] - phases[0])[0]
    expected = wrap(increments[0, 1] - increments[0, 0])
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=0)
    assert float(expected.abs().max()) > 0.1  # the tokens do differ


def test_token_increments_are_the_modules_increment_at_the_end_of_a_run() -> None:
    model = random_parity_model(seed=2, n_layers=2)
    increments = token_increments(model, run_length=9)
    assert increments.shape == (2, 2, 2, 4)
    for layer, record, rotary in selective_layers(run_inputs(model, run_length=9)):
        theta, _ = rotary.angles(record.rotary_input, None, torch.float64)
        torch.testing.assert_close(theta[:, -1] - theta[:, -2], increments[layer])


def test_parity_pairs_find_the_theorys_solution() -> None:
    increments = torch.zeros(1, 2, 1, 4, dtype=torch.float64)
    increments[0, 0, 0] = torch.tensor([2 * math.pi - 0.05, 1.0, 0.0, 0.6])  # token 0
    increments[0, 1, 0] = torch.tensor([3 * math.pi + 0.1, 1.0 + math.pi, 1.0, -math.pi])  # 1
    masks = parity_pairs(increments)
    assert masks["flip"][0, 0].tolist() == [True, False, False, False]
    assert masks["difference"][0, 0].tolist() == [True, True, False, False]
    assert masks["token 1 near pi"][0, 0].tolist() == [True, False, False, True]
    assert bool(near(torch.tensor(-math.pi), math.pi)) and not bool(near(torch.tensor(2.5), 0.0))
    assert float(wrap(torch.tensor(3 * math.pi / 2))) == pytest.approx(-math.pi / 2)


def test_phase_drift_is_the_wrapped_error_per_token_times_the_count() -> None:
    increments = torch.zeros(1, 2, 1, 3, dtype=torch.float64)
    f64 = {"dtype": torch.float64}
    increments[0, 0, 0] = torch.tensor([2 * math.pi - 0.05, 0.01, 0.0], **f64)  # token 0
    increments[0, 1, 0] = torch.tensor([3 * math.pi + 0.1, math.pi - 0.01, math.pi], **f64)
    drift = phase_drift(increments, length=100)
    # 50 x (+0.1 - 0.05); 50 x (-0.01 + 0.01); exact
    torch.testing.assert_close(drift[0, 0], torch.tensor([2.5, 0.0, 0.0], dtype=torch.float64))


def test_phase_drift_predicts_the_phase_of_a_balanced_word() -> None:
    """A word of 20 ones and 20 zeros against a word of 40 zeros, both between BOS and a run of
    zeros (so the conv has seen every word token): the phases differ by 20 pi plus the token-1
    part of the drift minus the token-0 part."""
    model = random_parity_model(seed=4)
    increments = token_increments(model)
    rotary = selective_rotary(model.blocks[0].mixer)
    word = torch.randperm(40, generator=torch.Generator().manual_seed(0)) % 2
    bos, tail = torch.tensor([BOS]), torch.zeros(8, dtype=torch.long)
    zeros = torch.zeros(40, dtype=torch.long)
    rows = torch.stack([torch.cat([bos, word, tail]), torch.cat([bos, zeros, tail])])
    record = mixer_inputs(model, rows)[0]
    _, state = rotary.angles(record.rotary_input.double(), None, torch.float64)
    phases = state.phase * rotary.frequencies().double()  # (2, H, R)
    # 20 (token 1 - pi) - 20 token 0 = drift(40) - 40 token 0, all mod 2 pi
    predicted = phase_drift(increments, 40)[0] - 40 * wrap(increments[0, 0])
    gap = wrap(phases[0] - phases[1] - 20 * math.pi - predicted)
    torch.testing.assert_close(gap, torch.zeros_like(gap), atol=1e-6, rtol=0)
    assert float(predicted.abs().max()) > 0.1  # a random model is far from the automaton


def test_a_model_without_selective_rope_is_refused() -> None:
    model = random_parity_model(rotary={"type": "rope"})
    with pytest.raises(ValueError, match="no Selective RoPE layer"):
        token_increments(model)
    assert PARITY_ROTARY["type"] == "selective"
