import pytest
import torch

from selrope.tasks import (
    IGNORE_INDEX,
    build_task,
    compression,
    fuzzy_recall,
    in_context_recall,
    memorization,
    selective_copying,
)


def full_sequence(x, y):
    """S = inputs followed by the last target (valid for full-shift training rows)."""
    return torch.cat([x, y[:, -1:]], dim=1)


def check_full_shift(x, y, ignore_pad=False):
    valid = y != IGNORE_INDEX
    assert torch.equal(x[:, 1:][valid[:, :-1]], y[:, :-1][valid[:, :-1]])
    if not ignore_pad:
        assert valid.all()


def runs(row, is_key):
    """Split a sequence into alternating (key run, value run) pairs."""
    pairs, i, n = [], 0, len(row)
    while i < n:
        j = i
        while j < n and is_key(row[j]):
            j += 1
        k = j
        while k < n and not is_key(row[k]):
            k += 1
        pairs.append((tuple(row[i:j]), tuple(row[j:k]), j, k))
        i = k
    return pairs


@pytest.mark.parametrize("noise", [0, 16])
def test_in_context_recall(noise):
    V = 16 + noise
    frac = 0.4 if noise else 0.0
    x, y = in_context_recall(50, 64, V, seed=1, noise_vocab_size=noise, frac_noise=frac)
    check_full_shift(x, y)
    xs, ys = in_context_recall(
        50, 64, V, seed=1, noise_vocab_size=noise, frac_noise=frac, recall_only=True
    )
    assert torch.equal(xs, x)
    S = full_sequence(x, y).tolist()
    for row, targets in zip(S, ys.tolist(), strict=True):
        mapping, expected = {}, [IGNORE_INDEX] * 63
        for p in range(32):
            k, v = row[2 * p], row[2 * p + 1]
            if k >= 16:  # a noise pair: both tokens noise
                assert v >= 16
                continue
            assert k < 8 <= v < 16
            if k in mapping:
                assert mapping[k] == v
                expected[2 * p] = v
            mapping[k] = v
        assert row[62] in mapping and targets[62] == row[63]  # probe key seen before
        assert targets == expected


def test_fuzzy_recall():
    x, y = fuzzy_recall(60, 64, 16, seed=2)
    check_full_shift(x, y, ignore_pad=True)
    xs, ys = fuzzy_recall(60, 64, 16, seed=2, recall_only=True)
    assert torch.equal(xs, x)
    S = full_sequence(x, y)
    for row, targets in zip(S.tolist(), ys.tolist(), strict=True):
        pad = next(i for i, t in enumerate(row) if t != 0)
        assert all(t == 0 for t in row[:pad]) and 0 not in row[pad:]
        mapping, expected = {}, [IGNORE_INDEX] * 63
        pairs = runs(row[pad:], lambda t: 1 <= t < 8)
        for key, value, j, k in pairs:
            assert 1 <= len(key) <= 3 and 1 <= len(value) <= 3
            if key in mapping:
                assert mapping[key] == value
                for pos in range(pad + j, pad + k):
                    expected[pos - 1] = row[pos]
            mapping[key] = value
        assert pairs[-1][0] in {p[0] for p in pairs[:-1]}  # the probe's key appeared before
        assert targets == expected


def test_selective_copying():
    x, y = selective_copying(40, 64, 16, seed=3, num_tokens_to_copy=8)
    check_full_shift(x, y)
    xs, ys = selective_copying(40, 64, 16, seed=3, num_tokens_to_copy=8, recall_only=True)
    S = full_sequence(x, y)
    C = 64 - 8 - 1
    for row in S:
        context = row[:C]
        assert row[C] == 15 and torch.equal(context[context != 14], row[C + 1 :])
        assert (context != 14).sum() == 8
    assert torch.equal(ys[:, C:], S[:, C + 1 :]) and torch.all(ys[:, :C] == IGNORE_INDEX)


def test_memorization_uses_a_fixed_map():
    x1, y1 = memorization(64, 32, 256, seed=0)
    x2, y2 = memorization(64, 32, 256, seed=1)
    mapping = {}
    for x, y in [(x1, y1), (x2, y2)]:
        assert torch.all(x[:, 1::2] == 255) and torch.all(y[:, 0::2] == IGNORE_INDEX)
        for k, v in zip(x[:, 0::2].flatten().tolist(), y[:, 1::2].flatten().tolist(), strict=True):
            assert 0 <= k < 127 and 127 <= v < 255 and mapping.setdefault(k, v) == v
    _, y3 = memorization(64, 32, 256, seed=0, map_seed=7)
    assert not torch.equal(y1, y3)


def test_compression_targets_are_the_input():
    x, y = compression(20, 32, 16, seed=4)
    assert torch.all(x[:, -1] == 15) and torch.all(y[:, -1] == IGNORE_INDEX)
    assert torch.equal(x[:, :-1], y[:, :-1]) and int(x[:, :-1].max()) < 15


def test_build_mad_tests_are_recall_only():
    d = build_task("mad_noisy_recall", 0, seq_len=64, num_train=20, num_test=10)
    assert list(d.tests) == [64] and d.vocab_size == 32
    assert torch.all(d.train[1] != IGNORE_INDEX)
    xt, yt = d.tests[64]
    assert (yt != IGNORE_INDEX).sum() < yt.numel() // 2 and torch.all(yt[yt != -100] < 16)


@pytest.mark.parametrize(
    "name,params",
    [
        ("mad_in_context_recall", {"seq_len": 63}),
        ("mad_noisy_recall", {"frac_noise": 1.0}),
        ("mad_noisy_recall", {"noise_vocab_size": 40}),
        ("mad_fuzzy_recall", {"seq_len": 10}),
        ("mad_fuzzy_recall", {"num_motifs": 10_000}),
        ("mad_selective_copying", {"seq_len": 32}),
        ("mad_memorization", {"seq_len": 31}),
        ("mad_compression", {"vocab_size": 1}),
        ("mad_compression", {"num_train": 0}),
        ("mad_memorization", {"frac_noise": 0.1}),
    ],
)
def test_bad_parameters(name, params):
    with pytest.raises(ValueError):
        build_task(name, 0, **params)
