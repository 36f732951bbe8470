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
            torch.testing.assert_close(
                real(logits, mask, b), model(row[None])[0], atol=1e-5, rtol=1e-5
            )
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
    assert all(
        torch.equal(a, b)
        for a, b in zip(listed, generate_alone(model, rows, max_new_tokens=6), strict=True)
    )


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
@pytest.mark.parametrize(
    ("mixer", "rotary"), [(m, r) for m in MIXERS for r in ("rope", "selective")]
)
def test_padded_training_batch_has_the_gradients_of_the_unpadded_rows(
    mixer: str, rotary: str, side: str
) -> None:
    # float64: the two sums of per-token gradients are equal up to their order of addition.
    model = tiny_model(mixer, ROTARIES[rotary], absolute_position="sinusoidal").double().train()
    rows = prompts()
    ids, mask = padded(rows, side)
    # Each real token predicts the next real token; pads and each row's last real token have no
    # target.
    targets = torch.full_like(ids, -100)
    for b, row in enumerate(rows):
        where = mask[b].nonzero()[:, 0]
        targets[b, where[:-1]] = row[1:]
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
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("mixer", MIXERS)
def test_all_ones_mask_is_the_unpadded_model_and_masks_combine_with_packing(mixer: str) -> None:
    model = tiny_model(mixer, ROTARIES["selective"], absolute_position="learned")
    ids = torch.randint(0, 23, (1, 20), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=torch.ones_like(ids)), model(ids))
        # A packed row [5, 7] with 3 pads between the documents and 5 at the end.
        mask = torch.tensor([[1] * 5 + [0] * 3 + [1] * 7 + [0] * 5])
        cu_seqlens = torch.tensor([0, 8, 20])
        logits = model(ids, cu_seqlens=cu_seqlens, attention_mask=mask)
        segment_ids = torch.tensor([[0] * 8 + [1] * 12])
        assert torch.equal(logits, model(ids, segment_ids=segment_ids, attention_mask=mask))
        expected = torch.cat([model(ids[:, :5]), model(ids[:, 8:15])], dim=1)
        torch.testing.assert_close(logits[mask.bool()][None], expected, atol=1e-5, rtol=1e-5)


def test_bad_masks_raise_naming_the_argument() -> None:
    model = tiny_model("gla", ROTARIES["rope"])
    ids = torch.zeros(2, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        model(ids, attention_mask=torch.ones(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="pads between real tokens"):
        model(ids, attention_mask=torch.tensor([[1, 0, 1, 1, 1], [1] * 5]))
    with pytest.raises(ValueError, match="generate needs left padding"):
        model.generate(ids, 2, attention_mask=torch.tensor([[1, 1, 1, 0, 0], [1] * 5]))
    with pytest.raises(ValueError, match="one per row"):
        model.generate(ids, 2, temperature=1.0, generator=[torch.Generator()])
