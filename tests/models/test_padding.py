"""Padded batches (Hugging Face ``attention_mask``) through the whole model: every row's real
tokens give exactly what its sequence gives alone, in the forward, the gradients and decoding."""

from __future__ import annotations

import pytest
import torch
from tiny_models import MIXERS, ROTARIES, tiny_model

from selrope.models import LanguageModel

# chunk_size 8 (tiny_model): the longest row is 20, so the pads of the shortest (17) are longer
# than two chunks and the real tokens of the middle row start inside a chunk.
LENGTHS = [3, 13, 20, 1]
CASES = [(m, r, "none") for m in MIXERS for r in ROTARIES] + [
    (m, "nope", a) for m in MIXERS for a in ("sinusoidal", "learned")
]


def prompts(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 23, (n,), generator=gen) for n in LENGTHS]


def padded(rows: list[torch.Tensor], side: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` ``(B, T)``; the pads are random tokens, so that a pad that
    leaks into a real token changes its logits."""
    T = max(len(row) for row in rows)
    ids = torch.randint(0, 23, (len(rows), T), generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(len(rows), T, dtype=torch.int64)
    for b, row in enumerate(rows):
        where = slice(T - len(row), T) if side == "left" else slice(0, len(row))
        ids[b, where] = row
        mask[b, where] = 1
    return ids, mask


def real(x: torch.Tensor, mask: torch.Tensor, b: int) -> torch.Tensor:
    return x[b, mask[b].bool()]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(("mixer", "rotary", "absolute"), CASES)
def test_padded_logits_equal_each_sequence_alone(
    mixer: str, rotary: str, absolute: str, side: str
) -> None:
    model = tiny_model(mixer, ROTARIES[rotary], absolute_position=absolute)
    rows = prompts()
    ids, mask = padded(rows, side)
    with torch.no_grad():
        logits = model(ids, attention_mask=mask)
        for b, row in enumerate(rows):
            torch.testing.assert_close(real(logits, mask, b), model(row[None])[0], atol=1e-5, rtol=1e-5)
        if side == "left":  # the pads do reach the real tokens without the mask
            plain = model(ids)
            assert not torch.allclose(real(plain, mask, 0), model(rows[0][None])[0], atol=1e-3)


def generate_alone(model: LanguageModel, rows: list[torch.Tensor], **kwargs) -> list[torch.Tensor]:
    return [model.generate(row[None], **kwargs)[0] for row in rows]


@pytest.mark.parametrize(("mixer", "rotary", "absolute"), CASES)
def test_padded_generate_equals_each_prompt_alone(mixer: str, rotary: str, absolute: str) -> None:
    model = tiny_model(mixer, ROTARIES[rotary], absolute_position=absolute)
    rows = prompts()
    ids, mask = padded(rows, "left")
    batched = model.generate(ids, 6, attention_mask=mask)
    for b, expected in enumerate(generate_alone(model, rows, max_new_tokens=6)):
        new = batched[b, ids.shape[1] :]
        assert torch.equal(new, expected[len(rows[b]) :]), (b, new, expected)
    # A list of prompts is left-padded for you and comes back without the pads.
    listed = model.generate(rows, 6)
    assert all(torch.equal(a, b) for a, b in zip(listed, generate_alone(model, rows, max_new_tokens=6), strict=True))


@pytest.mark.parametrize("rotary", ["rope", "selective"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_padded_prefill_then_decode_logits_equal_each_prompt_alone(mixer: str, rotary: str) -> None:
    model = tiny_model(mixer, ROTARIES[rotary], absolute_position="learned")
    rows = prompts()
    ids, mask = padded(rows, "left")
    steps = torch.randint(0, 23, (len(rows), 4), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, cache = model(ids, use_cache=True, attention_mask=mask)
        decoded = []
        for t in range(steps.shape[1]):
            logits, cache = model(steps[:, t : t + 1], cache)
            decoded.append(logits)
        decoded = torch.cat(decoded, dim=1)
        for b, row in enumerate(rows):
            expected = model(torch.cat([row, steps[b]])[None])[0, -4:]
            torch.testing.assert_close(decoded[b], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mixer", MIXERS)
def test_sampled_generate_with_a_generator_per_row_equals_each_prompt_alone(mixer: str) -> None:
    model = tiny_model(mixer, ROTARIES["selective"])
    rows = prompts()
    seeds = [11, 12, 13, 14]
    batched = model.generate(
        rows,
        8,
        temperature=1.0,
        top_k=10,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    )
    for row, seed, got in zip(rows, seeds, batched, strict=True):
        alone = model.generate(
            row[None], 8, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(seed)
        )[0]
        assert torch.equal(got, alone)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(("mixer", "rotary"), [(m, r) for m in MIXERS for r in ("rope", "selective")])
def test_padded_training_batch_has_the_gradients_of_the_unpadded_rows(
    mixer: str, rotary: str, side: str
) -> None:
    model = tiny_model(mixer, ROTARIES[rotary], absolute_position="sinusoidal").train()
    rows = prompts()
    ids, mask = padded(rows, side)
    targets = torch.roll(ids, -1, dims=1).masked_fill(mask == 0, -100)
    targets[:, -1] = -100
    if side == "left":
        pass
    else:  # the last real token of each row has no target
        for b, row in enumerate(rows):
            targets[b, len(row) - 1] = -100
    logits = model(ids, attention_mask=mask)
    loss = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
    )
    padded_grads = torch.autograd.grad(loss, list(model.parameters()))
    loss = sum(
        torch.nn.functional.cross_entropy(model(row[None])[0, :-1], row[1:], reduction="sum")
        for row in rows
    )
    alone_grads = torch.autograd.grad(loss, list(model.parameters()))
    for got, expected in zip(padded_grads, alone_grads, strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
