"""evaluate_lengths: the tokens it scores, its values against a float64 hand loop, documents."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from selrope.evaluation import evaluate_length, evaluate_lengths, scored_target_count
from selrope.models import LanguageModel, LMConfig

V = 11


def test_every_length_scores_the_same_claimed_tokens(make_split, stand_in_model):
    split = make_split([6, 3, 12, 9, 4, 7, 5], V)  # N = 54
    N = len(split.tokens)
    # the stream's positions as token ids, so the inputs a model sees say what it scores
    split = type(split)(np.arange(N, dtype=np.uint16), split.doc_starts, 0, N)
    lengths = [3, 4, 8]
    S = (N - 1) // 8 * 8
    assert scored_target_count(N, 8) == S == 48
    for max_tokens, expected in ((None, S), (20, 16)):
        model = stand_in_model(N)
        results = evaluate_lengths(model, split, lengths, batch_size=2, max_tokens=max_tokens)
        assert list(results) == lengths
        # calls by window width: the full windows of each length, and 16 = 5 * 3 + a window of 1
        owner = {1: 3, 3: 3, 4: 4, 8: 8}
        for length in lengths:
            calls = [ids for ids, _, _ in model.calls if owner[ids.shape[1]] == length]
            targets = np.concatenate([ids.flatten().numpy() + 1 for ids in calls])
            np.testing.assert_array_equal(np.sort(targets), np.arange(1, expected + 1))
            assert results[length]["tokens"] == expected
            assert results[length]["windows"] == math.ceil(expected / length)
            assert all(ids.shape[0] <= 2 for ids in calls)


def _hand_loop(model, split, length, scored):
    """Per-target NLL by hand, float64, each document piece of each window run alone."""
    tokens = split.tokens.astype(np.int64)
    document = np.searchsorted(split.doc_starts, np.arange(len(tokens)), side="right") - 1
    sums, counts = np.zeros(length), np.zeros(length)
    for window_start in range(0, scored, length):
        window_end = min(window_start + length, scored)
        piece_start = window_start
        while piece_start < window_end:
            piece_end = piece_start + 1
            while piece_end < window_end and document[piece_end] == document[piece_start]:
                piece_end += 1
            inputs = torch.tensor(tokens[piece_start:piece_end])[None]
            with torch.no_grad():
                log_probs = torch.log_softmax(model(inputs)[0], dim=-1)
            for t in range(piece_end - piece_start):
                target = tokens[piece_start + t + 1]
                sums[piece_start - window_start + t] -= float(log_probs[t, target])
                counts[piece_start - window_start + t] += 1
            piece_start = piece_end
    return sums, counts


@pytest.mark.parametrize("lengths", [[5, 16], [16, 7, 2]])
def test_equals_a_float64_hand_loop_over_windows_and_documents(lengths, make_split, stand_in_model):
    split = make_split([3, 10, 1, 20, 6, 2, 9], V, seed=1)  # N = 59: S = 48 for max L = 16
    model = stand_in_model(V, seed=1)
    reference = copy.deepcopy(model).double()
    results = evaluate_lengths(model, split, lengths, batch_size=3)
    for length in lengths:
        sums, counts = _hand_loop(reference, split, length, 48)
        result = results[length]
        assert result["tokens"] == counts.sum() == 48
        assert result["nll"] == pytest.approx(sums.sum() / 48, rel=1e-6)
        assert result["perplexity"] == pytest.approx(math.exp(sums.sum() / 48), rel=1e-6)
        assert len(result["loss_by_position"]) == length
        np.testing.assert_allclose(result["loss_by_position"], sums / counts, rtol=1e-6)


def test_a_window_never_reads_another_document(make_split, stand_in_model):
    split = make_split([5, 8, 6], V, seed=2)  # N = 23: one window of 22 holds all three
    model = stand_in_model(V, seed=2)
    before = evaluate_length(model, split, 22, 22, batch_size=1)["loss_by_position"]
    tokens = split.tokens.copy()
    tokens[3] = tokens[3] % (V - 1) + 1  # another token inside document 0
    changed = type(split)(tokens, split.doc_starts, 0, V)
    after = evaluate_length(model, changed, 22, 22, batch_size=1)["loss_by_position"]
    second = split.doc_starts[1]  # document 1's inputs start here
    np.testing.assert_array_equal(before[second:], after[second:])
    # the model does read earlier tokens of the same document
    assert not np.allclose(before[3:second], after[3:second])


def test_eval_mode_during_and_training_mode_restored(make_split, stand_in_model):
    split = make_split([10, 10], V)
    model = stand_in_model(V)
    model.train()
    evaluate_lengths(model, split, [4], batch_size=8)
    assert model.training
    assert not any(training for _, _, training in model.calls)
    assert all(ids.dtype == torch.int64 and ids.shape == seg.shape for ids, seg, _ in model.calls)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lengths": []}, "lengths must be positive integers"),
        ({"lengths": [0, 4]}, "lengths must be positive integers"),
        ({"lengths": [64]}, "lengths: the longest length 64 needs a split of more than 64"),
        ({"lengths": [4], "batch_size": 0}, "batch_size must be a positive integer"),
        ({"lengths": [8], "max_tokens": 4}, "max_tokens must be at least the longest length 8"),
    ],
)
def test_bad_arguments(kwargs, message, make_split, stand_in_model):
    split = make_split([10, 10], V)
    with pytest.raises(ValueError, match=message):
        evaluate_lengths(stand_in_model(V), split, **{"batch_size": 2, **kwargs})


@pytest.mark.parametrize(("mixer", "rotary"), [("attention", "rope"), ("gla", "selective")])
def test_real_language_model_equals_the_hand_loop(mixer, rotary, make_split):
    split = make_split([3, 10, 1, 20, 6, 2, 9], V, seed=3)
    config = LMConfig(
        vocab_size=V, d_model=16, n_layers=2, n_heads=2, mixer=mixer, rotary={"type": rotary}
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LanguageModel(config)
    reference = copy.deepcopy(model).double()
    results = evaluate_lengths(model, split, [5, 16], batch_size=2)
    for length in (5, 16):
        sums, counts = _hand_loop(reference, split, length, 48)
        assert results[length]["nll"] == pytest.approx(sums.sum() / 48, rel=1e-5)
        np.testing.assert_allclose(results[length]["loss_by_position"], sums / counts, rtol=1e-5)
