"""Multi-query associative recall (MQAR) following Zoology's rules (research notes §C.1).

One row of length L (vocab V, n = num_kv_pairs):
- context, positions 0 .. 2n-1: `k1 v1 k2 v2 ... kn vn`, keys drawn without replacement from
  [1, V/2) and values without replacement from [V/2, V) (V/2 rounded down);
- query region, positions 2n .. L-1: each key appears exactly once, at position 2n + 2*gap, where
  the n gaps are distinct values in {0 .. (L-2n)/2 - 1} drawn without replacement with power-law
  weights p(g) ∝ (g+1)^(a-1) (a = power_a = 0.01 in Zoology, so early gaps are favoured), and
  key i (in context order) is queried at the i-th gap drawn;
- every other query-region position holds 0, or a uniformly random token from [1, V) when
  random_non_queries is set;
- targets are -100 everywhere except at each query's own position, where the target is that
  key's value (the next-token shift is already applied: the model answers at the query token).

Constraints: L even, 4n <= L, 1 <= n <= V/2 - 1. Zoology also asserts V > L; that is not needed
here and not enforced.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from selrope.tasks.base import (
    IGNORE_INDEX,
    Seed,
    TaskData,
    as_rng,
    check_int,
    check_int_list,
    sample_without_replacement,
    stream,
    to_long,
)


def _check_mqar(seq_len: int, num_kv_pairs: int, vocab_size: int, power_a: float) -> None:
    check_int("seq_len", seq_len, 4)
    check_int("num_kv_pairs", num_kv_pairs, 1)
    check_int("vocab_size", vocab_size, 4)
    if seq_len % 2:
        raise ValueError(f"seq_len must be even; got {seq_len}")
    if 4 * num_kv_pairs > seq_len:
        raise ValueError(
            f"need 4 * num_kv_pairs <= seq_len; got num_kv_pairs={num_kv_pairs}, seq_len={seq_len}"
        )
    if num_kv_pairs > vocab_size // 2 - 1:
        raise ValueError(
            f"num_kv_pairs={num_kv_pairs} exceeds the {vocab_size // 2 - 1} keys of "
            f"vocab_size={vocab_size}"
        )
    if not isinstance(power_a, (int, float)) or not 0 < power_a <= 1:
        raise ValueError(f"power_a must be in (0, 1]; got {power_a!r}")


def mqar(
    num_examples: int,
    seq_len: int,
    num_kv_pairs: int,
    vocab_size: int,
    seed: Seed,
    *,
    power_a: float = 0.01,
    random_non_queries: bool = False,
) -> tuple[Tensor, Tensor]:
    """Generate MQAR rows.

    Args:
        num_examples: N.
        seq_len: L (even).
        num_kv_pairs: n, key-value pairs per row (4n <= L).
        vocab_size: V; keys in [1, V/2), values in [V/2, V).
        seed: int / numpy Generator / torch Generator.
        power_a: exponent a of the gap distribution p(g) ∝ (g+1)^(a-1).
        random_non_queries: fill non-query positions of the query region with random tokens from
            [1, V) instead of 0.

    Returns:
        (inputs, targets), LongTensors (N, L); exactly n targets per row are not -100.
    """
    _check_mqar(seq_len, num_kv_pairs, vocab_size, power_a)
    check_int("num_examples", num_examples, 0)
    rng = as_rng(seed)
    n, N, half = num_kv_pairs, num_examples, vocab_size // 2
    keys = 1 + sample_without_replacement(rng, half - 1, n, N)
    values = half + sample_without_replacement(rng, vocab_size - half, n, N)

    inputs = np.zeros((N, seq_len), dtype=np.int64)
    inputs[:, 0 : 2 * n : 2] = keys
    inputs[:, 1 : 2 * n : 2] = values

    # n distinct gaps with power-law weights: Gumbel-top-k is exact sampling without replacement
    # in proportion to the weights, and the n highest scores in decreasing order are the gaps in
    # the order of drawing one at a time and renormalising; key i gets the i-th (Zoology's rule).
    # A stable full sort makes that order a function of the scores alone (argpartition's order
    # is unspecified and changes with numpy's SIMD code path, i.e. with the CPU).
    num_gaps = (seq_len - 2 * n) // 2
    log_weights = (power_a - 1) * np.log(np.arange(1, num_gaps + 1))
    scores = log_weights[None, :] + rng.gumbel(size=(N, num_gaps))
    gaps = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    query_pos = 2 * n + 2 * gaps  # gaps[:, i] is where key i is queried

    if random_non_queries:
        inputs[:, 2 * n :] = rng.integers(1, vocab_size, size=(N, seq_len - 2 * n))
    rows = np.arange(N)[:, None]
    inputs[rows, query_pos] = keys
    targets = np.full((N, seq_len), IGNORE_INDEX, dtype=np.int64)
    targets[rows, query_pos] = values
    return to_long(inputs), to_long(targets)


def _one_per_length(name: str, value: object, lengths_name: str, count: int) -> list[int]:
    """``value`` (an int or a list) as one positive int per length: an int applies to all."""
    values = check_int_list(name, value, 1)
    if len(values) == 1:
        values = values * count
    if len(values) != count:
        raise ValueError(
            f"{name} must be an int or match {lengths_name} in length; got {len(values)} "
            f"values for {count} lengths"
        )
    return values


def build_mqar(
    seed: int,
    *,
    seq_len: int | list[int] = 64,
    num_kv_pairs: int | list[int] = 4,
    vocab_size: int = 512,
    num_train: int = 20_000,
    test_lens: int | list[int] | None = None,
    test_kv_pairs: int | list[int] | None = None,
    num_test: int = 1_000,
    power_a: float = 0.01,
    random_non_queries: bool = False,
) -> TaskData:
    """The MQAR dataset (Zoology protocol, CPU-scale defaults).

    Args:
        seed: base seed; train and each test length use independent streams of it.
        seq_len: L of the training rows; a list trains on a mixture (num_train rows of each,
            shorter rows right-padded with 0 and targets -100 to the longest L).
        num_kv_pairs: n for each entry of seq_len (an int applies to all).
        vocab_size: V (Zoology: 8192).
        num_train: training rows per (L, n) setting (Zoology figure 2: 100,000).
        test_lens: test lengths (default: the training lengths); tests[L] is (num_test, L).
        test_kv_pairs: n for each test length (default: the training n for a training length,
            else L // 16, the ratio of the standard grid (64,4), (128,8), (256,16)).
        num_test: rows per test length (Zoology: 3,000).
        power_a: gap power-law exponent.
        random_non_queries: fill the non-query positions of the query region with random tokens
            from [1, V) instead of 0.
    """
    train_lens = check_int_list("seq_len", seq_len, 4)
    train_kv = _one_per_length("num_kv_pairs", num_kv_pairs, "seq_len", len(train_lens))
    check_int("num_train", num_train, 1)
    check_int("num_test", num_test, 1)
    test_list = train_lens if test_lens is None else check_int_list("test_lens", test_lens, 4)
    known = dict(zip(train_lens, train_kv, strict=True))
    if test_kv_pairs is None:
        test_kv = [known.get(length, length // 16) for length in test_list]
    else:
        test_kv = _one_per_length("test_kv_pairs", test_kv_pairs, "test_lens", len(test_list))
    if len(set(test_list)) != len(test_list):
        raise ValueError(f"test_lens must be distinct; got {test_list}")
    for length, n in zip(train_lens + test_list, train_kv + test_kv, strict=True):
        _check_mqar(length, n, vocab_size, power_a)

    rng = stream(seed, 0)
    width = max(train_lens)
    parts_in, parts_tg = [], []
    for length, n in zip(train_lens, train_kv, strict=True):
        x, y = mqar(
            num_train,
            length,
            n,
            vocab_size,
            rng,
            power_a=power_a,
            random_non_queries=random_non_queries,
        )
        parts_in.append(np.pad(x.numpy(), ((0, 0), (0, width - length))))
        parts_tg.append(
            np.pad(y.numpy(), ((0, 0), (0, width - length)), constant_values=IGNORE_INDEX)
        )
    order = rng.permutation(num_train * len(train_lens))
    train = (to_long(np.concatenate(parts_in)[order]), to_long(np.concatenate(parts_tg)[order]))

    tests = {
        length: mqar(
            num_test,
            length,
            n,
            vocab_size,
            stream(seed, 1, length),
            power_a=power_a,
            random_non_queries=random_non_queries,
        )
        for length, n in zip(test_list, test_kv, strict=True)
    }
    params = {
        "seq_len": train_lens if len(train_lens) > 1 else train_lens[0],
        "num_kv_pairs": train_kv if len(train_kv) > 1 else train_kv[0],
        "vocab_size": vocab_size,
        "num_train": num_train,
        "test_lens": test_list,
        "test_kv_pairs": test_kv,
        "num_test": num_test,
        "power_a": power_a,
        "random_non_queries": bool(random_non_queries),
        "seed": seed,
    }
    return TaskData("mqar", vocab_size, train, tests, width, params)
