"""State tracking on finite groups (the group word problem), as a tagging task.

A word is a sequence of uniformly random element indices x1 .. xk; the label at position t is the
index of the running product x1 · x2 · ... · xt (left to right; `a · b` = apply a, then b; see
`selrope.tasks.groups`). There is no shift: the model outputs the state after reading x_t at
position t.

The model-facing dataset follows the paper (research notes §C.4): inputs `[BOS] x1 .. xk`, labels
`[e] y1 .. yk` where `e` = 0 is the identity index (the state before any element), so every row
has k + 1 positions and all of them carry a loss. Token ids: elements 0 .. |G|-1, BOS = |G|;
vocab_size = |G| + 1 (the paper's 7 special tokens are unused, so they are dropped).
"""

from __future__ import annotations

import re

import numpy as np
import torch
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
from selrope.tasks.groups import PermutationGroup, get_group, prefix_products

_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")


def state_tracking(
    group: str | PermutationGroup, length: int, num_examples: int, seed: Seed
) -> tuple[Tensor, Tensor]:
    """Random words over a group and their running products (no BOS, no shift).

    Args:
        group: a group or its name ("S3", "A5xZ2", ...).
        length: k, the number of elements per word.
        num_examples: N.
        seed: int / numpy Generator / torch Generator (the global RNG is never used).

    Returns:
        (inputs, targets), LongTensors (N, k): inputs[n, t] is x_{t+1}, targets[n, t] is the index
        of x_1 · ... · x_{t+1}.
    """
    group = get_group(group) if isinstance(group, str) else group
    check_int("length", length, 1)
    check_int("num_examples", num_examples, 0)
    words = to_long(as_rng(seed).integers(0, group.order, size=(num_examples, length)))
    return words, prefix_products(group, words)


def parse_lengths(name: str, value: object) -> list[int]:
    """Training lengths: an int, a list of ints, or a string "min..max" (inclusive range)."""
    if isinstance(value, str):
        match = _RANGE.match(value)
        if match is None:
            raise ValueError(f"{name} as a string must look like '16..64'; got {value!r}")
        low, high = int(match.group(1)), int(match.group(2))
        if not 1 <= low <= high:
            raise ValueError(f"{name} range must satisfy 1 <= min <= max; got {value!r}")
        return list(range(low, high + 1))
    return sorted(set(check_int_list(name, value, 1)))


def _with_bos(group: PermutationGroup, words: Tensor, states: Tensor) -> tuple[Tensor, Tensor]:
    """Prepend BOS (= |G|) to the inputs and the identity (= 0) to the labels."""
    n = words.shape[0]
    bos = torch.full((n, 1), group.order, dtype=torch.long)
    identity = torch.zeros((n, 1), dtype=torch.long)
    return torch.cat([bos, words], dim=1), torch.cat([identity, states], dim=1)


def _row_keys(words: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in np.ascontiguousarray(words, dtype=np.int64)}


def _draw_distinct(
    group: PermutationGroup,
    length: int,
    num: int,
    rng: np.random.Generator,
    exclude: set[bytes],
) -> np.ndarray:
    """`num` distinct words of `length`, none of them in `exclude` (by rejection)."""
    space = group.order**length
    if space - len(exclude) < num:
        raise ValueError(
            f"only {space - len(exclude)} words of length {length} over {group.name} are not in "
            f"the training set; cannot draw num_test={num} distinct test words"
        )
    kept: list[np.ndarray] = []
    seen = set(exclude)
    while sum(len(k) for k in kept) < num:
        batch = rng.integers(0, group.order, size=(max(num, 64), length))
        fresh = []
        for row in batch:
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                fresh.append(row)
        if fresh:
            kept.append(np.stack(fresh))
    return np.concatenate(kept)[:num]


def build_state_tracking(
    seed: int,
    *,
    group: str = "Z2",
    train_len: int | list[int] | str = 64,
    test_lens: int | list[int] = (64, 256),
    num_train: int = 10_000,
    num_test: int = 500,
) -> TaskData:
    """The model-facing state-tracking dataset with BOS (paper §C.4, CPU-scale defaults).

    Args:
        seed: base seed; train and each test length use independent streams of it.
        group: group name, e.g. "Z2" (parity), "S3", "A5", "A5xZ2".
        train_len: word length k of the training rows. An int (the paper: 128), a list of ints or
            a string "min..max"; with several lengths each row's k is drawn uniformly from them,
            rows are right-padded (inputs with the identity token 0, targets with -100) to the
            longest, so the train tensors are (num_train, max_k + 1).
        test_lens: word lengths of the test sets (the paper: 512); tests[k] is (num_test, k + 1).
        num_train: number of training rows.
        num_test: rows per test length.

    Test words are distinct and never equal a training word of the same length; a ValueError says
    so when the space |G|^k is too small for that.
    """
    g = get_group(group)
    train_lens = parse_lengths("train_len", train_len)
    test_list = sorted(set(check_int_list("test_lens", test_lens, 1)))
    check_int("num_train", num_train, 1)
    check_int("num_test", num_test, 1)

    rng = stream(seed, 0)
    max_len = train_lens[-1]
    lengths = rng.choice(np.asarray(train_lens), size=num_train)
    words = rng.integers(0, g.order, size=(num_train, max_len))
    positions = np.arange(max_len)[None, :]
    padding = positions >= lengths[:, None]
    words[padding] = 0
    train_words = to_long(words)
    states = prefix_products(g, train_words)
    states[torch.from_numpy(padding)] = IGNORE_INDEX
    train = _with_bos(g, train_words, states)

    tests = {}
    for k in test_list:
        exclude = _row_keys(words[lengths == k, :k]) if k in train_lens else set()
        test_words = to_long(_draw_distinct(g, k, num_test, stream(seed, 1, k), exclude))
        tests[k] = _with_bos(g, test_words, prefix_products(g, test_words))

    params = {
        "group": g.name,
        "train_len": train_len if isinstance(train_len, str) else list(train_lens),
        "test_lens": test_list,
        "num_train": num_train,
        "num_test": num_test,
        "seed": seed,
        "bos_token": g.order,
    }
    if isinstance(train_len, (int, np.integer)):
        params["train_len"] = int(train_len)
    return TaskData("state_tracking", g.order + 1, train, tests, max_len, params)
