"""Packed documents through the whole model: packed logits == each document run alone."""

from __future__ import annotations

import pytest
import torch
from tiny_models import MIXERS, ROTARIES, tiny_model

from selrope.models import LanguageModel, LMConfig

# chunk_size 8 (tiny_model): documents straddle chunk edges, one has length 1, one starts at
# t = 8, the first position of a chunk.
LENGTHS = [5, 3, 1, 9, 4]
LENGTHS_ROW2 = [8, 2, 12]


def cu_seqlens(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([0, *lengths]).cumsum(0)


def alone(model: LanguageModel, ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Logits ``(1, T, V)`` of each document of the one-row ``ids`` run alone, concatenated."""
    return torch.cat([model(piece) for piece in ids.split(lengths, dim=1)], dim=1)


def random_ids(B: int, T: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 23, (B, T), generator=torch.Generator().manual_seed(seed))


CASES = [(m, r, "none") for m in MIXERS for r in ROTARIES] + [
    (m, "nope", a) for m in MIXERS for a in ("sinusoidal", "learned")
]


@pytest.mark.parametrize(("mixer", "rotary", "absolute"), CASES)
def test_packed_row_equals_documents_alone(mixer: str, rotary: str, absolute: str) -> None:
    model = tiny_model(mixer, ROTARIES[rotary], absolute_position=absolute)
    ids = random_ids(1, sum(LENGTHS), seed=1)
    with torch.no_grad():
        packed = model(ids, cu_seqlens=cu_seqlens(LENGTHS))
        expected = alone(model, ids, LENGTHS)
        plain = model(ids)
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=1e-5)
    # The documents do interact without the packing information (the test can fail).
    assert not torch.allclose(plain, expected, atol=1e-3)


@pytest.mark.parametrize("rotary", ["rope", "selective"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_batch_of_two_packed_rows(mixer: str, rotary: str) -> None:
    model = tiny_model(mixer, ROTARIES[rotary], absolute_position="sinusoidal")
    T = sum(LENGTHS)
    assert sum(LENGTHS_ROW2) == T
    ids = random_ids(2, T, seed=2)
    segment_ids = torch.stack(
        [
            torch.arange(len(lengths)).repeat_interleave(torch.tensor(lengths))
            for lengths in (LENGTHS, LENGTHS_ROW2)
        ]
    )
    with torch.no_grad():
        packed = model(ids, segment_ids=segment_ids)
        expected = torch.cat(
            [alone(model, ids[:1], LENGTHS), alone(model, ids[1:], LENGTHS_ROW2)], dim=0
        )
    torch.testing.assert_close(packed, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mixer", ["gla", "gdn"])
def test_packed_prefill_then_decode_continues_the_last_document(mixer: str) -> None:
    model = tiny_model(mixer, ROTARIES["selective"], absolute_position="learned")
    ids = random_ids(1, sum(LENGTHS) + 4, seed=3)
    with torch.no_grad():
        _, cache = model(ids[:, :-4], use_cache=True, cu_seqlens=cu_seqlens(LENGTHS))
        steps = []
        for t in range(ids.shape[1] - 4, ids.shape[1]):
            logits, cache = model(ids[:, t : t + 1], cache)
            steps.append(logits)
        expected = model(ids[:, sum(LENGTHS[:-1]) :])[:, -4:]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("absolute", ["sinusoidal", "learned"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_absolute_positions_decode_equals_parallel(mixer: str, absolute: str) -> None:
    model = tiny_model(mixer, ROTARIES["nope"], absolute_position=absolute)
    ids = random_ids(2, 13, seed=4)
    with torch.no_grad():
        full = model(ids)
        logits, cache = model(ids[:, :6], use_cache=True)
        steps = [logits]
        for t in range(6, ids.shape[1]):
            logits, cache = model(ids[:, t : t + 1], cache)
            steps.append(logits)
    assert cache.position.tolist() == [13, 13]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


def test_learned_positions_beyond_the_table_raise() -> None:
    model = tiny_model("gla", ROTARIES["nope"], absolute_position="learned", max_positions=8)
    with torch.no_grad():
        _, cache = model(random_ids(1, 8, seed=5), use_cache=True)
        with pytest.raises(ValueError, match="max_positions"):
            model(random_ids(1, 1, seed=6), cache)
        # Packed documents each restart at 0, so a long packed row fits.
        model(random_ids(1, 12, seed=7), cu_seqlens=torch.tensor([0, 6, 12]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cu_seqlens": torch.tensor([0, 4, 9])}, "cu_seqlens"),  # ends before T = 10
        ({"cu_seqlens": torch.tensor([1, 10])}, "cu_seqlens"),
        ({"cu_seqlens": torch.tensor([0, 6, 6, 10])}, "cu_seqlens"),
        (
            {"cu_seqlens": torch.tensor([0, 10]), "segment_ids": torch.zeros(1, 10).long()},
            "segment_ids",
        ),
        ({"segment_ids": torch.zeros(1, 9).long()}, "segment_ids"),
        ({"segment_ids": torch.zeros(1, 10)}, "segment_ids"),
    ],
)
def test_bad_packing_arguments_raise(kwargs: dict, match: str) -> None:
    model = tiny_model("attention", ROTARIES["rope"])
    with pytest.raises(ValueError, match=match):
        model(random_ids(1, 10, seed=8), **kwargs)


def test_cu_seqlens_needs_a_single_row() -> None:
    model = tiny_model("gla", ROTARIES["rope"])
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(random_ids(2, 10, seed=9), cu_seqlens=torch.tensor([0, 4, 10]))


def test_absolute_position_config_is_validated() -> None:
    with pytest.raises(ValueError, match="absolute_position"):
        LMConfig(vocab_size=5, absolute_position="rotary")
    with pytest.raises(ValueError, match="max_positions"):
        LMConfig(vocab_size=5, max_positions=0)
