"""String copying with length generalisation (research notes §C.3).

Tokens: letters a..z are 0..25, then `$` (BOS) 26, `|` (separator) 27, `.` (EOS) 28 and `*`
(pad) 29; vocab 30. One example is `$ s | s .` with s uniform over letters.

Training rows pack examples with |s| ~ U{min_len..max_len} back to back into a context of
`context_len` characters; the example that does not fit is cut off and fully masked. inputs =
context[:-1], targets = context[1:] (next-token shift), with a loss only where the target is a
character of the copy or the final `.` of a complete example.

Test rows hold one example with |s| = L each: inputs `$ s | s[:-1]` (2L + 1 tokens) and targets
only at the L positions from `|` onward, where the target is s itself, so for a teacher-forced
single forward pass `sequence_accuracy` is exact-match string accuracy and `token_accuracy` is
character accuracy. (The paper right-pads test rows with `*` to 420; for a causal model padding
on the right changes nothing, so `pad_to` is optional.)
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
    stream,
    to_long,
)

ALPHABET = "abcdefghijklmnopqrstuvwxyz"
BOS, SEP, EOS, PAD = 26, 27, 28, 29
VOCAB = ALPHABET + "$|.*"
VOCAB_SIZE = 30


def encode(text: str) -> list[int]:
    """Characters of `VOCAB` -> token ids."""
    unknown = sorted(set(text) - set(VOCAB))
    if unknown:
        raise ValueError(f"characters {unknown} are not in the copying vocabulary {VOCAB!r}")
    return [VOCAB.index(c) for c in text]


def decode(tokens: Tensor | list[int]) -> str:
    """Token ids -> characters (-100 shown as '_')."""
    ids = tokens.tolist() if isinstance(tokens, Tensor) else tokens
    return "".join("_" if i == IGNORE_INDEX else VOCAB[i] for i in ids)


def copying_train(
    num_examples: int,
    seed: Seed,
    *,
    context_len: int = 420,
    min_len: int = 2,
    max_len: int = 64,
) -> tuple[Tensor, Tensor]:
    """Packed training rows.

    Args:
        num_examples: N rows (each one packed context).
        seed: int / numpy Generator / torch Generator.
        context_len: characters per packed context C (the paper: 420); must hold one example of
            max_len, i.e. C >= 2 * max_len + 3.
        min_len, max_len: string lengths are uniform on {min_len .. max_len}.

    Returns:
        (inputs, targets), LongTensors (N, C - 1).
    """
    check_int("num_examples", num_examples, 0)
    check_int("min_len", min_len, 1)
    check_int("max_len", max_len, min_len)
    check_int("context_len", context_len, 2 * max_len + 3)
    rng = as_rng(seed)
    N, C = num_examples, context_len
    max_examples = C // (2 * min_len + 3) + 1  # enough examples to overfill every context
    lengths = rng.integers(min_len, max_len + 1, size=(N, max_examples))
    ends = np.cumsum(2 * lengths + 3, axis=1)  # exclusive end of each example
    starts = ends - (2 * lengths + 3)

    # Which example covers each position: count example ends <= p (per row, vectorised by
    # offsetting each row's ends into its own range).
    positions = np.arange(C)
    offsets = (np.arange(N) * (ends[:, -1].max() + 1))[:, None]
    flat = np.searchsorted(
        (ends + offsets).ravel(), (positions[None, :] + offsets).ravel(), side="right"
    )
    example = flat.reshape(N, C) - np.arange(N)[:, None] * max_examples
    rows = np.arange(N)[:, None]
    length = lengths[rows, example]
    offset = positions[None, :] - starts[rows, example]  # position inside `$ s | s .`

    context = rng.integers(0, 26, size=(N, C))
    context[offset == 0] = BOS
    context[offset == length + 1] = SEP
    context[offset == 2 * length + 2] = EOS
    copy = (offset >= length + 2) & (offset <= 2 * length + 1)
    source = np.where(copy, positions[None, :] - length - 1, 0)  # copy of s[i] at start + 1 + i
    context = np.where(copy, context[rows, source], context)

    complete = ends[rows, example] <= C
    loss = complete & (offset >= length + 2)  # copied characters and the final `.`
    targets = np.where(loss, context, IGNORE_INDEX)
    return to_long(context[:, :-1]), to_long(targets[:, 1:])


def copying_test(
    string_len: int, num_examples: int, seed: Seed, *, pad_to: int | None = None
) -> tuple[Tensor, Tensor]:
    """One example per row with |s| = string_len, for teacher-forced evaluation.

    Args:
        string_len: L.
        num_examples: N.
        seed: int / numpy Generator / torch Generator.
        pad_to: optional minimum width; rows are right-padded with `*` (targets -100).

    Returns:
        (inputs, targets), LongTensors (N, max(2L + 1, pad_to)); inputs are `$ s | s[:-1]`,
        targets[:, L+1+i] = s[i] for i < L and -100 elsewhere.
    """
    check_int("string_len", string_len, 1)
    check_int("num_examples", num_examples, 0)
    L = string_len
    width = max(2 * L + 1, 0 if pad_to is None else check_int("pad_to", pad_to, 1))
    s = as_rng(seed).integers(0, 26, size=(num_examples, L))
    inputs = np.full((num_examples, width), PAD, dtype=np.int64)
    inputs[:, 0] = BOS
    inputs[:, 1 : L + 1] = s
    inputs[:, L + 1] = SEP
    inputs[:, L + 2 : 2 * L + 1] = s[:, : L - 1]
    targets = np.full((num_examples, width), IGNORE_INDEX, dtype=np.int64)
    targets[:, L + 1 : 2 * L + 1] = s
    return to_long(inputs), to_long(targets)


def build_copying(
    seed: int,
    *,
    context_len: int = 420,
    min_len: int = 2,
    max_len: int = 64,
    num_train: int = 2_000,
    test_lens: int | list[int] = (8, 16, 32, 64, 96, 128, 192, 256),
    num_test: int = 200,
    test_pad_to: int | None = None,
) -> TaskData:
    """The copying dataset (paper §C.3, CPU-scale defaults).

    Args:
        seed: base seed; train and each test length use independent streams of it.
        context_len: packed training context C (the paper: 420); rows are (num_train, C - 1).
        min_len, max_len: training string lengths U{min_len..max_len} (the paper: 2..64).
        num_train: packed training rows (the paper streams 5,000 steps x 256).
        test_lens: string lengths to test (the paper: every L in 2..511 = up to 8x max_len).
        num_test: rows per test length (the paper: 1,000).
        test_pad_to: optional minimum test-row width: test rows are right-padded with `*`
            (targets -100) to it, which changes nothing for a causal model.
    """
    check_int("num_train", num_train, 1)
    check_int("num_test", num_test, 1)
    test_list = sorted(set(check_int_list("test_lens", test_lens, 1)))
    train = copying_train(
        num_train, stream(seed, 0), context_len=context_len, min_len=min_len, max_len=max_len
    )
    tests = {
        L: copying_test(L, num_test, stream(seed, 1, L), pad_to=test_pad_to) for L in test_list
    }
    params = {
        "context_len": context_len,
        "min_len": min_len,
        "max_len": max_len,
        "num_train": num_train,
        "test_lens": test_list,
        "num_test": num_test,
        "test_pad_to": test_pad_to,
        "seed": seed,
    }
    return TaskData("copying", VOCAB_SIZE, train, tests, max_len, params)
